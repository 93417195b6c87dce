//! Boot sectors with a field out of bounds, and one-byte mutations anywhere in the metadata:
//! never a panic, never more free space than the volume has, damage is untrusted.

use proptest::prelude::*;
use vdisk_core::{FsAnalyzer, FsVerdict};
use vdisk_fat::ANALYZER;

use super::image::{Image, Kind, sample};

#[track_caller]
fn untrusted_because(img: &Image, what: &str) {
    match ANALYZER.analyze(&img.device()).unwrap() {
        FsVerdict::Untrusted { fs: "fat", reason } => {
            assert!(
                reason.contains(what),
                "{:?}: {reason} (want {what})",
                img.kind
            );
        }
        other => panic!("{:?}: expected untrusted ({what}), got {other:?}", img.kind),
    }
}

fn put16(img: &mut Image, at: usize, v: u16) {
    img.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(img: &mut Image, at: usize, v: u32) {
    img.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_file_system_larger_than_its_volume_is_untrusted() {
    let mut img = sample(Kind::Fat16);
    put16(&mut img, 19, 40000);
    untrusted_because(&img, "the volume holds 32768");
    let mut img = sample(Kind::Fat32);
    put32(&mut img, 32, 81921);
    untrusted_because(&img, "the volume holds 81920");
}

#[test]
fn a_fat_too_small_for_the_cluster_count_is_untrusted() {
    let mut img = sample(Kind::Fat16);
    let fat = img.fat_sectors as u16;
    put16(&mut img, 22, fat / 2);
    untrusted_because(&img, "too small");
}

#[test]
fn a_bpb_whose_shape_disagrees_with_its_cluster_count_is_untrusted() {
    // A FAT32-shaped BPB (no 16-bit FAT size) over a FAT16-sized cluster count.
    let mut img = sample(Kind::Fat16);
    let fat = img.fat_sectors as u32;
    put16(&mut img, 22, 0);
    put32(&mut img, 36, fat);
    untrusted_because(&img, "disagrees with its cluster count");
    // A fixed root directory on FAT32 is only possible with a 16-bit FAT size.
    let mut img = sample(Kind::Fat32);
    put16(&mut img, 22, 1);
    untrusted_because(&img, "disagrees with its cluster count");
}

#[test]
fn metadata_filling_the_volume_and_other_fields_out_of_bounds_are_untrusted() {
    let mut img = sample(Kind::Fat16);
    put16(&mut img, 14, 40000);
    untrusted_because(&img, "fill the whole");
    let mut img = sample(Kind::Fat16);
    img.bytes[16] = 9;
    untrusted_because(&img, "9 copies");
    let mut img = sample(Kind::Fat16);
    put16(&mut img, 17, 0);
    untrusted_because(&img, "no root directory");
    let mut img = sample(Kind::Fat32);
    put32(&mut img, 44, 0x0FFF_FFF0);
    untrusted_because(&img, "root directory starts at cluster");
    let mut img = sample(Kind::Fat32);
    put16(&mut img, 48, 40);
    untrusted_because(&img, "fsinfo sector 40");
    let mut img = sample(Kind::Fat32);
    put16(&mut img, 42, 0x0100);
    untrusted_because(&img, "version 1.0");
    let mut img = sample(Kind::Fat32);
    put16(&mut img, 40, 0x0083);
    untrusted_because(&img, "active fat is number 3 of 2");
}

#[test]
fn basic_fields_out_of_range_mean_not_fat_at_all() {
    for (at, value) in [(11usize, 0u16), (11, 768), (11, 8192), (14, 0)] {
        let mut img = sample(Kind::Fat16);
        put16(&mut img, at, value);
        assert_eq!(ANALYZER.analyze(&img.device()).unwrap(), FsVerdict::NotMine);
    }
    for (at, value) in [(13usize, 0u8), (13, 3), (16, 0), (21, 0x12), (0, 0x00)] {
        let mut img = sample(Kind::Fat16);
        img.bytes[at] = value;
        assert_eq!(ANALYZER.analyze(&img.device()).unwrap(), FsVerdict::NotMine);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any few bytes changed in the boot sector, FSInfo or the FATs: the analyser answers
    /// without panicking, and whatever it calls free lies in the data region of the volume.
    #[test]
    fn mutated_metadata_never_panics_nor_frees_metadata(
        kind in prop_oneof![Just(Kind::Fat12), Just(Kind::Fat16), Just(Kind::Fat32)],
        edits in proptest::collection::vec((0usize..70_000, any::<u8>()), 1..6),
    ) {
        let mut img = sample(kind);
        let original = img.bytes[..(img.reserved * img.sector) as usize].to_vec();
        let meta = img.data_start() as usize;
        for (at, v) in edits {
            let at = at % meta;
            img.bytes[at] = v;
        }
        match ANALYZER.analyze(&img.device()).unwrap() {
            FsVerdict::Analysed(u) => {
                let reserved = (img.reserved * img.sector) as usize;
                // A sound boot sector still describes this layout (the edits hit the FATs or
                // unused bytes): nothing before the data region is free.
                if img.bytes[..reserved] == original[..] {
                    prop_assert!(!u.free.any_free(&(0..img.data_start())));
                }
                prop_assert!(u.free.len() == img.bytes.len() as u64);
            }
            FsVerdict::Untrusted { fs, .. } => prop_assert_eq!(fs, "fat"),
            FsVerdict::NotMine => {}
            other => prop_assert!(false, "fat never guards nor contains volumes: {other:?}"),
        }
    }
}
