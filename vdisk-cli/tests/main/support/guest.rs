//! Helpers shared by the guest-disk builders ([`super::ntfs`], [`super::guest_ext4`] and the
//! other `guest_*` modules, the XFS test): random
//! bytes (vdisk-core's), running a file-system tool, converting a raw disk to an image with every block
//! allocated, reading a compacted image back as a raw disk, and checking that only the file
//! system's free space changed.
//!
//! Tools (a missing one fails the test): `qemu-utils` (qemu-img) and whatever `tool` runs.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::ffi::OsStr;
use std::fs;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

pub use vdisk_core::testing::noise;

use super::{compact_ok, num, qemu_img, require};

/// Runs a tool of `package`, feeding `stdin`; returns stdout; panics with its output on failure.
#[track_caller]
pub fn tool(program: &str, package: &str, args: &[&OsStr], stdin: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new(require(program, package));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("feeding stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for the tool");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `qemu-img convert -S 0 -f raw -O FORMAT -o OPTIONS raw image`: every block is written,
/// zeros too, so every block of the image is allocated.
pub fn convert_allocated(raw: &Path, format: &str, options: &str, image: &Path) {
    qemu_img([
        os("convert"),
        os("-S"),
        os("0"),
        os("-f"),
        os("raw"),
        os("-O"),
        os(format),
        os("-o"),
        os(options),
        raw.as_os_str(),
        image.as_os_str(),
    ])
    .ok();
}

/// After compaction: `qemu-img check` accepts `image` (or says the format has no checks), and
/// the raw disk qemu reads from it (through `scratch`, removed after) is returned cut to
/// `len` bytes; the virtual size did not shrink and qemu's padding past `len` (a VHD's size is
/// rounded to its CHS geometry) reads zeros.
#[track_caller]
pub fn read_back(image: &Path, format: &str, scratch: &Path, len: usize) -> Vec<u8> {
    let check = qemu_img([os("check"), os("-f"), os(format), image.as_os_str()]);
    let all = format!("{}{}", check.stdout, check.stderr);
    assert!(
        check.code == 0 || (check.code == 63 && all.contains("does not support checks")),
        "qemu-img check -f {format} failed ({}):\n{all}",
        check.code
    );
    let _ = fs::remove_file(scratch);
    qemu_img([
        os("convert"),
        os("-f"),
        os(format),
        os("-O"),
        os("raw"),
        image.as_os_str(),
        scratch.as_os_str(),
    ])
    .ok();
    let mut now = fs::read(scratch).unwrap();
    assert!(now.len() >= len, "virtual size shrank");
    assert!(
        now[len..].iter().all(|&b| b == 0),
        "padding past the disk is not zero"
    );
    now.truncate(len);
    fs::remove_file(scratch).unwrap();
    now
}

/// Every byte of `now` outside `free` (sorted, disjoint; the free space as the file system's
/// own tools list it) equals `before`.
#[track_caller]
pub fn assert_kept_outside(before: &[u8], now: &[u8], free: &[Range<u64>], what: &str) {
    assert_eq!(before.len(), now.len(), "{what}: length");
    let mut i = 0usize;
    while i < now.len() {
        if now[i] == before[i] {
            i += 1;
            continue;
        }
        let at = i as u64;
        let k = free.partition_point(|r| r.end <= at);
        let inside = free.get(k).is_some_and(|r| r.start <= at);
        assert!(
            inside,
            "{what}: byte {at:#x} changed outside the free space"
        );
        // Skip to the end of this free range (any content is allowed there).
        i = free[k].end as usize;
    }
}

/// After compaction of `image` (`format`: `vpc`, `vhdx`): qemu checks it and reads it back
/// (see [`read_back`]; `scratch` is a path for its raw copy), and every byte of what it reads
/// outside `free` equals `before`, the raw disk it was made from (see [`assert_kept_outside`]).
/// Returns the disk as it reads now, for the file system's own checker and readers.
#[track_caller]
pub fn read_back_kept_outside(
    image: &Path,
    format: &str,
    scratch: &Path,
    before: &[u8],
    free: &[Range<u64>],
    what: &str,
) -> Vec<u8> {
    let now = read_back(image, format, scratch, before.len());
    assert_kept_outside(before, &now, free, what);
    now
}

/// Compacts `image` in `mode` (`vdisk compact --json`) and checks what every file-system-aware
/// end-to-end test checks against `ceiling(block_size)`, the bytes of image blocks wholly in
/// the file system's free space as its own tools say: it is not empty; the bytes reclaimed by
/// file-system knowledge are at least 97% of it and no more; the host file gave back at least
/// 97% of it (it shrank to the report's `bytes_after`, or for `retrim` kept its length and
/// lost that much storage); `quick` scanned no block for zeros. Prints the numbers under
/// `what`; returns the report and the bytes reclaimed by file-system knowledge.
#[track_caller]
pub fn compact_to_ceiling(
    image: &Path,
    mode: &str,
    what: &str,
    ceiling: impl Fn(u64) -> u64,
) -> (Value, u64) {
    let before = fs::metadata(image).unwrap();
    let r = compact_ok(image, mode, &[]);
    let after = fs::metadata(image).unwrap();
    let block = num(&r, "block_size");
    let ceiling = ceiling(block);
    let fs_bytes = num(&r, "bytes_reclaimed_fs");
    let gone = if mode == "retrim" {
        assert_eq!(
            after.len(),
            before.len(),
            "{what}: retrim keeps the length: {r}"
        );
        (before.blocks() - after.blocks()) * 512
    } else {
        assert_eq!(after.len(), num(&r, "bytes_after"), "{what}: {r}");
        before.len() - after.len()
    };
    eprintln!(
        "{what} {mode}: ceiling {} KiB in whole {} KiB blocks, reclaimed by the file system's \
         map {} KiB, host file gave back {} KiB",
        ceiling >> 10,
        block >> 10,
        fs_bytes >> 10,
        gone >> 10
    );
    assert!(ceiling > 0, "{what}: no whole free block of {block} bytes");
    assert!(
        fs_bytes * 100 >= ceiling * 97 && fs_bytes <= ceiling,
        "{what} {mode}: reclaimed {fs_bytes} bytes by the file system's map; its free space \
         holds {ceiling} bytes of whole {block}-byte blocks: {r}"
    );
    assert!(
        gone * 100 >= ceiling * 97,
        "{what} {mode}: the host file gave back {gone} bytes, want 97% of {ceiling}: {r}"
    );
    if mode == "quick" {
        assert_eq!(num(&r, "blocks_reclaimed_zero"), 0, "{what}: {r}");
    }
    (r, fs_bytes)
}

/// Bytes of the `block`-sized blocks that lie wholly in `free`.
pub fn whole_blocks_in(free: &[Range<u64>], block: u64) -> u64 {
    free.iter()
        .map(|r| {
            let first = r.start.next_multiple_of(block);
            let last = r.end / block * block;
            last.saturating_sub(first)
        })
        .sum()
}
