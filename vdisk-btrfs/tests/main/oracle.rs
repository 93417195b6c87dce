//! The analyser against btrfs-progs' own dumps of volumes mkfs.btrfs made: the free device
//! bytes must be exactly the ones the dumps show hold nothing.

use super::dump_tree::free_ranges;
use super::util::{free_runs, mkfs, small, usage};

fn assert_matches_btrfs_progs(v: &super::util::Volume) {
    let u = usage(v.bytes());
    let expected = free_ranges(&v.image);
    assert_eq!(free_runs(&u), expected);
    assert!(u.free_bytes() > 0);
}

#[test]
fn free_space_of_a_default_volume_is_exactly_what_btrfs_progs_shows_free() {
    let v = small();
    assert_matches_btrfs_progs(&v);
    let u = usage(v.bytes());
    let detail = |k: &str| {
        u.details
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("nodesize").as_deref(), Some("16384"));
    assert_eq!(detail("sectorsize").as_deref(), Some("4096"));
    assert_eq!(detail("csum").as_deref(), Some("crc32c"));
    assert!(detail("generation").is_some());
}

#[test]
fn dup_data_is_free_only_where_both_copies_are_and_matches_btrfs_progs() {
    let v = mkfs(
        128,
        &["-d", "dup", "-m", "dup"],
        &[("a", 5 << 20), ("b", 70_000)],
    );
    assert_matches_btrfs_progs(&v);
}

#[test]
fn mixed_block_groups_and_single_metadata_match_btrfs_progs() {
    let v = mkfs(
        128,
        &["-M", "-m", "single", "-d", "single"],
        &[("a", 2 << 20)],
    );
    assert_matches_btrfs_progs(&v);
    let v = mkfs(
        128,
        &["-m", "single", "-n", "4096"],
        &[("a", 1 << 20), ("b", 9000)],
    );
    assert_matches_btrfs_progs(&v);
}

#[test]
fn the_label_is_reported_and_the_reserved_first_mib_and_mirror_are_never_free() {
    let v = mkfs(128, &["-L", "docker-data"], &[("a", 100_000)]);
    let u = usage(v.bytes());
    assert!(
        u.details
            .contains(&("label".to_owned(), "docker-data".to_owned()))
    );
    assert!(!u.free.any_free(&(0..1 << 20)));
    assert!(!u.free.any_free(&((64 << 20)..(64 << 20) + 4096)));
    assert_eq!(u.free.len(), 128 << 20);
}

#[test]
fn a_volume_larger_than_its_file_system_keeps_the_bytes_past_the_file_system() {
    let v = small();
    let mut bytes = v.bytes();
    let fs_len = bytes.len() as u64;
    bytes.resize(bytes.len() + (8 << 20), 0xAB);
    let u = usage(bytes);
    assert!(!u.free.any_free(&(fs_len..fs_len + (8 << 20))));
}
