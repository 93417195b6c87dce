//! The analyser over volumes made by `mkfs.exfat` (exfatprogs; a missing tool fails the test):
//! free clusters against `dump.exfat`'s count, each trust rule, damage and foreign volumes.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;
use vdisk_core::fs::MemDevice;
use vdisk_core::testing::noise;
use vdisk_core::{FsAnalyzer, FsUsage, FsVerdict};
use vdisk_exfat::ANALYZER;

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is missing: install the Debian package `exfatprogs`");
}

/// A 32 MiB volume of random bytes formatted by mkfs.exfat with 4 KiB clusters (made once,
/// copied for each use).
fn made() -> Vec<u8> {
    static VOLUME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    VOLUME.get_or_init(format).clone()
}

fn format() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!(
        "vdisk-exfat-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vol");
    let bytes = noise(32 << 20, 0x9E37_79B9_7F4A_7C15);
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(tool("mkfs.exfat"))
        .args(["-c", "4K", "-L", "TESTEX"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dump = Command::new(tool("dump.exfat"))
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dump.stdout).to_string();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let free: u64 = text
        .lines()
        .find(|l| l.starts_with("Free Clusters:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let usage = analysed(&bytes);
    assert_eq!(
        detail(&usage, "free_clusters"),
        free.to_string(),
        "vs dump.exfat"
    );
    bytes
}

fn analysed(bytes: &[u8]) -> FsUsage {
    match ANALYZER.analyze(&MemDevice::new(bytes.to_vec())).unwrap() {
        FsVerdict::Analysed(u) => u,
        other => panic!("{other:?}"),
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
fn reason(bytes: &[u8]) -> String {
    match ANALYZER.analyze(&MemDevice::new(bytes.to_vec())).unwrap() {
        FsVerdict::Untrusted {
            fs: "exfat",
            reason,
        } => reason,
        other => panic!("expected untrusted, got {other:?}"),
    }
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Recomputes the main boot region's checksum after an edit of sector 0 (512-byte sectors).
fn reseal(b: &mut [u8]) {
    let mut sum = 0u32;
    for (i, &v) in b[..11 * 512].iter().enumerate() {
        if !matches!(i, 106 | 107 | 112) {
            sum = sum.rotate_right(1).wrapping_add(u32::from(v));
        }
    }
    for at in (11 * 512..12 * 512).step_by(4) {
        b[at..at + 4].copy_from_slice(&sum.to_le_bytes());
    }
}

#[test]
fn the_free_clusters_are_the_heap_clusters_the_bitmap_leaves_clear() {
    let b = made();
    let u = analysed(&b);
    assert_eq!(u.fs, "exfat");
    assert_eq!(u.cluster_size, 4096);
    assert_eq!(detail(&u, "label"), "TESTEX");
    let heap = le32(&b, 88) * 512;
    let clusters = le32(&b, 92);
    let first = u.free.runs().next().unwrap();
    assert!(first.start >= heap, "{first:?} before the heap at {heap}");
    let end = heap + clusters * 4096;
    assert!(u.free.runs().all(|r| r.end <= end));
    let free: u64 = detail(&u, "free_clusters").parse().unwrap();
    assert_eq!(u.free.free_bytes(), free * 4096);
}

#[test]
fn a_dirty_volume_is_untrusted() {
    let mut b = made();
    b[106] |= 0x02; // VolumeDirty: outside the checksum, as drivers set it
    assert_eq!(
        reason(&b),
        "the volume was not unmounted cleanly; run fsck.exfat or chkdsk"
    );
}

#[test]
fn media_failure_and_a_second_active_fat_are_untrusted() {
    let mut b = made();
    b[106] |= 0x04;
    assert!(reason(&b).contains("media failures"));
    let mut b = made();
    b[106] |= 0x01;
    assert!(reason(&b).contains("TexFAT"));
    let mut b = made();
    b[110] = 2;
    reseal(&mut b);
    let why = reason(&b);
    assert!(why.contains("TexFAT") || why.contains("overlaps"), "{why}");
}

#[test]
fn a_boot_region_whose_checksum_does_not_match_is_untrusted() {
    let mut b = made();
    b[200] ^= 0xFF; // boot code, covered by the checksum
    assert!(reason(&b).contains("checksum"));
}

#[test]
fn a_bitmap_that_marks_its_own_cluster_free_is_untrusted() {
    let mut b = made();
    // dump.exfat: the bitmap starts at cluster 2 on a fresh volume; its bit is bit 0.
    let heap = (le32(&b, 88) * 512) as usize;
    b[heap] &= !1;
    assert!(reason(&b).contains("allocation bitmap"));
}

#[test]
fn fields_out_of_bounds_are_untrusted_not_panics() {
    for (at, value) in [
        (72usize, u32::MAX), // volume length past the volume
        (80, 3),             // FAT inside the boot regions
        (84, 1),             // FAT too small
        (92, 0),             // no clusters
        (92, u32::MAX),      // more clusters than the volume holds
        (96, 1),             // root cluster outside the heap
    ] {
        let mut b = made();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        reseal(&mut b);
        let why = reason(&b);
        assert!(why.contains("boot sector is damaged"), "{at}: {why}");
    }
    let mut b = made();
    b[108] = 13;
    reseal(&mut b);
    assert!(reason(&b).contains("bytes per sector"));
}

#[test]
fn fat_ntfs_and_blank_volumes_are_not_claimed() {
    let mut fat = vec![0u8; 1 << 20];
    fat[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    fat[3..11].copy_from_slice(b"mkfs.fat");
    fat[510..512].copy_from_slice(&[0x55, 0xAA]);
    let mut ntfs = fat.clone();
    ntfs[3..11].copy_from_slice(b"NTFS    ");
    for bytes in [fat, ntfs, vec![0u8; 1 << 20], vec![1u8; 100]] {
        assert_eq!(
            ANALYZER.analyze(&MemDevice::new(bytes)).unwrap(),
            FsVerdict::NotMine
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any few bytes changed in the boot region, FAT, bitmap or root directory (checksum
    /// resealed so damage gets past it): no panic, and nothing before the heap is ever free.
    #[test]
    fn mutated_metadata_never_panics_nor_frees_metadata(
        edits in proptest::collection::vec((0usize..(3 << 20), any::<u8>()), 1..6),
    ) {
        let base = made();
        let heap = (le32(&base, 88) * 512) as usize;
        let mut b = base.clone();
        let span = (heap + (64 << 10)).min(b.len());
        for (at, v) in edits {
            b[at % span] = v;
        }
        reseal(&mut b);
        if let FsVerdict::Analysed(u) = ANALYZER.analyze(&MemDevice::new(b.clone())).unwrap()
            && b[..512] == base[..512]
        {
            prop_assert!(!u.free.any_free(&(0..heap as u64)));
        }
    }
}
