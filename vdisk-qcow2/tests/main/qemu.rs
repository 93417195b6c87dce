//! Images qemu made, in every version, cluster size and refcount width: every guest byte
//! vdisk reads equals what qemu reads.

use super::util::{FILL, assert_reads_like_qemu, check, qemu_create, qemu_io, s, tool};
use vdisk_core::{BlockIndex, BlockState, GuestExtent, Severity};

#[test]
fn every_byte_of_qemu_images_of_each_version_cluster_size_and_refcount_width_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        "compat=0.10,cluster_size=65536",
        "compat=0.10,cluster_size=4096",
        "compat=1.1,cluster_size=4096,refcount_bits=1",
        "compat=1.1,cluster_size=65536,refcount_bits=16",
        "compat=1.1,cluster_size=2M,refcount_bits=64",
        "compat=1.1,cluster_size=512,refcount_bits=8",
    ];
    for (i, opts) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.qcow2"));
        qemu_create(&path, opts, "8M");
        qemu_io(&path, "qcow2", FILL);
        assert_reads_like_qemu(&path);
        let problems = check(&path);
        assert!(problems.is_empty(), "{opts}: check found {problems:?}");
    }
}

#[test]
fn compressed_clusters_inflate_to_what_qemu_reads_and_are_opaque_to_the_compactor() {
    let dir = tempfile::tempdir().unwrap();
    for cs in ["4096", "65536", "2M"] {
        let src = dir.path().join(format!("src{cs}.qcow2"));
        let dst = dir.path().join(format!("z{cs}.qcow2"));
        qemu_create(&src, &format!("cluster_size={cs}"), "8M");
        qemu_io(&src, "qcow2", FILL);
        tool(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("cluster_size={cs}"),
                s(&src),
                s(&dst),
            ],
        );
        assert_reads_like_qemu(&dst);
        assert!(check(&dst).is_empty(), "{cs}: {:?}", check(&dst));
        let img = super::util::open(&dst).unwrap();
        let extents = img.guest_extents(1 << 20..1536 << 10).unwrap();
        assert!(
            extents
                .iter()
                .all(|(_, e)| matches!(e, GuestExtent::Opaque { .. })),
            "{cs}: {extents:?}"
        );
    }
}

#[test]
fn v3_zero_clusters_read_zeros_and_say_so_while_v2_zeroed_ranges_are_data_or_unallocated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    qemu_io(
        &path,
        "qcow2",
        &["write -P 1 0 1M", "write -z 64k 64k", "write -z 2M 64k"],
    );
    assert_reads_like_qemu(&path);
    let img = super::util::open(&path).unwrap();
    // Zeroing an unallocated cluster makes a zero cluster with no host space; zeroing an
    // allocated one keeps its host cluster (preallocated zero), which reads zeros all the same.
    assert_eq!(img.block_state(BlockIndex(32)).unwrap(), BlockState::Zero);
    assert!(matches!(
        img.block_state(BlockIndex(1)).unwrap(),
        BlockState::Allocated { .. }
    ));
    assert_eq!(
        img.block_state(BlockIndex(40)).unwrap(),
        BlockState::Unallocated
    );
    assert_eq!(
        img.guest_extents(64 << 10..128 << 10).unwrap(),
        vec![(64 << 10..128 << 10, GuestExtent::Zero)]
    );
    let v2 = dir.path().join("v2.qcow2");
    qemu_create(&v2, "compat=0.10", "4M");
    qemu_io(&v2, "qcow2", &["write -P 1 0 1M", "write -z 64k 64k"]);
    assert_reads_like_qemu(&v2);
}

#[test]
fn internal_snapshots_keep_their_content_while_the_active_layer_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for opts in ["compat=1.1", "compat=0.10,cluster_size=4096"] {
        let path = dir.path().join("snap.qcow2");
        let _ = std::fs::remove_file(&path);
        qemu_create(&path, opts, "8M");
        qemu_io(&path, "qcow2", &["write -P 1 0 2M", "write -c -P 9 3M 64k"]);
        tool("qemu-img", &["snapshot", "-c", "first", s(&path)]);
        qemu_io(&path, "qcow2", &["write -P 2 1M 64k", "write -P 3 6M 64k"]);
        tool("qemu-img", &["snapshot", "-c", "second", s(&path)]);
        qemu_io(&path, "qcow2", &["write -P 4 0 4k", "discard 1M 64k"]);
        assert_reads_like_qemu(&path);
        let problems = check(&path);
        assert!(
            problems.iter().all(|p| p.severity != Severity::Error),
            "{opts}: {problems:?}"
        );
        let img = super::util::open(&path).unwrap();
        let details = img.details();
        assert!(
            details.contains(&("snapshots".to_string(), "2".to_string())),
            "{details:?}"
        );
        // A cluster written before the first snapshot and never since is shared: opaque.
        let e = img.guest_extents(512 << 10..(512 << 10) + 1).unwrap();
        assert!(
            matches!(e[0].1, GuestExtent::Opaque { .. }),
            "{opts}: {e:?}"
        );
        // And pinned: compaction keeps it where it is, its cluster fixed in the host map.
        let state = img
            .block_state(BlockIndex((512 << 10) / img.block_size()))
            .unwrap();
        let BlockState::Pinned { host } = state else {
            panic!("{opts}: {state:?}");
        };
        let map = img.host_space().unwrap();
        assert_eq!(
            map.use_at(host.0),
            Some(vdisk_core::HostUse::FIXED),
            "{opts}"
        );
    }
}
