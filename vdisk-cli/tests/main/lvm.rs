//! LVM2 end to end, with LVM's own tools: a GPT disk whose "Linux LVM" partition is a
//! physical volume made by `pvcreate`, a volume group with a logical volume in two segments
//! holding a file system (NTFS by its own tools over random bytes, files copied in), another
//! of random bytes, and unused extents that still hold random bytes (one of them freed by
//! `lvremove`). Converted to VHD/VHDX by `qemu-img` and compacted by vdisk.
//!
//! The oracle for free space is LVM's own map (`pvs --segments`: the free extents) plus the
//! file system's own (ntfs-3g's `$Bitmap`), mapped through the extents LVM reports for the
//! LV. After compaction: qemu checks the image, every byte outside that free space reads as
//! before, `vgck` passes on the result and lists the same volumes, every file reads back
//! identical, and vdisk reclaimed at least 97% of the ceiling: the image blocks wholly inside
//! that free space.
//!
//! Tools (CI installs them; a missing one fails the test): `lvm2`, `fdisk`, `mount`
//! (losetup), `ntfs-3g`, `qemu-utils`.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::support::guest::{compact_to_ceiling, convert_allocated};
use super::support::guest_lvm::{Content, LvmDisk, build};

/// `disk` converted to `format` with `opts` (all blocks allocated, zeros too).
fn image(disk: &LvmDisk, format: &str, opts: &str, name: &str) -> PathBuf {
    let path = disk.dir.path().join(name);
    let _ = fs::remove_file(&path);
    convert_allocated(&disk.raw, format, opts, &path);
    path
}

/// The report's volume named `name`.
fn volume<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}: {r}"))
}

/// Compacts `disk` as `format`/`opts` in `mode`; checks the report, the content and the
/// reclaimed bytes against the ceiling; returns the bytes reclaimed by file-system knowledge.
fn compact_and_check(disk: &LvmDisk, format: &str, opts: &str, mode: &str) -> u64 {
    let img = image(disk, format, opts, &format!("disk-{mode}.{format}"));
    let what = format!("lvm {format} {opts}");
    let (r, fs_bytes) = compact_to_ceiling(&img, mode, &what, |block| disk.whole_block_free(block));
    let vg = &disk.vg;
    let pv = volume(&r, "partition 1");
    assert_eq!(
        (&pv["fs"], &pv["state"]),
        (&"lvm2".into(), &"trusted".into()),
        "{pv}"
    );
    assert_eq!(
        pv["free_bytes"].as_u64(),
        Some(disk.unused),
        "lvm's free extents: {pv}"
    );
    let pv_index = r["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().position(|v| v["name"] == "partition 1"))
        .unwrap();
    for lv in &disk.lvs {
        let j = volume(&r, &format!("lvm2 volume {vg}/{} in partition 1", lv.name));
        assert_eq!(j["container"].as_u64(), Some(pv_index as u64), "{j}");
        let extents: Vec<[u64; 2]> = lv.extents.iter().map(|e| [e.start, e.end]).collect();
        assert_eq!(j["extents"], serde_json::json!(extents), "{j}");
        let size: u64 = lv.extents.iter().map(|e| e.end - e.start).sum();
        assert_eq!(j["size"].as_u64(), Some(size), "{j}");
        match lv.content {
            Content::Noise => {
                assert_eq!(j["state"], "unrecognised", "{j}");
                let note = format!("lvm2 volume {vg}/{}", lv.name);
                assert!(
                    r["notes"].to_string().contains(&note),
                    "no note for {note}: {r}"
                );
            }
            Content::Ntfs | Content::Ext4 => {
                let fs = if lv.content == Content::Ntfs {
                    "ntfs"
                } else {
                    "ext4"
                };
                assert_eq!(
                    (&j["fs"], &j["state"]),
                    (&fs.into(), &"trusted".into()),
                    "{j}"
                );
            }
        }
    }
    disk.assert_content_kept(&img, format);
    fs_bytes
}

#[test]
fn full_compaction_of_a_vhdx_reclaims_unused_extents_and_the_free_clusters_inside_a_two_segment_lv()
{
    let disk = build(Content::Ntfs);
    compact_and_check(&disk, "vhdx", "subformat=dynamic,block_size=1M", "full");
}

#[test]
fn quick_compaction_of_a_dynamic_vhd_with_lvm_keeps_every_used_byte_and_reclaims_the_free_ones() {
    let disk = build(Content::Ntfs);
    compact_and_check(&disk, "vpc", "subformat=dynamic", "quick");
}

#[test]
fn retrim_of_a_vhdx_with_32_mib_blocks_punches_only_lvm_and_file_system_free_space() {
    let disk = build(Content::Ntfs);
    compact_and_check(&disk, "vhdx", "subformat=dynamic,block_size=32M", "retrim");
}

/// Compacts the ext4-in-an-LV disk as `format`/`opts` in full, quick and retrim: the three
/// modes reclaim the same space by file-system knowledge (see [`compact_and_check`]).
fn ext4_in_an_lv_in_every_mode(format: &str, opts: &str) {
    let disk = build(Content::Ext4);
    let full = compact_and_check(&disk, format, opts, "full");
    let quick = compact_and_check(&disk, format, opts, "quick");
    let retrim = compact_and_check(&disk, format, opts, "retrim");
    assert_eq!(full, quick, "full and quick free the same space");
    assert_eq!(full, retrim, "full and retrim free the same space");
}

#[test]
fn ext4_in_a_two_segment_lv_of_a_1mib_block_vhdx_gives_back_deleted_files_and_unused_extents_in_every_mode()
 {
    ext4_in_an_lv_in_every_mode("vhdx", "subformat=dynamic,block_size=1M");
}

#[test]
fn ext4_in_a_two_segment_lv_of_a_dynamic_vhd_gives_back_deleted_files_and_unused_extents_in_every_mode()
 {
    ext4_in_an_lv_in_every_mode("vpc", "subformat=dynamic");
}

#[test]
fn ext4_in_a_two_segment_lv_of_a_32mib_block_vhdx_gives_back_deleted_files_and_unused_extents_in_every_mode()
 {
    ext4_in_an_lv_in_every_mode("vhdx", "subformat=dynamic,block_size=32M");
}
