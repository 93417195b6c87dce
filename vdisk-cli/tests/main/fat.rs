//! FAT32 in an MBR partition, end to end with real tools only: a 96 MiB disk of random bytes,
//! one partition (type 0x0c) made by `sfdisk`, FAT32 made by `mkfs.fat -F 32` over random
//! bytes, 48 random files written by `mcopy`, most of them removed by `mdel` (their clusters
//! keep their bytes), then converted to VHD/VHDX by `qemu-img`.
//!
//! The free space is the FAT as the test reads it at the layout the boot sector gives, and its
//! count must equal what `fsck.fat -n -v` counts as used. After `vdisk compact`: qemu checks
//! the image, every byte outside the free clusters reads as before, `fsck.fat -n` is clean,
//! `mcopy` reads every kept file back identical, and vdisk reclaimed at least 97% of the
//! ceiling (image blocks wholly inside the free clusters).
//!
//! Tools (CI installs them; a missing one fails the test): `dosfstools` (mkfs.fat, fsck.fat),
//! `mtools` (mcopy, mdel), `fdisk` (sfdisk), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::support::guest::{noise, os, tool};
use super::support::guest_fat::{GuestDisk, MIB, SECTOR, assert_reclaimed_near_ceiling, volume};
use super::support::{compact_ok, num};

const DISK: u64 = 96 * MIB;
/// The partition: 1 MiB to 89 MiB.
const PART: Range<u64> = MIB..89 * MIB;
const FILES: usize = 48;
/// Files kept: the first five and one at about a third of the volume; the rest are deleted.
const KEPT: [usize; 6] = [0, 1, 2, 3, 4, 15];

fn name(i: usize) -> String {
    format!("FILE{i:02}.BIN")
}

fn content(i: usize) -> Vec<u8> {
    noise(1_500_000 + i * 7919, 100 + i as u64)
}

/// Little-endian field of `len` bytes at `at`.
fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    bytes[at..at + len]
        .iter()
        .rev()
        .fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// The free clusters of the FAT32 volume file `vol` as byte ranges of the volume, read from
/// the first FAT at the layout its boot sector gives; their count must match fsck.fat's.
fn fat32_free(vol: &Path) -> Vec<Range<u64>> {
    let b = fs::read(vol).unwrap();
    let (bps, spc) = (le(&b, 11, 2), le(&b, 13, 1));
    let (reserved, fats, fat_sectors, total) =
        (le(&b, 14, 2), le(&b, 16, 1), le(&b, 36, 4), le(&b, 32, 4));
    let data = (reserved + fats * fat_sectors) * bps;
    let clusters = (total - reserved - fats * fat_sectors) / spc;
    let fat = (reserved * bps) as usize;
    let mut free: Vec<Range<u64>> = Vec::new();
    let mut count = 0;
    for n in 2..clusters + 2 {
        if le(&b, fat + 4 * n as usize, 4) & 0x0FFF_FFFF != 0 {
            continue;
        }
        count += 1;
        let start = data + (n - 2) * spc * bps;
        let r = start..start + spc * bps;
        match free.last_mut() {
            Some(l) if l.end == r.start => l.end = r.end,
            _ => free.push(r),
        }
    }
    // "volume: 7 files, 9209/88999 clusters"
    let out = String::from_utf8(tool(
        "fsck.fat",
        "dosfstools",
        &[os("-n"), os("-v"), vol.as_os_str()],
        None,
    ))
    .unwrap();
    let summary = out.lines().last().unwrap_or_default();
    let counts = summary.rsplit(' ').nth(1).unwrap_or_default();
    let (used, total_clusters) = counts.split_once('/').unwrap_or_else(|| panic!("{out}"));
    let used: u64 = used.parse().unwrap();
    assert_eq!(total_clusters, clusters.to_string(), "{out}");
    assert_eq!(
        count,
        clusters - used,
        "the test's reading of the fat vs fsck.fat: {out}"
    );
    free
}

/// The guest disk; `dirty` sets the state byte the Linux driver sets while the volume is
/// mounted (as a crash leaves it).
fn build(dirty: bool) -> GuestDisk {
    let script = format!(
        "label: dos\nstart={}, size={}, type=c\n",
        PART.start / SECTOR,
        (PART.end - PART.start) / SECTOR
    );
    GuestDisk::build(DISK, &script, PART, |dir, vol| {
        tool(
            "mkfs.fat",
            "dosfstools",
            &[
                os("-F"),
                os("32"),
                os("-s"),
                os("2"),
                os("-n"),
                os("VDISK"),
                vol.as_os_str(),
            ],
            None,
        );
        let mut args = vec![os("-i").to_owned(), vol.as_os_str().to_owned()];
        for i in 0..FILES {
            let src = dir.join(name(i));
            fs::write(&src, content(i)).unwrap();
            args.push(src.into_os_string());
        }
        args.push(os("::").to_owned());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        tool("mcopy", "mtools", &refs, None);
        let mut del = vec![os("-i").to_owned(), vol.as_os_str().to_owned()];
        for i in (0..FILES).filter(|i| !KEPT.contains(i)) {
            del.push(format!("::{}", name(i)).into());
        }
        let refs: Vec<&std::ffi::OsStr> = del.iter().map(|a| a.as_os_str()).collect();
        tool("mdel", "mtools", &refs, None);
        let free = fat32_free(vol);
        if dirty {
            let mut b = fs::read(vol).unwrap();
            b[65] |= 1;
            fs::write(vol, b).unwrap();
        }
        free
    })
}

/// fsck.fat is clean on the volume as it reads now and mcopy reads every kept file back.
#[track_caller]
fn assert_files_intact(disk: &GuestDisk, vol: &Path) {
    tool("fsck.fat", "dosfstools", &[os("-n"), vol.as_os_str()], None);
    for i in KEPT {
        let out = disk.dir.path().join(format!("back-{i}"));
        let _ = fs::remove_file(&out);
        let src = format!("::{}", name(i));
        tool(
            "mcopy",
            "mtools",
            &[
                os("-n"),
                os("-i"),
                vol.as_os_str(),
                os(&src),
                out.as_os_str(),
            ],
            None,
        );
        assert!(
            fs::read(&out).unwrap() == content(i),
            "{} reads back different",
            name(i)
        );
    }
}

fn compact_dynamic(format: &str, opts: &str, file: &str) {
    let disk = build(false);
    let image = disk.image(format, opts, file);
    let r = compact_ok(&image, "full", &[]);
    let v = volume(&r, 1);
    assert_eq!(
        (v["fs"].as_str(), v["state"].as_str()),
        (Some("fat"), Some("trusted")),
        "{r}"
    );
    assert_reclaimed_near_ceiling(&disk, &r, &format!("fat32 in mbr, {file}"));
    assert_eq!(fs::metadata(&image).unwrap().len(), num(&r, "bytes_after"));
    let vol = disk.assert_kept_outside_free(&image, format);
    assert_files_intact(&disk, &vol);
}

#[test]
fn full_compaction_of_a_vhd_holding_fat32_reclaims_deleted_files_and_keeps_the_rest() {
    compact_dynamic("vpc", "subformat=dynamic", "disk.vhd");
}

#[test]
fn full_compaction_of_a_vhdx_with_1m_blocks_holding_fat32_reclaims_deleted_files() {
    compact_dynamic("vhdx", "subformat=dynamic,block_size=1M", "disk.vhdx");
}

#[test]
fn full_compaction_of_a_vhdx_with_32m_blocks_holding_fat32_reclaims_whole_free_blocks() {
    compact_dynamic("vhdx", "subformat=dynamic,block_size=32M", "disk32.vhdx");
}

#[test]
fn quick_compaction_reclaims_fat32_free_clusters_without_a_zero_scan() {
    let disk = build(false);
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "quick.vhdx");
    let r = compact_ok(&image, "quick", &[]);
    assert_eq!(num(&r, "blocks_reclaimed_zero"), 0, "{r}");
    assert_reclaimed_near_ceiling(&disk, &r, "fat32 quick, vhdx 1M");
    let vol = disk.assert_kept_outside_free(&image, "vhdx");
    assert_files_intact(&disk, &vol);
}

#[test]
fn retrim_of_a_fixed_vhdx_holding_fat32_punches_its_free_clusters() {
    let disk = build(false);
    let image = disk.image("vhdx", "subformat=fixed", "fixed.vhdx");
    let before = fs::metadata(&image).unwrap();
    let r = compact_ok(&image, "retrim", &[]);
    let after = fs::metadata(&image).unwrap();
    assert_eq!(after.len(), before.len(), "retrim keeps the length: {r}");
    let (ceiling, _) = assert_reclaimed_near_ceiling(&disk, &r, "fat32 retrim, fixed vhdx");
    let dropped = (before.blocks() - after.blocks()) * 512;
    assert!(
        dropped * 100 >= ceiling * 97,
        "host blocks freed: {dropped} bytes, ceiling {ceiling}: {r}"
    );
    let vol = disk.assert_kept_outside_free(&image, "vhdx");
    assert_files_intact(&disk, &vol);
}

#[test]
fn a_fat32_volume_left_mounted_is_untrusted_and_kept_byte_for_byte() {
    let mut disk = build(true);
    // Nothing of the volume may change: no free space to compare against.
    disk.free.clear();
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "dirty.vhdx");
    let r = compact_ok(&image, "full", &[]);
    let v = volume(&r, 1);
    assert_eq!(v["state"], "untrusted", "{r}");
    assert_eq!(
        v["reason"], "the volume was not unmounted cleanly; run fsck.fat or chkdsk",
        "{r}"
    );
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    disk.assert_kept_outside_free(&image, "vhdx");
}
