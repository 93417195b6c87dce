//! Trust rules: each state in which the FAT must not be relied on, and volumes that are not
//! FAT at all.

use vdisk_core::fs::MemDevice;
use vdisk_core::{ErrorKind, FsAnalyzer, FsVerdict};
use vdisk_fat::ANALYZER;

use super::image::{Image, Kind, sample};

#[track_caller]
fn reason(img: &Image) -> String {
    match ANALYZER.analyze(&img.device()).unwrap() {
        FsVerdict::Untrusted { fs: "fat", reason } => reason,
        other => panic!("{:?}: expected untrusted, got {other:?}", img.kind),
    }
}

const UNCLEAN: &str = "the volume was not unmounted cleanly; run fsck.fat or chkdsk";

#[test]
fn a_volume_whose_boot_sector_state_is_dirty_is_untrusted() {
    for kind in [Kind::Fat12, Kind::Fat16, Kind::Fat32] {
        let mut img = sample(kind);
        let state = img.ext() + 1;
        img.bytes[state] |= 0x01;
        assert_eq!(reason(&img), UNCLEAN, "{kind:?}");
        // Surface scan requested (Windows NT's second state bit).
        img.bytes[state] = 0x02;
        assert_eq!(reason(&img), UNCLEAN, "{kind:?}");
    }
}

#[test]
fn a_volume_whose_fat_entry_1_lacks_the_clean_shutdown_bit_is_untrusted() {
    let mut img = sample(Kind::Fat16);
    img.set_all(1, 0x7FFF);
    assert_eq!(reason(&img), UNCLEAN);
    let mut img = sample(Kind::Fat32);
    img.set_all(1, 0x07FF_FFFF);
    assert_eq!(reason(&img), UNCLEAN);
}

#[test]
fn a_volume_whose_fat_entry_1_records_disk_errors_is_untrusted() {
    let mut img = sample(Kind::Fat32);
    img.set_all(1, 0x0BFF_FFFF);
    assert!(reason(&img).contains("disk errors"));
    let mut img = sample(Kind::Fat16);
    img.set_all(1, 0xBFFF);
    assert!(reason(&img).contains("disk errors"));
}

#[test]
fn fat_copies_that_disagree_make_the_volume_untrusted() {
    for kind in [Kind::Fat12, Kind::Fat16, Kind::Fat32] {
        let mut img = sample(kind);
        // Copy 2 still shows a file copy 1 deleted: whichever is right, free is unknown.
        img.set(1, 40, img.eoc());
        let why = reason(&img);
        assert!(why.contains("fat copies disagree"), "{kind:?}: {why}");
    }
}

#[test]
fn a_fat_linking_to_a_cluster_past_the_volume_is_untrusted() {
    for kind in [Kind::Fat12, Kind::Fat16, Kind::Fat32] {
        let mut img = sample(kind);
        let past = (img.clusters + 2) as u32;
        img.set_all(3, past);
        assert!(reason(&img).contains("does not exist"), "{kind:?}");
        img.set_all(3, 1);
        assert!(reason(&img).contains("does not exist"), "{kind:?}");
    }
}

#[test]
fn a_fat_not_starting_with_the_media_byte_is_untrusted() {
    let mut img = sample(Kind::Fat16);
    img.set_all(0, 0xFFF0);
    assert!(reason(&img).contains("media byte"));
}

#[test]
fn a_fat32_whose_root_directory_cluster_is_free_is_untrusted() {
    let mut img = sample(Kind::Fat32);
    img.set_all(2, 0);
    assert!(reason(&img).contains("root directory"));
}

#[test]
fn a_fat_boot_sector_left_over_under_another_file_system_is_untrusted() {
    let mut img = sample(Kind::Fat32);
    // mkfs.ext4 over an old FAT32 volume: the superblock at 1024, the FAT boot sector kept.
    img.bytes[1024 + 24] = 2;
    img.bytes[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    assert!(reason(&img).contains("ext2/3/4"));
    let mut img = sample(Kind::Fat32);
    img.bytes[0x1_0040..0x1_0048].copy_from_slice(b"_BHRfS_M");
    assert!(reason(&img).contains("btrfs"));
}

/// The first sector of a volume made by mkntfs, as far as FAT recognition looks: jump, OEM
/// id, 512-byte sectors, 8 sectors per cluster, end marker.
fn ntfs_boot_sector() -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
    b[3..11].copy_from_slice(b"NTFS    ");
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[13] = 8;
    // A FAT-looking BPB besides the OEM id, so only the OEM id tells them apart.
    b[14] = 1;
    b[16] = 2;
    b[21] = 0xF8;
    b[510..512].copy_from_slice(&[0x55, 0xAA]);
    b
}

/// An exFAT main boot sector: jump, "EXFAT   ", the zeroed BPB area, the exFAT fields.
fn exfat_boot_sector() -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    b[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
    b[3..11].copy_from_slice(b"EXFAT   ");
    b[108] = 9; // bytes per sector shift
    b[109] = 3; // sectors per cluster shift
    b[110] = 1; // number of FATs
    b[510..512].copy_from_slice(&[0x55, 0xAA]);
    b
}

#[test]
fn ntfs_exfat_and_blank_volumes_are_not_claimed() {
    let mut exfat_like_fat = exfat_boot_sector();
    // Even with FAT fields set where exFAT keeps zeros, the OEM id says exFAT.
    exfat_like_fat[11..13].copy_from_slice(&512u16.to_le_bytes());
    exfat_like_fat[13] = 8;
    exfat_like_fat[14] = 1;
    exfat_like_fat[16] = 2;
    exfat_like_fat[21] = 0xF8;
    for (name, bytes) in [
        ("ntfs", ntfs_boot_sector()),
        ("exfat", exfat_boot_sector()),
        ("exfat with fat fields", exfat_like_fat),
        ("zeros", vec![0u8; 1 << 20]),
        ("tiny", vec![0xEB; 100]),
    ] {
        let v = ANALYZER.analyze(&MemDevice::new(bytes)).unwrap();
        assert_eq!(v, FsVerdict::NotMine, "{name}");
    }
    let mut no_marker = sample(Kind::Fat16);
    no_marker.bytes[510] = 0;
    assert_eq!(
        ANALYZER.analyze(&no_marker.device()).unwrap(),
        FsVerdict::NotMine
    );
}

#[test]
fn a_failing_read_of_the_fat_is_an_error_not_a_verdict() {
    let img = sample(Kind::Fat16);
    let at = img.fat_offset(1) as u64 + 100;
    let dev = MemDevice::new(img.bytes.clone()).failing(at..at + 1);
    assert_eq!(ANALYZER.analyze(&dev).unwrap_err().kind(), ErrorKind::Io);
}
