//! Helpers shared by the test modules.

use std::path::Path;
use std::process::Command;

use vdisk_core::testing::{run_tool, whole_disk};
use vdisk_core::{DiskImage, FormatDriver, OpenOptions, Problem, Registry, StdFile};

/// Runs a qemu-utils tool and returns its stdout; panics with its output if it fails (a
/// missing tool fails the test, never skips it).
pub fn tool(program: &str, args: &[&str]) -> String {
    run_tool(program, "qemu-utils", args)
}

/// `p` as a `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img create -f qcow2 -o <opts> path size`.
pub fn qemu_create(path: &Path, opts: &str, size: &str) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(path), size]);
    tool("qemu-img", &args);
}

/// Runs each of `commands` (qemu-io syntax: `write -P 7 1M 64k`) on the image at `path`,
/// opened as `format`.
pub fn qemu_io(path: &Path, format: &str, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    args.push(s(path));
    tool("qemu-io", &args);
}

/// The guest content as qemu reads it (`qemu-img convert -O raw`), backing chain included.
pub fn qemu_raw(path: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("out.raw");
    tool("qemu-img", &["convert", "-O", "raw", s(path), s(&raw)]);
    std::fs::read(&raw).unwrap()
}

/// The registry the tests open with: qcow2, and the formats a backing file may be in.
pub fn registry() -> Registry {
    Registry::new(&[
        &vdisk_qcow2::DRIVER,
        &vdisk_vdi::DRIVER,
        &vdisk_vhdx::DRIVER,
    ])
}

/// Opens the image at `path` read-only, backing chain included.
pub fn open(path: &Path) -> vdisk_core::Result<Box<dyn DiskImage>> {
    registry().open_path(path, &OpenOptions::read_only())
}

/// The whole guest content read through vdisk.
pub fn content(path: &Path) -> Vec<u8> {
    whole_disk(&*open(path).unwrap())
}

/// Asserts vdisk reads exactly what qemu reads, naming the first differing byte.
pub fn assert_reads_like_qemu(path: &Path) {
    let ours = content(path);
    let theirs = qemu_raw(path);
    assert_eq!(ours.len(), theirs.len(), "{}: sizes differ", path.display());
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!(
            "{}: byte {i:#x} reads {:#04x} through vdisk but {:#04x} through qemu",
            path.display(),
            ours[i],
            theirs[i]
        );
    }
}

/// Every problem `vdisk check` finds in the image at `path`.
pub fn check(path: &Path) -> Vec<Problem> {
    let file = StdFile::open(path, vdisk_core::Access::ReadOnly).unwrap();
    let opts = OpenOptions::read_only().with_registry(registry());
    let mut opts = opts;
    opts.chain = vdisk_core::ChainContext::root(path);
    vdisk_qcow2::DRIVER
        .check_with(Box::new(file), &opts)
        .unwrap()
        .problems
}

/// `qemu-img check` reports no errors and no leaks on the image at `path`.
pub fn assert_qemu_check(path: &Path) {
    vdisk_core::testing::tool_succeeds(
        Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(path),
        "qemu-utils",
    );
}

/// Overwrites `bytes` at `offset` of the file at `path`.
pub fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Reads a big-endian u64 at `offset` of the file at `path`.
pub fn peek64(path: &Path, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// The qemu-io commands that fill a test image: patterns at cluster-straddling offsets, a
/// zeroed range and a discarded one.
pub const FILL: &[&str] = &[
    "write -P 0x11 0 4k",
    "write -P 0x22 60k 72k",
    "write -P 0x33 1M 1M",
    "write -P 0x44 3M 3k",
    "write -z 1536k 64k",
    "write -P 0x55 5M 2M",
    "discard 5M 64k",
    "write -P 0x66 7M 1",
];
