//! btrfs-aware compaction end to end, with btrfs's own tools: a single-device btrfs made by
//! `mkfs.btrfs --rootdir` over random bytes, most files deleted through a loop mount (the
//! freed extents keep their bytes), bare or in a GPT partition, converted by qemu-img to VHD
//! and VHDX (1 MiB and 32 MiB blocks), then `vdisk compact` in full, quick and retrim.
//!
//! The free space oracle is btrfs-progs' own view (`btrfs inspect-internal dump-tree` of
//! the chunk and extent trees, not our analyser). After compaction: qemu checks the image,
//! every byte outside btrfs's free ranges reads as before, `btrfs check --readonly` is
//! clean, every file reads back identical through a read-only loop mount, and the reclaimed
//! bytes reach 97% of the ceiling (image blocks wholly inside btrfs's free space).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::Value;

use super::support::guest_btrfs::build;
use super::support::{compact_ok, num};

fn the_volume(r: &Value) -> &Value {
    let vs = r["volumes"].as_array().expect("volumes in the report");
    assert_eq!(vs.len(), 1, "{r}");
    &vs[0]
}

/// `size_mib`: the volume, large enough that whole blocks of `block_mib` are free.
fn compaction_reclaims_btrfs_free_space(
    gpt: bool,
    size_mib: u64,
    format: &str,
    block_mib: u64,
    mode: &str,
) {
    let disk = build(gpt, size_mib);
    let image = disk.image(format, "dynamic", block_mib);
    let r = compact_ok(&image, mode, &[]);
    let v = the_volume(&r);
    assert_eq!(v["fs"], "btrfs", "{v}");
    assert_eq!(v["state"], "trusted", "{v}");
    let block = num(&r, "block_size");
    let ceiling = disk.whole_block_free(block);
    let fs_bytes = num(&r, "bytes_reclaimed_fs");
    let shrink = num(&r, "bytes_before") - num(&r, "bytes_after");
    eprintln!(
        "btrfs {} {format} {block_mib} MiB {mode}: ceiling {} MiB, reclaimed by fs {} MiB, file shrank {} MiB",
        if gpt { "gpt" } else { "bare" },
        ceiling >> 20,
        fs_bytes >> 20,
        shrink >> 20
    );
    assert!(
        ceiling >= 2 * block,
        "the test deletes most files: ceiling {ceiling}"
    );
    assert!(
        fs_bytes <= ceiling,
        "reclaimed {fs_bytes} > ceiling {ceiling}: {r}"
    );
    assert!(
        fs_bytes * 100 >= ceiling * 97 && shrink * 100 >= ceiling * 97,
        "reclaimed {fs_bytes} (file shrank {shrink}); want 97% of btrfs's {ceiling}: {r}"
    );
    assert_eq!(fs::metadata(&image).unwrap().len(), num(&r, "bytes_after"));
    disk.assert_content_kept(&image, format);
}

#[test]
fn full_compaction_of_a_bare_btrfs_in_a_vhdx_with_1_mib_blocks_reclaims_deleted_files() {
    compaction_reclaims_btrfs_free_space(false, 160, "vhdx", 1, "full");
}

#[test]
fn full_compaction_of_a_gpt_btrfs_in_a_dynamic_vhd_reclaims_deleted_files() {
    compaction_reclaims_btrfs_free_space(true, 160, "vpc", 2, "full");
}

#[test]
fn quick_compaction_of_a_gpt_btrfs_in_a_vhdx_with_32_mib_blocks_reclaims_deleted_files() {
    compaction_reclaims_btrfs_free_space(true, 256, "vhdx", 32, "quick");
}

#[test]
fn retrim_of_a_fixed_vhdx_punches_btrfs_free_space_and_keeps_every_file() {
    let disk = build(false, 160);
    let image = disk.image("vhdx", "fixed", 0);
    let before = fs::metadata(&image).unwrap();
    let r = compact_ok(&image, "retrim", &[]);
    let after = fs::metadata(&image).unwrap();
    assert_eq!(after.len(), before.len(), "retrim keeps the length: {r}");
    let ceiling = disk.whole_block_free(num(&r, "block_size"));
    let dropped = (before.blocks() - after.blocks()) * 512;
    assert!(
        dropped * 100 >= ceiling * 97,
        "host bytes dropped {dropped}; btrfs free space in whole blocks {ceiling}: {r}"
    );
    disk.assert_content_kept(&image, "vhdx");
}
