//! The free space the analyser finds is exactly xfs_db's, on file systems xfsprogs made.

use std::ops::Range;

use super::util::*;

fn free_ranges(path: &std::path::Path) -> Vec<Range<u64>> {
    usage(path).free.runs().collect()
}

#[test]
fn a_fresh_v5_file_system_is_free_exactly_where_xfs_db_says() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "v5.img", 64 << 20, &["-L", "data"]);
    let u = usage(&fs);
    assert_eq!(free_ranges(&fs), xfs_db_free(&fs));
    let detail = |k: &str| u.details.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(detail("version"), "5");
    assert_eq!(detail("label"), "data");
    assert_eq!(detail("block_size"), "4096");
    assert_eq!(detail("ag_count"), "4");
    assert_eq!(
        detail("uuid"),
        field(&xfs_db(&fs, &["sb 0", "print uuid"]), "uuid")
    );
    assert_eq!(u.cluster_size, 4096);
}

#[test]
fn v4_and_unusual_geometries_are_free_exactly_where_xfs_db_says() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("v4.img", &["-m", "crc=0"][..]),
        ("b1k.img", &["-b", "size=1024"][..]),
        ("s4k.img", &["-s", "size=4096", "-d", "agcount=3"][..]),
        ("v4b512.img", &["-m", "crc=0", "-b", "size=512"][..]),
    ] {
        let fs = mkfs(dir.path(), name, 48 << 20, args);
        assert_eq!(free_ranges(&fs), xfs_db_free(&fs), "{name}");
    }
}
