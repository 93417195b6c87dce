//! Helpers shared by the test modules.

use std::path::Path;
use std::process::Command;

pub use vdisk_core::testing::compact as compact_fs;
use vdisk_core::testing::{create_in_memory, open_bytes, whole_disk};
use vdisk_core::{
    CompactReport, DiskImage, FormatDriver, HostFile, ImageKind, MemFile, Mode, OpenOptions,
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
    open_bytes(&DRIVER, bytes, writable)
}

/// Opens any host file writable.
pub fn open_file(file: impl HostFile + 'static) -> vdisk_core::Result<Box<dyn DiskImage>> {
    DRIVER.open(Box::new(file), &OpenOptions::read_write())
}

/// Creates a dynamic image in memory; returns the image and a handle to its bytes.
pub fn create_dynamic(size: u64, block_size: u64) -> (Box<dyn DiskImage>, MemFile) {
    create_in_memory(&DRIVER, ImageKind::Dynamic, size, block_size)
}

/// The whole virtual content.
pub fn content(img: &dyn DiskImage) -> Vec<u8> {
    whole_disk(img)
}

/// Plans and applies a compaction.
pub fn compact(img: &mut dyn DiskImage, mode: Mode) -> vdisk_core::Result<CompactReport> {
    compact_fs(img, mode, None)
}

/// Problems `check` reports for `bytes`.
pub fn check(bytes: Vec<u8>) -> Vec<vdisk_core::Problem> {
    DRIVER
        .check(Box::new(MemFile::from_bytes(bytes)))
        .expect("check runs")
        .problems
}
