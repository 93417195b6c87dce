//! Shared helpers: fixtures, qemu, opening images.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdisk_core::{Access, DiskImage, FormatDriver, MemFile, OpenOptions, Result};

/// Folder of the real images made by other tools.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/real");

/// Decompresses fixture `name` (without `.bz2`) into `dir` and returns its path.
pub fn fixture(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(FIXTURES).join(format!("{name}.bz2"));
    let out = dir.join(name);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("bzcat '{}' > '{}'", src.display(), out.display()))
        .status()
        .expect("bzcat runs");
    assert!(status.success(), "bzcat {}", src.display());
    out
}

/// Opens `path` read-only through the driver.
pub fn open_path(path: &Path) -> Result<Box<dyn DiskImage>> {
    let file = vdisk_core::testing::open_std_file(path, Access::ReadOnly)?;
    vdisk_vhdx::DRIVER.open(Box::new(file), &OpenOptions::read_only())
}

/// Opens in-memory bytes read-only through the driver.
pub fn open_bytes(bytes: &[u8]) -> Result<Box<dyn DiskImage>> {
    let file = MemFile::from_bytes(bytes.to_vec()).read_only();
    vdisk_vhdx::DRIVER.open(Box::new(file), &OpenOptions::read_only())
}

/// Reads `len` bytes at `offset` of the virtual disk.
pub fn read(image: &dyn DiskImage, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    image.read_at(&mut buf, offset).expect("read");
    buf
}

/// Converts the VHDX `image` to a raw file at `raw` with `qemu-img convert`.
pub fn qemu_convert_raw(image: &str, raw: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            image,
            raw.to_str().unwrap(),
        ],
    );
}

/// Creates a VHDX at `path` with `qemu-img create -f vhdx -o OPTS PATH SIZE`.
pub fn qemu_create(path: &str, opts: &str, size: &str) {
    run(
        "qemu-img",
        &["create", "-q", "-f", "vhdx", "-o", opts, path, size],
    );
}

/// Runs a command and asserts it succeeded; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole virtual disk compared with a raw file, in 4 MiB pieces.
pub fn assert_same_as_raw(image: &dyn DiskImage, raw: &Path) {
    let data = std::fs::read(raw).expect("raw image");
    assert_eq!(image.size(), data.len() as u64, "virtual size");
    let chunk = 4 << 20;
    for (i, want) in data.chunks(chunk).enumerate() {
        let got = read(image, (i * chunk) as u64, want.len());
        if got != want {
            let pos = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "byte {:#x} differs: vdisk {:#04x}, qemu {:#04x}",
                i * chunk + pos,
                got[pos],
                want[pos]
            );
        }
    }
}

/// Region GUID of the BAT.
pub const BAT_REGION: u128 = 0x2DC27766_F623_4200_9D64_115E9BFD4A08;
/// Region GUID of the metadata.
pub const METADATA_REGION: u128 = 0x8B7CA206_4790_4B9A_B8FE_575F050F886E;

/// Host offset of region `id` in the first region table.
pub fn region_offset(bytes: &[u8], id: u128) -> u64 {
    let rt = 0x30000;
    let count = u32::from_le_bytes(bytes[rt + 8..rt + 12].try_into().unwrap()) as usize;
    let want = uuid::Uuid::from_u128(id).to_bytes_le();
    (0..count)
        .map(|i| rt + 16 + 32 * i)
        .find(|&e| bytes[e..e + 16] == want)
        .map(|e| u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()))
        .expect("region present")
}

/// Recomputes the CRC-32C at `at + 4` over `len` bytes starting at `at`.
pub fn fix_crc(bytes: &mut [u8], at: usize, len: usize) {
    bytes[at + 4..at + 8].fill(0);
    let crc = crc32c::crc32c(&bytes[at..at + len]);
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Writes the virtual disk of `image` as libvhdi (the system python's pyvhdi) reads it.
pub fn libvhdi_raw(image: &Path, out: &Path) {
    let script = "import pyvhdi,sys\n\
        f=pyvhdi.file(); f.open(sys.argv[1]); n=f.get_media_size(); o=open(sys.argv[2],'wb')\n\
        while f.get_offset() < n: o.write(f.read(min(4<<20, n-f.get_offset())))\n";
    run(
        "/usr/bin/python3",
        &["-c", script, image.to_str().unwrap(), out.to_str().unwrap()],
    );
}

/// Opens any host file writable through the driver.
pub fn open_rw(file: impl vdisk_core::HostFile + 'static) -> Result<Box<dyn DiskImage>> {
    vdisk_vhdx::DRIVER.open(Box::new(file), &OpenOptions::read_write())
}

/// Plans and applies a compaction.
pub fn compact(
    image: &mut dyn DiskImage,
    mode: vdisk_core::Mode,
) -> Result<vdisk_core::CompactReport> {
    compact_fs(image, mode, None)
}

/// Plans and applies a compaction, with `fs_free` as the file system's free space.
pub fn compact_fs(
    image: &mut dyn DiskImage,
    mode: vdisk_core::Mode,
    fs_free: Option<&[std::ops::Range<u64>]>,
) -> Result<vdisk_core::CompactReport> {
    use vdisk_core::{CancelToken, CompactOptions, Compactor, GenericCompactor, NoProgress};
    let c = GenericCompactor;
    let mut opts = CompactOptions::new(mode);
    opts.fs_free = fs_free.map(<[_]>::to_vec);
    let plan = c.plan(image, &opts, &NoProgress, &CancelToken::new())?;
    c.apply(image, &plan, &NoProgress, &CancelToken::new())
}

/// The whole virtual disk.
pub fn content(image: &dyn DiskImage) -> Vec<u8> {
    read(image, 0, image.size() as usize)
}

/// Error-level problems `vdisk check` finds in `bytes`.
pub fn check_errors(bytes: Vec<u8>) -> Vec<String> {
    vdisk_core::testing::check_errors(&vdisk_vhdx::DRIVER, bytes)
}

/// The "log" line of `vdisk info`.
pub fn log_detail(image: &dyn DiskImage) -> String {
    image
        .details()
        .into_iter()
        .find(|(k, _)| k == "log")
        .map(|(_, v)| v)
        .unwrap_or_default()
}
