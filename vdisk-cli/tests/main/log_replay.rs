//! A VHDX log replay is a change (issue 12, class 5): a writable open writes nothing, so a
//! refused compaction leaves an image with a pending log byte-identical; when the log is
//! replayed, vdisk says so; a log cannot ask for more file than the image can plausibly need,
//! and a replay that grows the file does it with `set_len`, not by writing zeros.
//!
//! Pending logs are made here by an independent writer (MS-VHDX 2.3) on qemu-made images; qemu
//! (`qemu-img check -r all` replays a log) is the oracle for the replayed content.
#![allow(
    clippy::cast_possible_truncation,
    reason = "on-disk fields of small test images; tests run on 64-bit hosts"
)]

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::interrupt::for_qemu;
use super::support::{
    EXIT_INVALID, EXIT_UNSUPPORTED, Out, Snapshot, assert_qemu_checked_same, file_len, fixture,
    qemu_create_vhdx, require, run, tempdir, vdisk, vdisk_cmd,
};

const MIB: u64 = 1 << 20;
const SECTOR: usize = 4096;
const HEADERS: [usize; 2] = [0x10000, 0x20000];
const BAT_REGION: u128 = 0x2DC27766_F623_4200_9D64_115E9BFD4A08;

/// One log descriptor.
enum Desc {
    /// Zero `len` bytes at the offset.
    Zero(u64, u64),
    /// Write this page at the offset.
    Page(u64, Vec<u8>),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// CRC-32C of `b[at..at + len]` with its checksum field (at + 4) zeroed, stored there.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let crc = crc32c::crc32c(&b[at..at + len]);
    put(b, at + 4, &crc.to_le_bytes());
}

/// Host offset of the BAT (first region table).
fn bat_offset(b: &[u8]) -> u64 {
    let rt = 0x30000;
    let want = uuid_le(BAT_REGION);
    (0..u32_at(b, rt + 8) as usize)
        .map(|i| rt + 16 + 32 * i)
        .find(|&e| b[e..e + 16] == want)
        .map(|e| u64_at(b, e + 16))
        .expect("bat region")
}

/// A GUID's on-disk (mixed-endian) bytes.
fn uuid_le(v: u128) -> [u8; 16] {
    let b = v.to_be_bytes();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    out
}

/// Writes a one-entry log (sequence 1) holding `descs` at the start of the image's log and
/// sets the LogGuid in both headers: the image now has a pending log.
fn add_pending_log(file: &Path, descs: &[Desc], flushed: u64, last: u64) {
    let mut b = std::fs::read(file).unwrap();
    let guid = [0x5a_u8; 16];
    let seq = 1_u64;
    let pages: Vec<&Vec<u8>> = descs
        .iter()
        .filter_map(|d| match d {
            Desc::Page(_, p) => Some(p),
            Desc::Zero(..) => None,
        })
        .collect();
    let desc_len = (64 + 32 * descs.len()).div_ceil(SECTOR) * SECTOR;
    let length = desc_len + pages.len() * SECTOR;
    let mut e = vec![0u8; length];
    put(&mut e, 0, b"loge");
    put(&mut e, 8, &(length as u32).to_le_bytes());
    put(&mut e, 16, &seq.to_le_bytes());
    put(&mut e, 24, &(descs.len() as u32).to_le_bytes());
    put(&mut e, 32, &guid);
    put(&mut e, 48, &flushed.to_le_bytes());
    put(&mut e, 56, &last.to_le_bytes());
    let mut data = desc_len;
    for (i, d) in descs.iter().enumerate() {
        let at = 64 + 32 * i;
        match d {
            Desc::Zero(off, len) => {
                put(&mut e, at, b"zero");
                put(&mut e, at + 8, &len.to_le_bytes());
                put(&mut e, at + 16, &off.to_le_bytes());
            }
            Desc::Page(off, page) => {
                put(&mut e, at, b"desc");
                put(&mut e, at + 4, &page[SECTOR - 4..]);
                put(&mut e, at + 8, &page[..8]);
                put(&mut e, at + 16, &off.to_le_bytes());
                put(&mut e, data, b"data");
                put(&mut e, data + 4, &((seq >> 32) as u32).to_le_bytes());
                put(&mut e, data + 8, &page[8..SECTOR - 4]);
                put(&mut e, data + SECTOR - 4, &(seq as u32).to_le_bytes());
                data += SECTOR;
            }
        }
        put(&mut e, at + 24, &seq.to_le_bytes());
    }
    fix_crc(&mut e, 0, length);
    let log_at = u64_at(&b, HEADERS[0] + 72) as usize;
    assert!(u32_at(&b, HEADERS[0] + 68) as usize >= length);
    put(&mut b, log_at, &e);
    for h in HEADERS {
        put(&mut b, h + 48, &guid);
        fix_crc(&mut b, h, SECTOR);
    }
    std::fs::write(file, b).unwrap();
}

/// The image's first BAT page as it is: a log entry rewriting it changes no content.
fn same_bat_page(file: &Path) -> Desc {
    let b = std::fs::read(file).unwrap();
    let at = bat_offset(&b);
    Desc::Page(at, b[at as usize..at as usize + SECTOR].to_vec())
}

/// A qemu-made VHDX (`opts` for `qemu-img create -o`) of `size` bytes, with `writes` done by
/// qemu-io.
fn qemu_vhdx(dir: &Path, name: &str, opts: &str, size: u64, writes: &[&str]) -> PathBuf {
    let path = dir.join(name);
    qemu_create_vhdx(&path, opts, size);
    for w in writes {
        run(Command::new(require("qemu-io", "qemu-utils"))
            .args(["-f", "vhdx", "-c", w])
            .arg(&path))
        .ok();
    }
    path
}

/// `vdisk ARGS FILE` with the file-size limit at `limit` bytes: a regression that writes past
/// it is stopped (exit 7) instead of filling the host.
fn vdisk_limited(limit: u64, args: &[&str], file: &Path) -> Out {
    run(Command::new(require("prlimit", "util-linux"))
        .arg(format!("--fsize={limit}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .arg(file))
}

#[test]
fn a_fixed_vhdx_with_a_pending_log_refused_in_a_block_moving_mode_is_left_byte_identical() {
    let dir = tempdir();
    let file = qemu_vhdx(
        dir.path(),
        "fixed.vhdx",
        "subformat=fixed,block_size=1M",
        8 * MIB,
        &["write -P 0x42 1M 64k"],
    );
    let len = file_len(&file);
    add_pending_log(&file, &[same_bat_page(&file)], len, len);
    let before = Snapshot::of(&file);
    for mode in ["full", "quick", "prezeroed", "pretrimmed"] {
        let out = run(vdisk_cmd().args(["compact", "--mode", mode]).arg(&file));
        out.expect_code(EXIT_UNSUPPORTED);
        assert!(
            out.stderr.contains("the file was not changed"),
            "{mode}: {}",
            out.stderr
        );
        before.assert_unchanged(&file, true, &format!("fixed + pending log, --mode {mode}"));
    }
    // retrim applies to fixed disks: it replays the log first, and says so.
    let qemu = for_qemu(&file, "vhdx", "qemu replays the log");
    let out = run(vdisk_cmd().args(["compact", "--mode", "retrim"]).arg(&file));
    out.ok();
    assert!(
        out.stderr
            .contains("the pending log (1 entry up to sequence 1) was replayed")
            && out.stderr.contains("the file was changed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not changed"), "{}", out.stderr);
    assert_qemu_checked_same("vhdx", &file, &qemu);
}

/// One hostile entry per case: a zero descriptor at 4 GiB and at 256 TiB (the format's own
/// limit) in a 9 MiB file, the file size the entry records saying the same.
#[test]
fn a_log_zero_descriptor_far_past_the_file_end_is_refused_before_any_write() {
    let dir = tempdir();
    for at in [4 << 30, (256_u64 << 40) - MIB] {
        let file = qemu_vhdx(
            dir.path(),
            &format!("far-{at:x}.vhdx"),
            "block_size=1M",
            8 * MIB,
            &["write -P 0x11 0 1M"],
        );
        let len = file_len(&file);
        assert!(len <= 12 * MIB, "{len}");
        add_pending_log(&file, &[Desc::Zero(at, MIB)], len, at + MIB);
        let before = Snapshot::of(&file);
        let started = Instant::now();
        for args in [
            &["compact", "--mode", "prezeroed"][..],
            &["compact", "--mode", "full"],
            &["compact", "--mode", "retrim"],
            &["info"],
        ] {
            let out = vdisk_limited(64 * MIB, args, &file);
            out.expect_code(EXIT_INVALID);
            let needle = "log entry 1 (at 0x";
            let offset = format!("at file offset {at:#x}");
            assert!(
                out.stderr.contains(needle) && out.stderr.contains(&offset),
                "{args:?} {at:#x}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("the file was not changed"),
                "{}",
                out.stderr
            );
            before.assert_unchanged(&file, true, &format!("{args:?}, zero at {at:#x}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "refusing took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_log_that_grows_the_file_is_replayed_with_set_len_not_by_writing_zeros() {
    let dir = tempdir();
    let file = qemu_vhdx(
        dir.path(),
        "grow.vhdx",
        "block_size=1M",
        256 * MIB,
        &["write -P 0x33 0 2M", "write -P 0x44 100M 1M"],
    );
    let len = file_len(&file);
    let grow = 64 * MIB;
    add_pending_log(
        &file,
        &[same_bat_page(&file), Desc::Zero(len, grow)],
        len,
        len + grow,
    );
    let qemu = for_qemu(&file, "vhdx", "qemu replays the log");
    // Nothing to punch in retrim mode (which never truncates): only the log is written.
    let out = vdisk_limited(len + grow + MIB, &["compact", "--mode", "retrim"], &file);
    out.ok();
    assert!(
        out.stderr
            .contains("the pending log (1 entry up to sequence 1) was replayed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        file_len(&file),
        len + grow,
        "the file grows to the size the log records"
    );
    let allocated = std::fs::metadata(&file).unwrap().blocks() * 512;
    assert!(
        allocated < len + 4 * MIB,
        "{allocated} bytes allocated for a {len}-byte image grown by {grow}: zeros were written"
    );
    assert_qemu_checked_same("vhdx", &file, &qemu);
    // The grown image compacts back; the log stays empty.
    let out = vdisk(
        ["compact", "--mode", "prezeroed"]
            .iter()
            .map(OsStr::new)
            .chain([file.as_os_str()]),
    );
    out.ok();
    assert!(!out.stderr.contains("pending log"), "{}", out.stderr);
    assert_qemu_checked_same("vhdx", &file, &qemu);
}

#[test]
fn the_real_dirty_log_fixture_compacted_in_full_mode_says_its_log_was_replayed() {
    let dir = tempdir();
    let file = fixture("iotest-dirtylog-10G-4M.vhdx", dir.path());
    let qemu = for_qemu(&file, "vhdx", "qemu replays the log");
    let out = run(vdisk_cmd().args(["compact", "--mode", "full"]).arg(&file));
    out.ok();
    assert!(
        out.stderr.contains("note: the pending log (") && out.stderr.contains("was replayed"),
        "{}",
        out.stderr
    );
    assert_qemu_checked_same("vhdx", &file, &qemu);
    // A dry run of a pending log writes nothing and needs no note.
    let file = fixture("iotest-dirtylog-10G-4M.vhdx", dir.path());
    let before = Snapshot::of(&file);
    let out = run(vdisk_cmd()
        .args(["compact", "--dry-run", "--mode", "full"])
        .arg(&file));
    out.ok();
    assert!(!out.stderr.contains("was replayed"), "{}", out.stderr);
    before.assert_unchanged(&file, true, "dry run with a pending log");
}

/// The zero scan skips host-file holes without reading them. A pending log held in memory may
/// write a page into such a hole (here: a payload block whose host range was punched): that
/// page is data, so the block is kept and reads what the log wrote, as qemu replays it.
#[test]
fn a_log_page_written_into_a_host_hole_is_data_not_a_zero_block() {
    let dir = tempdir();
    let file = qemu_vhdx(
        dir.path(),
        "hole.vhdx",
        "block_size=1M",
        8 * MIB,
        &[
            "write -P 0x33 0 1M",
            "write -P 0 1M 1M",
            "write -P 0x44 2M 1M",
        ],
    );
    let b = std::fs::read(&file).unwrap();
    let entry = u64_at(&b, bat_offset(&b) as usize + 8);
    assert_eq!(entry & 7, 6, "block 1 is FULLY_PRESENT");
    let host = (entry >> 20) << 20;
    let len = file_len(&file);
    add_pending_log(&file, &[Desc::Page(host, vec![0x77; SECTOR])], len, len);
    // After the log is written (which rewrites the whole file): the block becomes a hole.
    run(Command::new(require("fallocate", "util-linux"))
        .args([
            "--punch-hole",
            "--offset",
            &host.to_string(),
            "--length",
            "1048576",
        ])
        .arg(&file))
    .ok();
    let qemu = for_qemu(&file, "vhdx", "qemu replays the log");
    for mode in ["prezeroed", "full"] {
        let dry = vdisk(
            ["compact", "--dry-run", "--json", "--mode", mode]
                .iter()
                .map(OsStr::new)
                .chain([file.as_os_str()]),
        );
        dry.ok();
        assert_eq!(
            dry.json()["blocks_reclaimed_zero"].as_u64(),
            Some(0),
            "{mode}: the block the log writes is data: {}",
            dry.stdout
        );
    }
    vdisk(
        ["compact", "--mode", "prezeroed"]
            .iter()
            .map(OsStr::new)
            .chain([file.as_os_str()]),
    )
    .ok();
    assert_qemu_checked_same("vhdx", &file, &qemu);
}
