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
use std::path::Path;
use std::process::{Command, Stdio};

pub use vdisk_core::testing::noise;

use super::{qemu_img, require};

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
