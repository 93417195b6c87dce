//! Helpers for differencing chains on real files, and the libvhdi oracle.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdisk_core::{
    Access, CreateSpec, DiskImage, FormatDriver, HostFile, ImageKind, OpenOptions, StdFile,
};
use vdisk_vhd::{DRIVER, VhdImage};

/// Creates a dynamic VHD at `dir/name`.
pub fn create_base(dir: &Path, name: &str, size: u64, block_size: u64) -> PathBuf {
    let path = dir.join(name);
    let file = StdFile::create_new(&path).unwrap();
    DRIVER
        .create(
            Box::new(file),
            &CreateSpec::new(ImageKind::Dynamic, size).block_size(block_size),
        )
        .unwrap();
    path
}

/// Creates a differencing VHD at `dir/name` over `parent`.
pub fn create_child(dir: &Path, name: &str, parent: &Path) -> PathBuf {
    let path = dir.join(name);
    retry_in_use(|| {
        let file = StdFile::create_new(&path)?;
        let made = DRIVER.create(Box::new(file), &CreateSpec::differencing(parent, &path));
        if made.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        made
    })
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    path
}

/// Opens the image at `path` (its parents found through its locators).
///
/// Tests run in parallel threads, and a thread that spawns libvhdi forks: until the child
/// execs, it shares every open file (and its lock) of the test process. An `InUse` from that
/// window is retried a bounded number of times.
pub fn open_path(path: &Path, writable: bool) -> vdisk_core::Result<Box<dyn DiskImage>> {
    let (access, opts) = if writable {
        (Access::ReadWrite, OpenOptions::read_write())
    } else {
        (Access::ReadOnly, OpenOptions::read_only())
    };
    retry_in_use(|| StdFile::open(path, access).and_then(|f| DRIVER.open(Box::new(f), &opts)))
}

/// Runs `f` again (a bounded number of times) while it fails with `InUse` (see
/// [`open_path`] for why parallel tests see that).
pub fn retry_in_use<T>(mut f: impl FnMut() -> vdisk_core::Result<T>) -> vdisk_core::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind() == vdisk_core::ErrorKind::InUse && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Writes `data` at `offset` into the image at `path`.
pub fn write(path: &Path, offset: u64, data: &[u8]) {
    let img = open_path(path, true).unwrap();
    img.write_at(data, offset).unwrap();
    img.flush().unwrap();
}

/// Reads the whole virtual disk of the image at `path` through our reader.
pub fn ours(path: &Path) -> Vec<u8> {
    super::util::content(&*open_path(path, false).unwrap())
}

/// The file's bytes.
pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Reads the whole virtual disk of `chain[0]` with libvhdi, `chain[1..]` being its parents in
/// order. Fails (never skips) if libvhdi's Python binding is missing.
pub fn libvhdi(chain: &[&Path]) -> Vec<u8> {
    const SCRIPT: &str = "
import sys, pyvhdi
fs = []
for p in sys.argv[1:]:
    f = pyvhdi.file(); f.open(p); fs.append(f)
for i in reversed(range(len(fs) - 1)):
    fs[i].set_parent(fs[i + 1])
sys.stdout.buffer.write(fs[0].read_buffer_at_offset(fs[0].get_media_size(), 0))
";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(chain)
        .output()
        .expect("run /usr/bin/python3 (install python3-libvhdi)");
    assert!(
        out.status.success(),
        "libvhdi failed on {chain:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An in-memory copy of the chain at `paths` (child first): every member opened over a
/// `MemFile` copy with the next as its parent; the child writable.
pub fn in_memory(chain: &[Vec<u8>], child: Box<dyn HostFile>) -> vdisk_core::Result<VhdImage> {
    let mut parent: Option<VhdImage> = None;
    for b in chain.iter().rev() {
        let file = Box::new(vdisk_core::MemFile::from_bytes(b.clone()));
        parent = Some(match parent {
            None => VhdImage::open(file, false)?,
            Some(p) => VhdImage::open_with_parent(file, false, p)?,
        });
    }
    match parent {
        Some(p) => VhdImage::open_with_parent(child, true, p),
        None => VhdImage::open(child, true),
    }
}

/// Stores the dynamic header checksum after a test edited the header at 512.
pub fn reseal_header(bytes: &mut [u8]) {
    let h = &mut bytes[512..1536];
    h[36..40].fill(0);
    let sum = h.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    h[36..40].copy_from_slice(&(!sum).to_be_bytes());
}
