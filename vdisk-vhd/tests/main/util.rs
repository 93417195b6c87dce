//! Helpers shared by the test modules.

use std::path::Path;
use std::process::Command;

use vdisk_core::{
    CancelToken, CompactOptions, CompactReport, Compactor, CreateSpec, DiskImage, FormatDriver,
    GenericCompactor, HostFile, ImageKind, MemFile, Mode, NoProgress, OpenOptions,
};
use vdisk_vhd::DRIVER;

/// Decompresses a fixture from the shared fixture directory.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/real")
        .join(format!("{name}.bz2"));
    let out = Command::new("bzcat")
        .arg(&path)
        .output()
        .expect("run bzcat");
    assert!(out.status.success(), "bzcat {}", path.display());
    out.stdout
}

/// Opens `bytes` as a VHD.
pub fn open(bytes: Vec<u8>, writable: bool) -> vdisk_core::Result<Box<dyn DiskImage>> {
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    DRIVER.open(Box::new(MemFile::from_bytes(bytes)), &opts)
}

/// Opens any host file writable.
pub fn open_file(file: impl HostFile + 'static) -> vdisk_core::Result<Box<dyn DiskImage>> {
    DRIVER.open(Box::new(file), &OpenOptions::read_write())
}

/// Creates a dynamic image in memory; returns the image and a handle to its bytes.
pub fn create_dynamic(size: u64, block_size: u64) -> (Box<dyn DiskImage>, MemFile) {
    let mem = MemFile::new();
    let img = DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Dynamic, size).block_size(block_size),
        )
        .expect("create");
    (img, mem)
}

/// The whole virtual content.
pub fn content(img: &dyn DiskImage) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(img.size()).unwrap()];
    img.read_at(&mut buf, 0).expect("read all");
    buf
}

/// Plans and applies a compaction.
pub fn compact(img: &mut dyn DiskImage, mode: Mode) -> vdisk_core::Result<CompactReport> {
    compact_fs(img, mode, None)
}

/// Plans and applies a compaction, with `fs_free` as the file system's free space.
pub fn compact_fs(
    img: &mut dyn DiskImage,
    mode: Mode,
    fs_free: Option<&[std::ops::Range<u64>]>,
) -> vdisk_core::Result<CompactReport> {
    let c = GenericCompactor;
    let mut opts = CompactOptions::new(mode);
    opts.fs_free = fs_free.map(<[_]>::to_vec);
    let plan = c.plan(img, &opts, &NoProgress, &CancelToken::new())?;
    c.apply(img, &plan, &NoProgress, &CancelToken::new())
}

/// Problems `check` reports for `bytes`.
pub fn check(bytes: Vec<u8>) -> Vec<vdisk_core::Problem> {
    DRIVER
        .check(Box::new(MemFile::from_bytes(bytes)))
        .expect("check runs")
        .problems
}
