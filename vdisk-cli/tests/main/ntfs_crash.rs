//! Crash safety of file-system-aware compaction end to end: a small MBR disk (sfdisk) with one
//! NTFS volume made by `mkntfs -Q` over random bytes (free clusters keep garbage), a scratch
//! file copied in by `ntfscp` and then cut to nothing by `ntfstruncate` (whole free blocks of
//! deleted data before used ones, so blocks move), and files copied in after it, put into a dynamic VHD (128 KiB blocks) and a dynamic VHDX (1 MiB
//! blocks) by our own drivers. The operation under test is what `vdisk compact --mode full`
//! does: `analyze_disk` with the NTFS analyser, plan with its free space, apply.
//!
//! The write stream is cut at every write ([`cut_every_write`]); each recovered image must
//! read as before outside ntfs-3g's own free clusters (`ntfscat '$Bitmap'`, not our analyser)
//! and each block wholly inside them as before or all zeros ([`MayZero`]); a re-run must finish.
//! For a sample of recovered images the oracle reads the files back: qemu-img exports the disk
//! (after `qemu-img check -r all`, which replays a pending VHDX log) and `ntfscat` must return
//! every file byte for byte.
//!
//! Tools (a missing one fails the test): `fdisk` (sfdisk), `ntfs-3g` (mkntfs, ntfscp,
//! ntfstruncate, ntfsls, ntfscat), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are a few MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;

use vdisk_core::FormatDriver;

use super::support::fs_crash::{FsCrash, crash_full, image, qemu_export};
use super::support::guest::{noise, os, tool};
use super::support::ntfs::{MIB, SECTOR, Vol, ntfs3g_free};
use super::support::tempdir;

/// The partition: 1 MiB in, 10 MiB long, on a 12 MiB disk (the last MiB is outside it).
const START: u64 = 2048;
const SECTORS: u64 = 10 * MIB / SECTOR;
const DISK: u64 = 12 * MIB;
/// The scratch file whose clusters become free space holding old data.
const SCRATCH: usize = 4_500_000;
/// Files copied in, by length; the middle one lies between free space on both sides.
const FILES: [usize; 3] = [700_000, 40_000, 1_300_000];
/// Recovered images the oracle reads back, per format.
const ORACLE_SAMPLES: u64 = 8;

struct Disk {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
    /// ntfs-3g's free clusters in disk offsets.
    free: Vec<Range<u64>>,
}

fn build() -> Disk {
    let dir = tempdir();
    let raw = dir.path().join("disk.raw");
    fs::write(&raw, noise(DISK as usize, 31)).unwrap();
    let script = format!("label: dos\nstart={START}, size={SECTORS}, type=7\n");
    tool(
        "sfdisk",
        "fdisk",
        &[os("-q"), raw.as_os_str()],
        Some(&script),
    );
    let vol = dir.path().join("vol");
    fs::write(&vol, noise((SECTORS * SECTOR) as usize, 32)).unwrap();
    let mkntfs = [
        "-Q", "-F", "-q", "-s", "512", "-c", "4096", "-p", "2048", "-L", "CRASH",
    ];
    let mut args: Vec<&std::ffi::OsStr> = mkntfs.iter().map(|a| os(a)).collect();
    args.push(vol.as_os_str());
    tool("mkntfs", "ntfs-3g", &args, None);
    let scratch = dir.path().join("scratch.bin");
    fs::write(&scratch, noise(SCRATCH, 39)).unwrap();
    tool(
        "ntfscp",
        "ntfs-3g",
        &[
            os("-q"),
            vol.as_os_str(),
            scratch.as_os_str(),
            os("scratch.bin"),
        ],
        None,
    );
    let mut files = Vec::new();
    for (i, len) in FILES.into_iter().enumerate() {
        let name = format!("f{i}.bin");
        let data = noise(len, 40 + i as u64);
        let src = dir.path().join(&name);
        fs::write(&src, &data).unwrap();
        tool(
            "ntfscp",
            "ntfs-3g",
            &[os("-q"), vol.as_os_str(), src.as_os_str(), os(&name)],
            None,
        );
        files.push((name, data));
    }
    // Cut the scratch file's $DATA (attribute type 0x80) to nothing: its clusters are free.
    let listing = tool("ntfsls", "ntfs-3g", &[os("-i"), vol.as_os_str()], None);
    let inode = String::from_utf8_lossy(&listing)
        .lines()
        .find(|l| l.ends_with("scratch.bin"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .expect("ntfsls lists scratch.bin with its inode");
    tool(
        "ntfstruncate",
        "ntfs-3g",
        &[vol.as_os_str(), os(&inode), os("0x80"), os("0")],
        None,
    );
    let v = Vol {
        index: 1,
        start: START,
        sectors: SECTORS,
        cluster: 4096,
        dirty: false,
        files: Vec::new(),
    };
    let free = ntfs3g_free(&vol, &v);
    let mut bytes = fs::read(&raw).unwrap();
    let at = (START * SECTOR) as usize;
    bytes[at..at + (SECTORS * SECTOR) as usize].copy_from_slice(&fs::read(&vol).unwrap());
    Disk {
        dir,
        bytes,
        files,
        free,
    }
}

/// The oracle on recovered image `bytes`: qemu-img exports it (replaying a pending VHDX log
/// first), ntfscat reads every file back identical.
fn files_read_back(disk: &Disk, qemu_format: &str, bytes: &[u8], what: &str) {
    let exported = qemu_export(disk.dir.path(), qemu_format, bytes);
    let vol = disk.dir.path().join("sample.vol");
    let r = (START * SECTOR) as usize..((START + SECTORS) * SECTOR) as usize;
    assert!(
        exported.len() >= r.end,
        "{what}: qemu's export is too short"
    );
    fs::write(&vol, &exported[r]).unwrap();
    for (name, data) in &disk.files {
        let read = tool("ntfscat", "ntfs-3g", &[vol.as_os_str(), os(name)], None);
        assert!(read == *data, "{what}: ntfscat {name} reads back different");
    }
}

fn full_compaction_survives_a_crash_at_every_write_with_files_intact(
    driver: &'static dyn FormatDriver,
    qemu_format: &str,
    block: u64,
    min_cuts: u64,
) {
    let disk = build();
    let bytes = image(driver, &disk.bytes, block);
    let read_back = |format: &str, bytes: &[u8], what: &str| {
        files_read_back(&disk, format, bytes, what);
    };
    let fs = FsCrash {
        analyzer: &vdisk_ntfs::ANALYZER,
        free: &disk.free,
        read_back: &read_back,
        samples: ORACLE_SAMPLES,
    };
    let out = crash_full(&fs, driver, qemu_format, bytes);
    let (stats, zeroed, samples) = (out.stats, out.zeroed, out.samples);
    let cuts = stats.cut_points;
    eprintln!(
        "ntfs {qemu_format} full crash: {cuts} cut points ({} recoveries, {} duplicates \
         skipped), {zeroed} free blocks read zeros in recovered images, {samples} read back by \
         ntfscat",
        stats.recoveries, stats.duplicates
    );
    assert!(cuts >= min_cuts, "{qemu_format}: {cuts} cut points");
    assert!(zeroed >= 5, "{qemu_format}: recoveries after freeing");
    assert_eq!(samples, ORACLE_SAMPLES, "{qemu_format}: oracle samples");
}

#[test]
fn full_compaction_of_an_ntfs_vhd_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhd::DRIVER,
        "vpc",
        128 << 10,
        30,
    );
}

#[test]
fn full_compaction_of_an_ntfs_vhdx_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhdx::DRIVER,
        "vhdx",
        MIB,
        15,
    );
}
