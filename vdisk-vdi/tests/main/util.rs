//! Helpers shared by the test modules.

use std::path::Path;
use std::process::Command;

pub use vdisk_core::testing::compact as compact_fs;
use vdisk_core::testing::{check_errors, create_in_memory, open_bytes, run_tool, whole_disk};
use vdisk_core::{CompactReport, DiskImage, FormatDriver, ImageKind, MemFile, Mode, Problem};
use vdisk_vdi::DRIVER;

/// Runs a qemu-utils tool and returns its stdout; panics with its output if it fails (a
/// missing tool fails the test, never skips it).
pub fn tool(program: &str, args: &[&str]) -> String {
    run_tool(program, "qemu-utils", args)
}

/// `qemu-img create -f vdi` (with `static=on` for a fixed image) of `size` bytes.
pub fn qemu_create(path: &Path, size: &str, fixed: bool) {
    let p = path.to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", "vdi"];
    if fixed {
        args.extend(["-o", "static=on"]);
    }
    args.extend([p, size]);
    tool("qemu-img", &args);
}

/// Runs each of `commands` (qemu-io syntax: `write -P 7 1M 64k`) on the VDI at `path`.
pub fn qemu_io(path: &Path, commands: &[String]) {
    let mut args = vec!["-f".to_string(), "vdi".to_string()];
    for c in commands {
        args.push("-c".into());
        args.push(c.clone());
    }
    args.push(path.to_str().unwrap().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("qemu-io", &refs);
}

/// `qemu-img check` passes on the VDI at `path` (qemu's own check of the block map and of
/// the header's allocated count).
pub fn assert_qemu_check(path: &Path) {
    vdisk_core::testing::tool_succeeds(
        Command::new("qemu-img")
            .args(["check", "-f", "vdi"])
            .arg(path),
        "qemu-utils",
    );
}

/// `qemu-img compare` finds `a` and `b` identical (both read by qemu as VDI or raw).
pub fn assert_qemu_identical(a: &Path, a_fmt: &str, b: &Path, b_fmt: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", a_fmt, "-F", b_fmt])
        .arg(a)
        .arg(b)
        .output()
        .expect("qemu-img is needed for this test");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens `bytes` as a VDI.
pub fn open(bytes: Vec<u8>, writable: bool) -> vdisk_core::Result<Box<dyn DiskImage>> {
    open_bytes(&DRIVER, bytes, writable)
}

/// Creates an image of `kind` in memory; returns the image and a handle to its bytes.
pub fn create(kind: ImageKind, size: u64, block_size: u64) -> (Box<dyn DiskImage>, MemFile) {
    create_in_memory(&DRIVER, kind, size, block_size)
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
pub fn check(bytes: Vec<u8>) -> Vec<Problem> {
    DRIVER
        .check(Box::new(MemFile::from_bytes(bytes)))
        .expect("check runs")
        .problems
}

/// Error-level problems `check` reports for `bytes`.
pub fn errors(bytes: Vec<u8>) -> Vec<String> {
    check_errors(&DRIVER, bytes)
}
