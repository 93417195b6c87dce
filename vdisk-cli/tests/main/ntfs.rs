//! File-system-aware compaction end to end, with real tools only: a raw disk full of random
//! bytes, partitioned by `sfdisk` (MBR with a logical partition, or GPT), NTFS volumes made by
//! `mkntfs -Q` over random bytes (so free clusters hold garbage), files copied in with `ntfscp`,
//! each volume written into the disk at its partition offset (one at an offset that is not a
//! multiple of any block size), then converted to VHD/VHDX by `qemu-img`.
//!
//! The oracle for free space is ntfs-3g's own view: `ntfscat VOLUME '$Bitmap'` (not our
//! analyser). After `vdisk compact`: qemu opens and checks the image, every byte outside the
//! free clusters of clean NTFS volumes reads as before (so the tables, the gaps between
//! partitions and dirty volumes are untouched), `ntfscat` reads every file back identical, and
//! the file shrank by at least 90% of the free space that lies in whole blocks.
//!
//! Tools (CI installs them; a missing one fails the test): `fdisk` (sfdisk), `ntfs-3g`
//! (mkntfs, ntfscp, ntfscat, ntfsresize), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde_json::Value;

use super::chain::libvhdi_chain;
use super::support::ntfs::{Table, build, plain_raw, to_vhd};
use super::support::{compact_ok, num, tempdir, text, vdisk};

/// The volume entry of partition `index` in a JSON report.
fn volume(report: &Value, index: u32) -> &Value {
    report["volumes"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["partition"].as_u64() == Some(u64::from(index)))
        })
        .unwrap_or_else(|| panic!("no volume for partition {index}: {report}"))
}

/// Full compaction of a dynamic image: dry run predicts the run, content kept, the file
/// shrank by at least 90% of the whole-block free space, zero blocks outside partitions
/// reclaimed by the zero scan.
fn full_compaction_reclaims_ntfs_free_space(table: Table, format: &str) {
    let disk = build(table, None);
    let image = disk.image(format, "dynamic");
    let dry = compact_ok(&image, "full", &["--dry-run"]);
    let r = compact_ok(&image, "full", &[]);
    assert_eq!(text(&r, "mode"), "full");
    assert_eq!(
        text(&r, "partition_table"),
        if table == Table::Mbr { "mbr" } else { "gpt" }
    );
    for field in [
        "bytes_after",
        "blocks_reclaimed",
        "blocks_reclaimed_fs",
        "blocks_reclaimed_zero",
    ] {
        assert_eq!(num(&dry, field), num(&r, field), "dry run vs run: {field}");
    }
    for v in &disk.vols {
        let j = volume(&r, v.index);
        assert_eq!(j["fs"], "ntfs", "{j}");
        assert_eq!(j["state"], "trusted", "{j}");
        assert_eq!(j["cluster_size"].as_u64(), Some(v.cluster), "{j}");
    }
    let block = num(&r, "block_size");
    let expected = disk.whole_block_free(block);
    let fs_bytes = num(&r, "bytes_reclaimed_fs");
    assert!(
        fs_bytes * 10 >= expected * 9 && fs_bytes <= expected,
        "reclaimed {fs_bytes} bytes by ntfs knowledge; ntfs-3g's free space holds {expected} bytes of whole {block}-byte blocks: {r}"
    );
    let zero_blocks = (disk.zeros.end - disk.zeros.start) / block;
    assert!(
        num(&r, "blocks_reclaimed_zero") >= zero_blocks,
        "the zero region outside the partitions is found by the zero scan: {r}"
    );
    let shrink = num(&r, "bytes_before") - num(&r, "bytes_after");
    eprintln!(
        "{table:?} {format}: ntfs-3g free {} bytes, {expected} in whole {block}-byte blocks; \
         reclaimed by fs {fs_bytes}, file {} -> {} (shrank {shrink})",
        disk.free.iter().map(|r| r.end - r.start).sum::<u64>(),
        num(&r, "bytes_before"),
        num(&r, "bytes_after")
    );
    assert!(
        shrink * 10 >= expected * 9,
        "file shrank by {shrink} bytes, want at least 90% of {expected}: {r}"
    );
    assert_eq!(fs::metadata(&image).unwrap().len(), num(&r, "bytes_after"));
    disk.assert_content_kept(&image, format);
}

#[test]
fn full_compaction_of_a_dynamic_vhd_with_mbr_and_logical_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Mbr, "vpc");
}

#[test]
fn full_compaction_of_a_dynamic_vhdx_with_mbr_and_logical_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Mbr, "vhdx");
}

#[test]
fn full_compaction_of_a_dynamic_vhd_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "vpc");
}

#[test]
fn full_compaction_of_a_dynamic_vhdx_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "vhdx");
}

#[test]
fn full_compaction_of_a_dynamic_vdi_with_mbr_and_logical_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Mbr, "vdi");
}

#[test]
fn full_compaction_of_a_dynamic_vdi_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "vdi");
}

#[test]
fn full_compaction_of_a_qcow2_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "qcow2");
}

#[test]
fn quick_reclaims_the_same_ntfs_free_space_as_full_but_no_zero_blocks() {
    let disk = build(Table::Mbr, None);
    let image = disk.image("vpc", "dynamic");
    let twin = disk.copy(&image, "twin.vhd");
    let quick = compact_ok(&image, "quick", &[]);
    let full = compact_ok(&twin, "full", &["--dry-run"]);
    assert_eq!(num(&quick, "blocks_reclaimed_zero"), 0, "{quick}");
    assert!(num(&full, "blocks_reclaimed_zero") > 0, "{full}");
    assert!(num(&quick, "blocks_reclaimed_fs") > 0, "{quick}");
    assert_eq!(
        num(&quick, "blocks_reclaimed_fs"),
        num(&full, "blocks_reclaimed_fs")
    );
    disk.assert_content_kept(&image, "vpc");
    // The zero region outside the partitions was not reclaimed: a second full run finds it.
    let again = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(
        num(&again, "blocks_reclaimed_zero"),
        num(&full, "blocks_reclaimed_zero")
    );
}

/// Retrim of a fixed image: same length, fewer host blocks, content kept.
fn retrim_punches_ntfs_free_space(table: Table, format: &str) {
    let disk = build(table, None);
    let image = disk.image(format, "fixed");
    let before = fs::metadata(&image).unwrap();
    let r = compact_ok(&image, "retrim", &[]);
    let after = fs::metadata(&image).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "retrim keeps the file length: {r}"
    );
    assert!(num(&r, "blocks_reclaimed_fs") > 0, "{r}");
    let expected = disk.whole_block_free(num(&r, "block_size"));
    let dropped = (before.blocks() - after.blocks()) * 512;
    assert!(
        before.blocks() > after.blocks() && dropped * 10 >= expected * 9,
        "host blocks {} -> {} ({dropped} bytes); ntfs-3g free space in whole blocks {expected}: {r}",
        before.blocks(),
        after.blocks()
    );
    disk.assert_content_kept(&image, format);
}

#[test]
fn retrim_of_a_fixed_vhd_punches_ntfs_free_space_and_keeps_its_length() {
    retrim_punches_ntfs_free_space(Table::Mbr, "vpc");
}

#[test]
fn retrim_of_a_fixed_vhdx_punches_ntfs_free_space_and_keeps_its_length() {
    retrim_punches_ntfs_free_space(Table::Gpt, "vhdx");
}

#[test]
fn retrim_of_a_fixed_vdi_punches_ntfs_free_space_and_keeps_its_length() {
    retrim_punches_ntfs_free_space(Table::Mbr, "vdi");
}

#[test]
fn a_dirty_ntfs_volume_is_not_trusted_and_only_zero_scanned() {
    let disk = build(Table::Mbr, Some(5));
    let image = disk.image("vhdx", "dynamic");
    let twin = disk.copy(&image, "twin.vhdx");
    let out = super::support::vdisk_compact(&image, "full", &[]);
    out.ok();
    let r = out.json();
    let dirty = volume(&r, 5);
    assert_eq!(dirty["state"], "untrusted", "{r}");
    assert!(
        dirty["reason"].as_str().unwrap_or("").contains("dirty"),
        "{r}"
    );
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        notes.iter().any(|n| n.starts_with("partition 5 (ntfs): ")
            && n.contains("dirty")
            && n.ends_with("; only its blocks that hold nothing but zeros are given back")),
        "{notes:?}"
    );
    assert_eq!(volume(&r, 1)["state"], "trusted", "{r}");
    // Only partition 1's free clusters were used (disk.free holds clean volumes only), so the
    // dirty volume reads exactly as before.
    assert!(num(&r, "blocks_reclaimed_fs") > 0, "{r}");
    disk.assert_content_kept(&image, "vhdx");
    // The human output says the same (notes on stderr), and splits what was reclaimed.
    let human = super::support::run(
        super::support::vdisk_cmd()
            .args(["compact", "--dry-run"])
            .arg(&twin),
    );
    human.ok();
    assert!(
        human
            .stderr
            .contains("partition 5 (ntfs): volume is marked dirty"),
        "{}",
        human.stderr
    );
    assert!(
        human
            .stdout
            .contains("of deleted or unused file-system space"),
        "{}",
        human.stdout
    );
}

fn notes(r: &Value) -> Vec<String> {
    r["notes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn quick_without_a_trusted_file_system_says_so_and_reclaims_no_zero_blocks() {
    let dir = tempdir();
    let image = to_vhd(&plain_raw(dir.path(), None));
    let before = fs::read(&image).unwrap();
    let r = compact_ok(&image, "quick", &[]);
    assert_eq!(text(&r, "partition_table"), "none", "{r}");
    assert_eq!(num(&r, "blocks_reclaimed"), 0, "{r}");
    let n = notes(&r);
    assert!(
        n.iter()
            .any(|n| n.starts_with("quick: no trusted file system")),
        "{n:?}"
    );
    assert!(
        n.iter()
            .any(|n| n.contains("no partition table and no known file system")),
        "{n:?}"
    );
    assert!(
        fs::read(&image).unwrap() == before,
        "quick changed the file"
    );
    // full on the same disk finds the zero blocks.
    let full = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(num(&full, "blocks_reclaimed_zero"), 2, "{full}");
}

#[test]
fn an_inconsistent_partition_table_is_unknown_and_the_disk_gets_the_zero_scan_only() {
    let dir = tempdir();
    // Two overlapping primaries: sfdisk refuses to write them, so patch the second entry's
    // start LBA (entry 2 at 462, field at +8) to 4096, inside partition 1.
    let raw = plain_raw(
        dir.path(),
        Some("label: dos\nstart=2048, size=10000, type=7\nstart=20480, size=8192, type=7\n"),
    );
    let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&4096u32.to_le_bytes(), 462 + 8).unwrap();
    drop(f);
    let image = to_vhd(&raw);
    let r = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(text(&r, "partition_table"), "unknown", "{r}");
    assert_eq!(r["volumes"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_zero"), 2, "{r}");
    let n = notes(&r);
    assert!(
        n.iter()
            .any(|n| n.starts_with("partition table not understood (")
                && n.contains("overlaps")
                && n.ends_with("the space of deleted files is not given back on this disk")),
        "{n:?}"
    );
}

/// A parent with a differencing child in its folder: file-system-aware reclaim would change
/// what the child reads, so it is skipped with a note naming the child (the child reads the
/// same afterwards); zero blocks are still reclaimed. `--force` reclaims the free space.
fn parent_with_child_keeps_its_free_space_unless_forced(format: &str) {
    let disk = build(Table::Mbr, None);
    let image = disk.image(format, "dynamic");
    let ext = if format == "vpc" { "vhd" } else { "vhdx" };
    let child = disk.dir.path().join(format!("child.{ext}"));
    let out = vdisk([
        "create".as_ref(),
        "--type".as_ref(),
        "differencing".as_ref(),
        "--parent".as_ref(),
        image.as_os_str(),
        child.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "create child: {}", out.stderr);
    let before = libvhdi_chain(&[&child, &image]);
    let r = compact_ok(&image, "full", &[]);
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    assert!(num(&r, "blocks_reclaimed_zero") > 0, "{r}");
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("child.") && notes.contains("--force"),
        "the note names the child and the way out: {r}"
    );
    assert_eq!(
        libvhdi_chain(&[&child, &image]),
        before,
        "the child reads the same through its compacted parent"
    );
    let forced = compact_ok(&image, "full", &["--force"]);
    assert!(num(&forced, "blocks_reclaimed_fs") > 0, "{forced}");
    disk.assert_content_kept(&image, format);
}

#[test]
fn full_compaction_of_a_vhd_parent_with_a_child_in_its_folder_keeps_free_space_unless_forced() {
    parent_with_child_keeps_its_free_space_unless_forced("vpc");
}

#[test]
fn full_compaction_of_a_vhdx_parent_with_a_child_in_its_folder_keeps_free_space_unless_forced() {
    parent_with_child_keeps_its_free_space_unless_forced("vhdx");
}
