//! Images qemu made, in every version, cluster size and refcount width: every guest byte
//! vdisk reads equals what qemu reads.

use super::util::{FILL, assert_reads_like_qemu, check, qemu_create, qemu_io, s, tool};
use vdisk_core::{BlockIndex, BlockState, GuestExtent};

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
        "compat=1.1,cluster_size=65536,refcount_bits=32,preallocation=metadata",
        "compat=1.1,cluster_size=16384,refcount_bits=2,lazy_refcounts=on",
        "compat=1.1,cluster_size=8192,refcount_bits=4",
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
    // The allocation map has one entry per guest cluster, not one per L2 table slot.
    assert_eq!(img.block_count(), 64);
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
        assert!(problems.is_empty(), "{opts}: {problems:?}");
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

/// Inserts an extension of `kind` with `data` before the end marker of the header
/// extensions of the v3 image at `path`.
fn add_extension(path: &std::path::Path, kind: u32, data: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut at = u32::from_be_bytes(bytes[100..104].try_into().unwrap()) as usize;
    while u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) != 0 {
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len.next_multiple_of(8);
    }
    let mut ext = kind.to_be_bytes().to_vec();
    ext.extend((data.len() as u32).to_be_bytes());
    ext.extend(data);
    ext.resize(ext.len().next_multiple_of(8) + 8, 0);
    bytes[at..at + ext.len()].copy_from_slice(&ext);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn unknown_extensions_and_compatible_bits_are_accepted_listed_and_left_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.qcow2");
    qemu_create(&path, "", "4M");
    qemu_io(&path, "qcow2", &["write -P 4 0 64k"]);
    add_extension(&path, 0x1234_5678, b"hello");
    super::util::poke(&path, 80, &(1u64 << 5).to_be_bytes());
    super::util::poke(&path, 88, &(1u64 << 7).to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    let img = super::util::open(&path).unwrap();
    let details = img.details();
    let get = |k: &str| details.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(
        get("header extensions")
            .unwrap()
            .contains("unknown 0x12345678 (5 bytes"),
        "{details:?}"
    );
    assert_eq!(get("compatible features").as_deref(), Some("bit 5"));
    assert_eq!(get("autoclear features").as_deref(), Some("bit 7"));
    assert_reads_like_qemu(&path);
    assert!(check(&path).is_empty(), "{:?}", check(&path));
    drop(img);
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
}

#[test]
fn a_zeroed_cluster_a_snapshot_still_holds_is_opaque_not_free_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sz.qcow2");
    qemu_create(&path, "", "8M");
    qemu_io(&path, "qcow2", &["write -P 1 0 2M"]);
    tool("qemu-img", &["snapshot", "-c", "a", s(&path)]);
    qemu_io(&path, "qcow2", &["write -z 1536k 64k", "write -P 2 0 64k"]);
    assert_reads_like_qemu(&path);
    assert!(check(&path).is_empty(), "{:?}", check(&path));
    let img = super::util::open(&path).unwrap();
    // The zeroed cluster keeps the snapshot's host cluster: it reads zeros but must stay.
    let e = img.guest_extents(1536 << 10..1600 << 10).unwrap();
    assert!(matches!(e[..], [(_, GuestExtent::Opaque { .. })]), "{e:?}");
    // Rewritten after the snapshot: the active layer's own data again.
    let e = img.guest_extents(0..64 << 10).unwrap();
    assert!(
        matches!(e[..], [(_, GuestExtent::Data { host: Some(_) })]),
        "{e:?}"
    );
}

#[test]
fn reads_of_any_offset_and_length_equal_the_same_bytes_of_qemus_raw_export() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.qcow2");
    qemu_create(&path, "cluster_size=4096", "8M");
    qemu_io(&path, "qcow2", FILL);
    // Two clusters written out of order, so neighbours in the guest are apart in the file.
    qemu_io(
        &path,
        "qcow2",
        &["write -P 0x77 2060k 4k", "write -P 0x78 2056k 4k"],
    );
    let raw = super::util::qemu_raw(&path);
    let img = super::util::open(&path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = x % raw.len() as u64;
        let len = ((x >> 32) % (300 << 10)).min(raw.len() as u64 - offset) as usize;
        let mut buf = vec![0xa5u8; len];
        img.read_at(&mut buf, offset).unwrap();
        assert!(
            buf[..] == raw[offset as usize..offset as usize + len],
            "{len} bytes at {offset:#x} differ"
        );
    }
}
