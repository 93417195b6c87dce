//! The host space map against qemu's own refcounts: every host cluster qemu counts as used is
//! claimed in the map, every cluster the map calls free has refcount 0, and only clusters the
//! active tables alone hold (refcount 1, COPIED) are block data, where qemu-img map puts them.

use std::path::Path;

use super::util::{FILL, assert_qemu_check, peek64, qemu_create, qemu_io, s, tool};
use vdisk_core::{Access, BlockDevice, DiskImage, HostUse, OpenOptions, StdFile};
use vdisk_qcow2::Qcow2Image;

/// Stored 16-bit refcount of host cluster `c` in a 64 KiB-cluster image qemu made.
fn refcount(path: &Path, c: u64) -> u64 {
    let reftable = peek64(path, 48);
    let per = 65536 * 8 / 16;
    let block = peek64(path, reftable + c / per * 8);
    if block == 0 {
        return 0;
    }
    peek64(path, block + (c % per) * 2) >> 48
}

fn open(path: &Path) -> Qcow2Image {
    let file = StdFile::open(path, Access::ReadOnly).unwrap();
    let mut opts = OpenOptions::read_only();
    opts.chain = vdisk_core::ChainContext::root(path);
    Qcow2Image::open_with(Box::new(file), &opts).unwrap()
}

fn assert_map_agrees_with_refcounts(path: &Path) {
    assert_qemu_check(path);
    let img = open(path);
    let map = img.host_map().unwrap();
    let len = std::fs::metadata(path).unwrap().len();
    for c in 0..len.div_ceil(65536) {
        let rc = refcount(path, c);
        let at = c * 65536;
        match map.use_at(at) {
            Some(HostUse::Free) | None => {
                assert_eq!(rc, 0, "{}: cluster {at:#x} free but in use", path.display())
            }
            Some(HostUse::BlockData(_)) => {
                assert_eq!(rc, 1, "{}: block data at {at:#x} shared", path.display())
            }
            Some(_) => assert!(
                rc > 0,
                "{}: cluster {at:#x} claimed, refcount 0",
                path.display()
            ),
        }
    }
    // Block data lies where qemu-img map says the guest's bytes are.
    let json = tool("qemu-img", &["map", "--output=json", s(path)]);
    let extents: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    for (b, range) in map.blocks() {
        let guest = b.0 * 65536;
        if guest >= img.size() {
            continue;
        }
        let host = extents.iter().find_map(|e| {
            let start = e["start"].as_u64()?;
            let len = e["length"].as_u64()?;
            (start <= guest && guest < start + len)
                .then(|| e["offset"].as_u64().map(|o| o + guest - start))?
        });
        assert_eq!(
            host,
            Some(range.start),
            "{}: block {b} is not where qemu-img map puts guest {guest:#x}",
            path.display()
        );
    }
}

#[test]
fn the_host_map_claims_every_cluster_qemu_counts_and_frees_only_unreferenced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.qcow2");
    qemu_create(&plain, "cluster_size=65536", "16M");
    qemu_io(&plain, "qcow2", FILL);
    assert_map_agrees_with_refcounts(&plain);

    let snap = dir.path().join("snap.qcow2");
    qemu_create(&snap, "cluster_size=65536", "16M");
    qemu_io(&snap, "qcow2", FILL);
    tool("qemu-img", &["snapshot", "-c", "one", s(&snap)]);
    qemu_io(
        &snap,
        "qcow2",
        &[
            "write -P 0x99 0 256k",
            "write -c -P 3 9M 64k",
            "discard 1M 64k",
        ],
    );
    assert_map_agrees_with_refcounts(&snap);

    let bitmaps = dir.path().join("bitmaps.qcow2");
    qemu_create(&bitmaps, "cluster_size=65536", "16M");
    tool("qemu-img", &["bitmap", "--add", s(&bitmaps), "b0"]);
    qemu_io(&bitmaps, "qcow2", FILL);
    tool("qemu-img", &["bitmap", "--add", s(&bitmaps), "b1"]);
    assert_map_agrees_with_refcounts(&bitmaps);
    assert!(
        super::util::check(&bitmaps).is_empty(),
        "{:?}",
        super::util::check(&bitmaps)
    );
    let details = open(&bitmaps).details();
    let exts = details
        .iter()
        .find(|(k, _)| k == "header extensions")
        .unwrap();
    assert!(exts.1.contains("bitmaps"), "{details:?}");
}
