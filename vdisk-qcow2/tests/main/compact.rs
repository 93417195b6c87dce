//! Compaction of images qemu made, in every mode: afterwards `qemu-img check` reports no
//! errors and no leaks, `qemu-img compare` finds the guest content identical to an untouched
//! copy, and the file shrank. Versions 2 and 3, clusters of 4 KiB to 2 MiB, refcount widths 1
//! to 64 bits, compressed clusters, an internal snapshot, a backing chain.

use vdisk_core::{BlockIndex, BlockState, ErrorKind, Mode};

use super::compact_util::{
    assert_identical, assert_qemu_clean, be64_at, compact_path, compressed_copy, copy_as, len,
    made, metadata_high, pattern, snapshot_raw, structures,
};
use super::util::{open, poke, qemu_io, tool};

const MOVING: [Mode; 4] = [Mode::Full, Mode::Quick, Mode::Prezeroed, Mode::Pretrimmed];

#[test]
fn every_mode_shrinks_qemu_images_of_each_version_cluster_size_and_refcount_width_which_qemu_then_checks_clean_and_reads_identical()
 {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u64); 6] = [
        ("compat=0.10,cluster_size=65536", 65536),
        ("compat=0.10,cluster_size=4096", 4096),
        ("compat=1.1,cluster_size=4096,refcount_bits=1", 4096),
        ("compat=1.1,cluster_size=65536,refcount_bits=16", 65536),
        ("compat=1.1,cluster_size=2M,refcount_bits=64", 2 << 20),
        ("compat=1.1,cluster_size=512,refcount_bits=8", 512),
    ];
    for (i, (opts, cs)) in cases.iter().enumerate() {
        let size = (32 * cs).to_string();
        let original = made(
            dir.path(),
            &format!("o{i}.qcow2"),
            opts,
            &size,
            &pattern(*cs),
        );
        assert_qemu_clean(&original, opts);
        for mode in MOVING.into_iter().chain([Mode::Retrim]) {
            let what = format!("{opts} {mode}");
            let copy = copy_as(&original, &format!("c{i}-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&original, &copy, &what);
            assert_eq!(len(&copy), r.bytes_after, "{what}");
            if mode.scans_for_zeros() && mode.moves_blocks() {
                // Clusters 1 and 8 hold written zeros: both freed, the data packed down.
                assert!(r.blocks_reclaimed_zero >= 2, "{what}: {r:?}");
                assert!(len(&copy) + 2 * cs <= len(&original), "{what}: {r:?}");
                assert!(r.blocks_moved > 0, "{what}: {r:?}");
            }
            if mode == Mode::Retrim {
                // No file system known: the trimmed clusters only; nothing moves.
                assert_eq!(r.blocks_moved, 0, "{what}: {r:?}");
                assert_eq!(len(&copy), len(&original), "{what}");
            }
            // A second run finds nothing left to do.
            let again = compact_path(&copy, mode).unwrap();
            assert_eq!(again.bytes_after, len(&copy), "{what}: second run");
            assert_qemu_clean(&copy, &format!("{what} twice"));
        }
    }
}

#[test]
fn compressed_clusters_stay_where_they_are_and_the_rest_compacts_around_them() {
    let dir = tempfile::tempdir().unwrap();
    for cs in [4096u64, 65536] {
        let opts = format!("cluster_size={cs}");
        let src = made(
            dir.path(),
            &format!("src{cs}.qcow2"),
            &opts,
            &(32 * cs).to_string(),
            &pattern(cs),
        );
        let z = compressed_copy(&src, &format!("z{cs}.qcow2"), &opts);
        // Uncompressed writes after the compressed ones, some of them zeros.
        let cmds = [
            format!("write -P 0x99 {} {cs}", 20 * cs),
            format!("write -P 0 {} {cs}", 21 * cs),
            format!("write -P 0x98 {} {cs}", 31 * cs),
            format!("write -P 0 {} {cs}", 12 * cs),
        ];
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&z, "qcow2", &refs);
        let img = open(&z).unwrap();
        let pinned: Vec<u64> = (0..img.block_count())
            .filter(|&b| {
                matches!(
                    img.block_state(BlockIndex(b)).unwrap(),
                    BlockState::Pinned { .. }
                )
            })
            .collect();
        assert!(!pinned.is_empty(), "{cs}: compressed clusters are pinned");
        drop(img);
        for mode in MOVING {
            let what = format!("{cs} {mode}");
            let copy = copy_as(&z, &format!("z{cs}-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&z, &copy, &what);
            let after = open(&copy).unwrap();
            for &b in &pinned {
                assert_eq!(
                    after.block_state(BlockIndex(b)).unwrap(),
                    open(&z).unwrap().block_state(BlockIndex(b)).unwrap(),
                    "{what}: compressed cluster {b} stays where it was"
                );
            }
            if mode.scans_for_zeros() {
                assert!(r.blocks_reclaimed_zero >= 1, "{what}: {r:?}");
                assert!(len(&copy) < len(&z), "{what}: the file shrinks");
            }
        }
    }
}

#[test]
fn an_internal_snapshots_clusters_are_kept_and_it_still_reads_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        "compat=1.1,cluster_size=65536",
        "compat=0.10,cluster_size=4096",
    ] {
        let cs: u64 = if opts.ends_with("65536") { 65536 } else { 4096 };
        let original = made(
            dir.path(),
            "snap.qcow2",
            opts,
            &(32 * cs).to_string(),
            &pattern(cs),
        );
        tool(
            "qemu-img",
            &["snapshot", "-c", "s1", original.to_str().unwrap()],
        );
        // After the snapshot: overwrite some clusters (copied on write), zero and discard
        // others, write new ones high up.
        let cmds = [
            format!("write -P 0xa1 0 {cs}"),
            format!("write -P 0 {} {cs}", 2 * cs),
            format!("discard {} {cs}", 12 * cs),
            format!("write -P 0xa2 {} {cs}", 25 * cs),
            format!("write -P 0 {} {cs}", 26 * cs),
            format!("write -P 0xa3 {} {cs}", 28 * cs),
        ];
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&original, "qcow2", &refs);
        assert_qemu_clean(&original, opts);
        let snap = snapshot_raw(&original, "s1");
        for mode in MOVING {
            let what = format!("{opts} {mode}");
            let copy = copy_as(&original, &format!("snap-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&original, &copy, &what);
            assert!(
                snapshot_raw(&copy, "s1") == snap,
                "{what}: the snapshot reads the same"
            );
            if mode.scans_for_zeros() {
                assert!(r.blocks_reclaimed_zero >= 1, "{what}: {r:?}");
                assert!(len(&copy) < len(&original), "{what}: the file shrinks");
            }
        }
        std::fs::remove_file(&original).unwrap();
    }
}

#[test]
fn a_child_over_a_backing_file_compacts_without_showing_its_backing_data_where_it_had_its_own() {
    let dir = tempfile::tempdir().unwrap();
    for (compat, cs) in [("1.1", 65536u64), ("0.10", 65536)] {
        let base = made(
            dir.path(),
            &format!("base{compat}.qcow2"),
            &format!("compat={compat}"),
            &(32 * cs).to_string(),
            &[format!("write -P 0xbb 0 {}", 32 * cs)],
        );
        let child = dir.path().join(format!("child{compat}.qcow2"));
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("compat={compat},cluster_size={cs}"),
                "-b",
                base.to_str().unwrap(),
                "-F",
                "qcow2",
                child.to_str().unwrap(),
            ],
        );
        // The child's own zeros over the base's data must stay zeros; the same data as the
        // base may go back to reading the base.
        let cmds = [
            format!("write -P 0 {cs} {cs}"),
            format!("write -P 0xbb {} {cs}", 3 * cs),
            format!("write -P 0xc1 {} {cs}", 5 * cs),
            format!("write -P 0 {} {cs}", 20 * cs),
            format!("write -P 0xc2 {} {cs}", 30 * cs),
        ];
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&child, "qcow2", &refs);
        for mode in MOVING {
            let what = format!("v{compat} child {mode}");
            let copy = copy_as(&child, &format!("child{compat}-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&child, &copy, &what);
            if mode.scans_for_zeros() {
                assert!(r.blocks_reclaimed >= 1, "{what}: {r:?}");
                assert!(len(&copy) < len(&child), "{what}: the file shrinks");
            }
        }
    }
}

#[test]
fn an_image_with_persistent_bitmaps_is_refused_with_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = made(
        dir.path(),
        "bm.qcow2",
        "cluster_size=65536",
        "4M",
        &pattern(65536)[..4],
    );
    tool(
        "qemu-img",
        &["bitmap", "--add", path.to_str().unwrap(), "b0"],
    );
    let before = std::fs::read(&path).unwrap();
    for mode in MOVING {
        let err = compact_path(&path, mode).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{mode}: {err}");
        assert!(err.to_string().contains("bitmap"), "{err}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{mode}: the file changed"
        );
    }
}

#[test]
fn the_l1_table_refcount_table_refcount_blocks_and_l2_tables_above_the_holes_move_down() {
    let dir = tempfile::tempdir().unwrap();
    for l1_high in [true, false] {
        let original = metadata_high(dir.path(), &format!("m{l1_high}.qcow2"), l1_high);
        assert_qemu_clean(&original, "qemu's image");
        let (l1, reftable, block, l2) = structures(&original);
        for mode in [Mode::Full, Mode::Prezeroed] {
            let what = format!("l1 high {l1_high} {mode}");
            let copy = copy_as(&original, &format!("m{l1_high}-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&original, &copy, &what);
            assert_eq!(r.blocks_reclaimed_zero, 16, "{what}: {r:?}");
            assert!(len(&copy) + 16 * 4096 <= len(&original), "{what}: {r:?}");
            let (l1_2, reftable_2, block_2, l2_2) = structures(&copy);
            assert!(
                reftable_2 < reftable,
                "{what}: the refcount table moves down"
            );
            assert!(block_2 < block, "{what}: the refcount block moves down");
            match l1_high {
                true => assert!(l1_2 < l1, "{what}: the l1 table moves down"),
                false => assert!(l2_2 < l2, "{what}: the l2 table moves down"),
            }
            assert!(l1_2 + 2 * 4096 <= len(&copy) && l2_2 < len(&copy), "{what}");
        }
    }
}

#[test]
fn a_copied_flag_that_lies_about_a_shared_cluster_is_refused_before_anything_is_written() {
    // A data cluster whose entry says COPIED (refcount one) while its stored refcount is 2:
    // freeing or moving it would change what the other reference reads.
    let dir = tempfile::tempdir().unwrap();
    let path = made(
        dir.path(),
        "lie.qcow2",
        "cluster_size=4096,refcount_bits=16",
        "128k",
        &pattern(4096)[..3],
    );
    let mask = 0x00ff_ffff_ffff_fe00u64;
    let l2 = be64_at(&path, be64_at(&path, 40)) & mask;
    let data = be64_at(&path, l2 + 8) & mask; // guest cluster 1: zeros, freed by a zero scan
    assert!(
        data != 0 && be64_at(&path, l2 + 8) >> 63 == 1,
        "qemu set COPIED"
    );
    let block = be64_at(&path, be64_at(&path, 48));
    poke(&path, block + data / 4096 * 2, &2u16.to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    for mode in MOVING.into_iter().chain([Mode::Retrim]) {
        let err = compact_path(&path, mode).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{mode}: {err}");
        assert!(err.to_string().contains("refcount 2"), "{mode}: {err}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{mode}: the file changed"
        );
    }
}

#[test]
fn an_l2_table_named_by_two_l1_entries_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = made(
        dir.path(),
        "twice.qcow2",
        "cluster_size=65536",
        "1G",
        &pattern(65536)[..3],
    );
    let l1 = be64_at(&path, 40);
    poke(&path, l1 + 8, &be64_at(&path, l1).to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    for mode in MOVING {
        let err = compact_path(&path, mode).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{mode}: {err}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{mode}: the file changed"
        );
    }
}

#[test]
fn a_relocation_cancelled_between_copies_leaves_no_leak_and_the_content_unchanged() {
    use vdisk_core::{CompactOptions, Compactor, GenericCompactor, NoProgress, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = made(
        dir.path(),
        "cancel.qcow2",
        "cluster_size=4096",
        "128k",
        &pattern(4096),
    );
    let original = copy_as(&path, "original.qcow2");
    let mut image = super::util::registry()
        .open_path(&path, &OpenOptions::read_write())
        .unwrap();
    let plan = GenericCompactor
        .plan(
            &*image,
            &CompactOptions::new(Mode::Prezeroed),
            &NoProgress,
            &vdisk_core::CancelToken::new(),
        )
        .unwrap();
    assert!(plan.moves.len() >= 2, "{plan:?}");
    // The zero clusters freed first, as the engine does, so the moves' targets are free.
    let freed: Vec<vdisk_core::BlockIndex> = plan.reclaim.iter().map(|&(b, _)| b).collect();
    image
        .as_compactable()
        .unwrap()
        .deallocate(&freed, vdisk_core::FreeAs::Parent)
        .unwrap();
    let calls = std::cell::Cell::new(0);
    let cancel = || {
        calls.set(calls.get() + 1);
        match calls.get() {
            1 => Ok(()),
            _ => Err(vdisk_core::Error::new(ErrorKind::Cancelled, "cancelled")),
        }
    };
    let err = image
        .as_compactable()
        .unwrap()
        .relocate(&plan.moves, &cancel)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    drop(image);
    // The copies' refcounts were given back: not even a leak.
    assert_qemu_clean(&path, "after a cancelled relocation");
    assert_identical(&original, &path, "after a cancelled relocation");
    compact_path(&path, Mode::Prezeroed).unwrap();
    assert_qemu_clean(&path, "after the re-run");
    assert_identical(&original, &path, "after the re-run");
}

#[test]
fn a_metadata_preallocated_image_gives_back_every_cluster_the_guest_never_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        "preallocation=metadata,cluster_size=65536",
        "preallocation=metadata,compat=0.10",
    ] {
        let writes = ["write -P 1 0 64k", "write -P 2 3M 100k"].map(String::from);
        let original = made(dir.path(), "pre.qcow2", opts, "8M", &writes);
        for mode in [Mode::Full, Mode::Prezeroed] {
            let what = format!("{opts} {mode}");
            let copy = copy_as(&original, &format!("pre-{mode}.qcow2"));
            let r = compact_path(&copy, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_qemu_clean(&copy, &what);
            assert_identical(&original, &copy, &what);
            // 128 clusters of 64 KiB, 3 of them written (0, 48, 49): the rest freed.
            assert_eq!(r.blocks_reclaimed, 125, "{what}: {r:?}");
            assert!(len(&copy) < 1 << 20, "{what}: {} bytes left", len(&copy));
        }
        std::fs::remove_file(&original).unwrap();
    }
}
