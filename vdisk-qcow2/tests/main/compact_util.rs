//! Helpers of the compaction tests: images qemu makes, compacted by vdisk, judged by qemu.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdisk_core::testing::tool_output;
use vdisk_core::{CompactReport, Mode, OpenOptions};

use super::util::{qemu_create, qemu_io, registry, s, tool};

/// Creates `name` in `dir` with `qemu-img create -o opts` of `size` and runs `cmds` on it.
pub fn made(dir: &Path, name: &str, opts: &str, size: &str, cmds: &[String]) -> PathBuf {
    let path = dir.join(name);
    qemu_create(&path, opts, size);
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        qemu_io(&path, "qcow2", &refs);
    }
    path
}

/// qemu-io commands, cluster `c` of `cs` bytes named by index: data, zeros written as data,
/// a zero cluster (`write -z`), a discard, data high up so that compaction must move it.
pub fn pattern(cs: u64) -> Vec<String> {
    let at = |c: u64| c * cs;
    vec![
        format!("write -P 0x11 {} {cs}", at(0)),
        format!("write -P 0 {} {cs}", at(1)),
        format!("write -P 0x22 {} {}", at(2), 3 * cs),
        format!("discard {} {cs}", at(3)),
        format!("write -P 0x33 {} {cs}", at(6)),
        format!("write -z {} {cs}", at(6)),
        format!("write -P 0 {} {cs}", at(8)),
        format!("write -P 0x44 {} 512", at(9) + 512),
        format!("write -P 0x55 {} {cs}", at(12)),
        format!("write -P 0x66 {} {}", at(14), 2 * cs),
        format!("discard {} {cs}", at(14)),
        format!("write -P 0x77 {} {cs}", at(30)),
    ]
}

/// Compacts the image at `path` in `mode` through vdisk (backing chain opened read-only).
pub fn compact_path(path: &Path, mode: Mode) -> vdisk_core::Result<CompactReport> {
    let mut image = registry().open_path(path, &OpenOptions::read_write())?;
    vdisk_core::testing::compact(&mut *image, mode, None)
}

/// `qemu-img check`'s counts of (corruptions, leaks) for the image at `path`.
pub fn qemu_check_counts(path: &Path) -> (u64, u64) {
    let out = tool_output(
        Command::new("qemu-img").args(["check", "--output=json", "-f", "qcow2", s(path)]),
        "qemu-utils",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "qemu-img check {}: {e}: {text}{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let errors = n("corruptions") + n("check-errors");
    (errors, n("leaks"))
}

/// `qemu-img check` reports no errors and no leaks.
pub fn assert_qemu_clean(path: &Path, what: &str) {
    let (errors, leaks) = qemu_check_counts(path);
    assert_eq!(
        (errors, leaks),
        (0, 0),
        "{what}: qemu-img check: {}",
        tool_output(
            Command::new("qemu-img").args(["check", "-f", "qcow2", s(path)]),
            "qemu-utils"
        )
        .stdout
        .escape_ascii()
    );
}

/// `qemu-img compare` finds the two images identical.
pub fn assert_identical(a: &Path, b: &Path, what: &str) {
    let out = tool_output(
        Command::new("qemu-img").args(["compare", "-f", "qcow2", "-F", "qcow2", s(a), s(b)]),
        "qemu-utils",
    );
    assert!(
        out.status.success(),
        "{what}: qemu-img compare: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `from` to `name` beside it.
pub fn copy_as(from: &Path, name: &str) -> PathBuf {
    let to = from.with_file_name(name);
    std::fs::copy(from, &to).unwrap();
    to
}

/// The file's length.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// `qemu-img convert -c` of `src` into a new compressed image `name` with `opts`.
pub fn compressed_copy(src: &Path, name: &str, opts: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    tool(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", "-o", opts, s(src), s(&dst)],
    );
    dst
}

/// The raw guest content of internal snapshot `snap` of the image at `path`, as qemu reads it.
pub fn snapshot_raw(path: &Path, snap: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("snap.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-l",
            &format!("snapshot.name={snap}"),
            "-O",
            "raw",
            s(path),
            s(&raw),
        ],
    );
    std::fs::read(&raw).unwrap()
}

/// A 2 GiB image of 4 KiB clusters whose metadata qemu left above clusters compaction frees:
/// 32 data clusters, the first 16 of them written with zeros, a cluster at 1 GiB (a second L2
/// table), the refcount table and its block rewritten at the end by `qemu-img amend` (16 to
/// 64-bit refcounts). `l1_high`: the L1 table grew (`qemu-img resize`) after the data was
/// written, so it lies above it; otherwise it grew first and the second L2 table lies at the
/// end instead.
pub fn metadata_high(dir: &Path, name: &str, l1_high: bool) -> PathBuf {
    let path = dir.join(name);
    qemu_create(&path, "cluster_size=4096,refcount_bits=16", "128k");
    let grow = || tool("qemu-img", &["resize", "-q", s(&path), "2G"]);
    if !l1_high {
        grow();
    }
    qemu_io(&path, "qcow2", &["write -P 7 0 128k"]);
    if l1_high {
        grow();
    }
    qemu_io(&path, "qcow2", &["write -P 5 1G 4k", "write -P 0 0 64k"]);
    tool("qemu-img", &["amend", "-o", "refcount_bits=64", s(&path)]);
    path
}

/// Reads a big-endian u64 at `offset` of the file at `path`.
pub fn be64_at(path: &Path, offset: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let at = offset as usize;
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Where the image's structures lie: (L1 table, refcount table, first refcount block, the
/// L2 table of the cluster at 1 GiB).
pub fn structures(path: &Path) -> (u64, u64, u64, u64) {
    let l1 = be64_at(path, 40);
    let reftable = be64_at(path, 48);
    let mask = 0x00ff_ffff_ffff_fe00;
    (
        l1,
        reftable,
        be64_at(path, reftable),
        be64_at(path, l1 + 512 * 8) & mask,
    )
}
