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

use std::path::PathBuf;

use serde_json::Value;

use super::support::guest::os;
use super::support::guest_lvm::{Content, LvmDisk, build};
use super::support::{compact_ok, num, qemu_img};

/// `disk` converted to `format` with `opts` (all blocks allocated, zeros too).
fn image(disk: &LvmDisk, format: &str, opts: &str, name: &str) -> PathBuf {
    let path = disk.dir.path().join(name);
    qemu_img([
        os("convert"),
        os("-S"),
        os("0"),
        os("-f"),
        os("raw"),
        os("-O"),
        os(format),
        os("-o"),
        os(opts),
        disk.raw.as_os_str(),
        path.as_os_str(),
    ])
    .ok();
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
/// reclaimed bytes against the ceiling.
fn compact_and_check(disk: &LvmDisk, format: &str, opts: &str, mode: &str) {
    let img = image(disk, format, opts, &format!("disk-{mode}.{format}"));
    let r = compact_ok(&img, mode, &[]);
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
            Content::Ntfs => {
                assert_eq!(
                    (&j["fs"], &j["state"]),
                    (&"ntfs".into(), &"trusted".into()),
                    "{j}"
                );
            }
        }
    }
    let block = num(&r, "block_size");
    let ceiling = disk.whole_block_free(block);
    let fs_bytes = num(&r, "bytes_reclaimed_fs");
    eprintln!(
        "lvm {format} {opts} {mode}: ceiling {} MiB in whole {block}-byte blocks, reclaimed by \
         fs knowledge {} MiB, file {} -> {}",
        ceiling >> 20,
        fs_bytes >> 20,
        num(&r, "bytes_before"),
        num(&r, "bytes_after")
    );
    assert!(
        ceiling > 0,
        "the test disk has no whole free block of {block} bytes"
    );
    assert!(
        fs_bytes * 100 >= ceiling * 97 && fs_bytes <= ceiling,
        "reclaimed {fs_bytes} bytes by file-system knowledge, ceiling {ceiling}: {r}"
    );
    let check = qemu_img([os("check"), os("-f"), os(format), img.as_os_str()]);
    let all = format!("{}{}", check.stdout, check.stderr);
    assert!(
        check.code == 0 || (check.code == 63 && all.contains("does not support checks")),
        "qemu-img check failed: {all}"
    );
    let now = disk.read_back(&img, format);
    disk.assert_content_kept(&now);
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
