//! ext4 file-system-aware compaction end to end, with real tools only. First the WSL2 /
//! Docker Desktop case: one bare ext4 over the whole disk (no partition table), formatted like
//! WSL does (`mkfs.ext4 -b 4096 -G 4096`) by `mkfs.ext4 -d` from random files over random
//! bytes, most files then removed with `debugfs -w` (their blocks keep the old data), put in
//! a dynamic VHDX with 1 MiB blocks by `qemu-img convert -O vhdx -o
//! subformat=dynamic,block_size=1M`. Then ext4 in a GPT partition, in a dynamic VHD and in a
//! VHDX with 32 MiB blocks. Each image is compacted in `full`, `quick` and `retrim`.
//!
//! The oracle for free space is e2fsprogs' own (`dumpe2fs`), not our analyser. After each run:
//! qemu checks the image, every byte outside dumpe2fs's free blocks reads as before, `e2fsck
//! -fn` is clean, `debugfs` reads every file back identical, and the reclaimed bytes reach 97%
//! of the ceiling: the image blocks wholly inside dumpe2fs's free blocks.
//!
//! Tools (a missing one fails the test): `e2fsprogs`, `fdisk` (sfdisk), `qemu-utils`.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::ffi::OsStr;
use std::fs;

use serde_json::Value;

use super::support::guest::compact_to_ceiling;
use super::support::guest_ext4::{Ext4Disk, Fill, Placement, WSL_MKFS, e2};
use super::support::{compact_ok, info_ok, num, text};

/// The WSL disk: 64 MiB, 36 files of ~1 MiB, one in four kept.
fn wsl_disk() -> Ext4Disk {
    let fill = Fill {
        count: 36,
        len: 1 << 20,
        keep_every: 4,
    };
    Ext4Disk::build(Placement::Bare, 64, WSL_MKFS, fill)
}

/// The single volume of a report, which must be a trusted ext4.
fn ext4_volume(report: &Value) -> &Value {
    let vols = report["volumes"].as_array().expect("volumes");
    assert_eq!(vols.len(), 1, "{report}");
    let v = &vols[0];
    assert_eq!(v["fs"], "ext4", "{report}");
    assert_eq!(v["state"], "trusted", "{report}");
    v
}

/// Compacts a copy of `image` in `mode`, checks the result (see the module docs) and returns
/// the bytes reclaimed.
fn compact_and_check(disk: &Ext4Disk, image: &std::path::Path, format: &str, mode: &str) -> u64 {
    let ext = image.extension().unwrap().to_string_lossy().into_owned();
    let copy = disk.dir.path().join(format!("{mode}.{ext}"));
    fs::copy(image, &copy).unwrap();
    let what = format!("ext4 {format} (dumpe2fs free {} bytes)", disk.free_bytes());
    let (r, fs_bytes) = compact_to_ceiling(&copy, mode, &what, |block| {
        let ceiling = disk.ceiling(block);
        assert!(
            ceiling >= 2 * block,
            "the test frees whole blocks: {ceiling}"
        );
        ceiling
    });
    ext4_volume(&r);
    disk.assert_content_kept(&copy, format);
    fs_bytes
}

#[test]
fn the_wsl_disk_a_bare_ext4_in_a_1mib_block_vhdx_gives_back_its_deleted_files_in_every_mode() {
    let disk = wsl_disk();
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "ext4.vhdx");
    let info = info_ok(&image);
    assert_eq!(text(&info, "partition_table"), "none", "{info}");
    let v = ext4_volume(&info);
    assert_eq!(
        v["free_bytes"].as_u64(),
        Some(disk.free_bytes()),
        "info shows the ext4 free bytes as dumpe2fs counts them: {info}"
    );
    let full = compact_and_check(&disk, &image, "vhdx", "full");
    let quick = compact_and_check(&disk, &image, "vhdx", "quick");
    let retrim = compact_and_check(&disk, &image, "vhdx", "retrim");
    assert_eq!(full, quick, "full and quick free the same ext4 space");
    assert_eq!(full, retrim, "full and retrim free the same ext4 space");
}

fn gpt_disk(mib: u64) -> Ext4Disk {
    let fill = Fill {
        count: 24,
        len: 2 << 20,
        keep_every: 3,
    };
    Ext4Disk::build(Placement::Gpt, mib, &["-t", "ext4", "-b", "4096"], fill)
}

#[test]
fn ext4_in_a_gpt_partition_of_a_dynamic_vhd_gives_back_its_deleted_files_in_every_mode() {
    let disk = gpt_disk(96);
    let image = disk.image("vpc", "subformat=dynamic", "gpt.vhd");
    for mode in ["full", "quick", "retrim"] {
        compact_and_check(&disk, &image, "vpc", mode);
    }
}

#[test]
fn ext4_in_a_gpt_partition_of_a_32mib_block_vhdx_gives_back_its_deleted_files_in_every_mode() {
    let disk = gpt_disk(256);
    let image = disk.image("vhdx", "subformat=dynamic,block_size=32M", "gpt.vhdx");
    for mode in ["full", "quick", "retrim"] {
        compact_and_check(&disk, &image, "vhdx", mode);
    }
}

#[test]
fn ext4_in_a_gpt_partition_of_a_qcow2_gives_back_its_deleted_files_in_every_mode() {
    let disk = gpt_disk(96);
    let image = disk.image("qcow2", "cluster_size=65536", "gpt.qcow2");
    for mode in ["full", "quick", "retrim"] {
        compact_and_check(&disk, &image, "qcow2", mode);
    }
}

#[test]
fn a_wsl_disk_whose_journal_needs_recovery_is_only_zero_scanned_and_says_wsl_shutdown() {
    let fill = Fill {
        count: 8,
        len: 1 << 20,
        keep_every: 2,
    };
    let disk = Ext4Disk::build(Placement::Bare, 32, WSL_MKFS, fill);
    // The raw disk is the volume: mark its journal as needing recovery, as a WSL VM that was
    // not shut down leaves it.
    e2(
        "debugfs",
        &[&disk.raw],
        &["-w", "-R", "feature needs_recovery"],
    );
    let image = disk.image("vhdx", "subformat=dynamic,block_size=1M", "dirty.vhdx");
    let r = compact_ok(&image, "full", &[]);
    let v = &r["volumes"][0];
    assert_eq!(v["state"], "untrusted", "{r}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("`wsl --shutdown`"),
        "{r}"
    );
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("wsl --shutdown")
            && notes.contains("only its blocks that hold nothing but zeros are given back"),
        "{notes}"
    );
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    // Nothing the guest wrote changed: the image reads exactly as the raw disk.
    let cmp = super::support::qemu_img([
        OsStr::new("compare"),
        OsStr::new("-f"),
        OsStr::new("vhdx"),
        OsStr::new("-F"),
        OsStr::new("raw"),
        image.as_os_str(),
        disk.raw.as_os_str(),
    ]);
    assert_eq!(
        cmp.code, 0,
        "qemu-img compare: {}{}",
        cmp.stdout, cmp.stderr
    );
}
