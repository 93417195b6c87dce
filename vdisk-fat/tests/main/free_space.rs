//! The free clusters of sound volumes of each FAT type, exactly.

use std::ops::Range;

use proptest::prelude::*;
use vdisk_core::{FsAnalyzer, FsUsage, FsVerdict};
use vdisk_fat::ANALYZER;

use super::image::{Image, Kind, sample};

fn analysed(img: &Image) -> FsUsage {
    match ANALYZER.analyze(&img.device()).unwrap() {
        FsVerdict::Analysed(u) => u,
        other => panic!("{:?}: {other:?}", img.kind),
    }
}

fn detail<'a>(u: &'a FsUsage, key: &str) -> &'a str {
    u.details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {:?}", u.details))
}

#[track_caller]
fn assert_free_exactly(img: &Image) {
    let u = analysed(img);
    assert_eq!(u.fs, "fat");
    assert_eq!(u.cluster_size, img.cluster);
    assert_eq!(u.free.len(), img.bytes.len() as u64);
    let runs: Vec<Range<u64>> = u.free.runs().collect();
    assert_eq!(runs, img.free_ranges(), "{:?}", img.kind);
    let free = img.used[2..].iter().filter(|u| !**u).count();
    assert_eq!(detail(&u, "free_clusters"), free.to_string());
    assert_eq!(detail(&u, "clusters"), img.clusters.to_string());
}

#[test]
fn the_free_clusters_of_a_fat12_volume_are_exactly_its_zero_entries() {
    let img = sample(Kind::Fat12);
    assert_free_exactly(&img);
    assert_eq!(detail(&analysed(&img), "type"), "FAT12");
}

#[test]
fn the_free_clusters_of_a_fat16_volume_are_exactly_its_zero_entries() {
    let img = sample(Kind::Fat16);
    assert_free_exactly(&img);
    let u = analysed(&img);
    assert_eq!(detail(&u, "type"), "FAT16");
    assert_eq!(detail(&u, "label"), "TESTVOL");
}

#[test]
fn the_free_clusters_of_a_fat32_volume_are_exactly_its_zero_entries() {
    let img = sample(Kind::Fat32);
    assert_free_exactly(&img);
    assert_eq!(detail(&analysed(&img), "type"), "FAT32");
}

#[test]
fn nothing_before_the_data_region_or_after_the_last_cluster_is_ever_free() {
    for kind in [Kind::Fat12, Kind::Fat16, Kind::Fat32] {
        let mut img = Image::new(kind, 8192 + 3, 2);
        if kind != Kind::Fat12 {
            img = sample(kind);
        }
        // A tail of sectors too short for a cluster, then a partition larger than the FS.
        img.bytes.extend_from_slice(&[0xAB; 4096]);
        let u = analysed(&img);
        let first = u.free.runs().next().unwrap();
        assert!(first.start >= img.data_start(), "{kind:?}: {first:?}");
        let end = img.data_start() + img.clusters * img.cluster;
        let last = u.free.runs().last().unwrap();
        assert!(
            last.end <= end,
            "{kind:?}: {last:?} past the last cluster at {end}"
        );
    }
}

#[test]
fn a_cluster_free_in_one_copy_only_is_used_when_mirroring_is_disabled() {
    let mut img = sample(Kind::Fat32);
    // FAT32 extended flags: mirroring off, FAT 0 active. Copy 2 still maps cluster 50.
    img.bytes[40] = 0x80;
    img.set(1, 50, img.eoc());
    let u = analysed(&img);
    let c50 = img.data_start() + 48 * img.cluster;
    assert!(!u.free.any_free(&(c50..c50 + img.cluster)));
    assert!(u.free.is_free(&(c50 + img.cluster..c50 + 2 * img.cluster)));
}

#[test]
fn an_fsinfo_free_count_far_from_the_fat_is_reported_not_used() {
    let mut img = sample(Kind::Fat32);
    img.bytes[512 + 488..512 + 492].copy_from_slice(&7u32.to_le_bytes());
    let u = analysed(&img);
    assert_eq!(detail(&u, "fsinfo_free_clusters"), "7");
    assert!(
        detail(&u, "fsinfo").contains("only a hint"),
        "{:?}",
        u.details
    );
    assert_eq!(
        u.free.runs().collect::<Vec<_>>(),
        img.free_ranges(),
        "the fat decides, not fsinfo"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any allocation pattern, in FAT12's 12-bit packing (odd and even entries sharing bytes),
    /// FAT16 and FAT32: the free runs are exactly the clusters left unallocated.
    #[test]
    fn free_runs_equal_the_model_for_any_allocation(
        kind in prop_oneof![Just(Kind::Fat12), Just(Kind::Fat16), Just(Kind::Fat32)],
        picks in proptest::collection::vec(any::<u16>(), 0..300),
    ) {
        let mut img = match kind {
            Kind::Fat12 => Image::new(kind, 8192, 2),
            Kind::Fat16 => Image::new(kind, 16384, 1),
            Kind::Fat32 => Image::new(kind, 81920, 1),
        };
        for p in picks {
            let c = 2 + u64::from(p) % img.clusters;
            if !img.used[c as usize] {
                img.chain(&[c]);
            }
        }
        let u = analysed(&img);
        prop_assert_eq!(u.free.runs().collect::<Vec<_>>(), img.free_ranges());
    }
}
