//! Shared helpers: NTFS volumes built by ntfs-3g in temp files, a device that fails reads.
//!
//! Every helper that runs an external tool panics when the tool is missing or fails: tests
//! fail, never skip.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use vdisk_core::fs::FileDevice;
pub use vdisk_core::testing::noise as pseudo_random;
use vdisk_core::{BlockDevice, Error, ErrorKind, FsAnalyzer, FsUsage, FsVerdict, Result};

/// A device that fails every read at or past `fail_from`.
#[derive(Debug)]
pub struct FailingDevice {
    pub inner: FileDevice,
    pub fail_from: u64,
}

impl BlockDevice for FailingDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset + buf.len() as u64 > self.fail_from {
            return Err(Error::new(ErrorKind::Io, "injected read failure").with_offset(offset));
        }
        self.inner.read_at(buf, offset)
    }
}

/// Runs `program` with `args`; panics with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = try_run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `program` with `args`; panics only if it cannot be started (missing tool).
pub fn try_run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install ntfs-3g): {e}"))
}

/// A file of `size` bytes of garbage formatted by `mkntfs -Q` (quick: the garbage stays in
/// free clusters) with `cluster` bytes per cluster and 512-byte sectors.
pub fn make_volume(dir: &Path, name: &str, size: usize, cluster: u64) -> PathBuf {
    make_volume_with_sectors(dir, name, size, cluster, 512)
}

/// Like [`make_volume`] with `sector` bytes per sector.
pub fn make_volume_with_sectors(
    dir: &Path,
    name: &str,
    size: usize,
    cluster: u64,
    sector: u64,
) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pseudo_random(size, cluster ^ size as u64)).unwrap();
    let c = cluster.to_string();
    let p = path.to_str().unwrap();
    run(
        "mkntfs",
        &[
            "-Q",
            "-F",
            "-q",
            "-c",
            &c,
            "-s",
            &sector.to_string(),
            "-L",
            "VDISKTEST",
            p,
        ],
    );
    path
}

/// Copies `data` into the volume's root as `name` with ntfscp.
pub fn copy_in(volume: &Path, name: &str, data: &[u8]) {
    let src = volume.with_extension(format!("src-{name}"));
    std::fs::write(&src, data).unwrap();
    run(
        "ntfscp",
        &["-q", volume.to_str().unwrap(), src.to_str().unwrap(), name],
    );
    std::fs::remove_file(src).unwrap();
}

/// Reads a file back with ntfscat.
pub fn cat(volume: &Path, name: &str) -> Vec<u8> {
    run("ntfscat", &[volume.to_str().unwrap(), name]).stdout
}

/// Analyses the volume in `path`.
pub fn analyze(path: &Path) -> FsVerdict {
    vdisk_ntfs::ANALYZER
        .analyze(&FileDevice::open(path).unwrap())
        .unwrap()
}

/// Analyses and expects a trusted volume.
pub fn usage(path: &Path) -> FsUsage {
    match analyze(path) {
        FsVerdict::Analysed(u) => u,
        other => panic!("expected an analysed volume, got {other:?}"),
    }
}

/// Analyses and expects an untrusted volume; returns the reason.
pub fn untrusted_reason(path: &Path) -> String {
    match analyze(path) {
        FsVerdict::Untrusted { fs: "ntfs", reason } => reason,
        other => panic!("expected an untrusted volume, got {other:?}"),
    }
}

/// A value of `FsUsage::details`.
pub fn detail<'a>(usage: &'a FsUsage, key: &str) -> &'a str {
    usage
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no detail {key:?} in {:?}", usage.details))
}

/// "clusters of free space" as `ntfscluster --info` reports it.
pub fn ntfs3g_free_clusters(volume: &Path) -> u64 {
    let out = run("ntfscluster", &["--info", volume.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("clusters of free space"))
        .and_then(|rest| rest.trim().trim_start_matches(':').trim().parse().ok())
        .unwrap_or_else(|| panic!("no free cluster count in ntfscluster output:\n{text}"))
}

/// Writes `data` at `offset` of the file at `path`.
pub fn patch(path: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// Reads `len` bytes at `offset` of the file at `path`.
pub fn peek(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}
