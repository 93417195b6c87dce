//! Integration tests of vdisk-swap over areas made by `mkswap` (util-linux; a missing tool
//! fails the test) and edited the way hibernation and damage edit them.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test areas are small and tests run on 64-bit hosts"
)]

use std::process::Command;

use vdisk_core::fs::MemDevice;
use vdisk_core::testing::noise;
use vdisk_core::{FsAnalyzer, FsVerdict};
use vdisk_swap::ANALYZER;

const PAGE: usize = 4096;

/// An 8 MiB swap area made by mkswap over random bytes, label "VSWAP", with `extra` flags.
fn made(extra: &[&str]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!(
        "vdisk-swap-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("swap");
    let bytes = noise(8 << 20, 0x2545_F491_4F6C_DD1D);
    std::fs::write(&file, bytes).unwrap();
    let mkswap = ["/usr/sbin/mkswap", "/sbin/mkswap"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("mkswap is missing: install the Debian package `util-linux`");
    let out = Command::new(mkswap)
        .args(["-L", "VSWAP", "-p", "4096"])
        .args(extra)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let b = std::fs::read(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    b
}

fn verdict(b: &[u8]) -> FsVerdict {
    ANALYZER.analyze(&MemDevice::new(b.to_vec())).unwrap()
}

#[track_caller]
fn reason(b: &[u8]) -> String {
    match verdict(b) {
        FsVerdict::Untrusted { fs: "swap", reason } => reason,
        other => panic!("expected untrusted, got {other:?}"),
    }
}

#[test]
fn every_page_but_the_header_of_a_swap_area_is_free() {
    let b = made(&[]);
    let FsVerdict::Analysed(u) = verdict(&b) else {
        panic!("{:?}", verdict(&b));
    };
    assert_eq!(u.fs, "swap");
    assert_eq!(
        u.free.runs().collect::<Vec<_>>(),
        vec![PAGE as u64..b.len() as u64]
    );
    let label = u.details.iter().find(|(k, _)| k == "label").unwrap();
    assert_eq!(label.1, "VSWAP");
}

#[test]
fn bad_pages_and_pages_past_the_area_are_kept() {
    let mut b = made(&[]);
    // Two bad pages, as `mkswap -c` records them; an area shorter than its volume.
    b[1032..1036].copy_from_slice(&2u32.to_le_bytes());
    b[1536..1540].copy_from_slice(&5u32.to_le_bytes());
    b[1540..1544].copy_from_slice(&9u32.to_le_bytes());
    b[1028..1032].copy_from_slice(&1000u32.to_le_bytes());
    let FsVerdict::Analysed(u) = verdict(&b) else {
        panic!("{:?}", verdict(&b));
    };
    let p = PAGE as u64;
    assert_eq!(
        u.free.runs().collect::<Vec<_>>(),
        vec![p..5 * p, 6 * p..9 * p, 10 * p..1001 * p]
    );
}

#[test]
fn a_hibernation_image_makes_the_area_untrusted() {
    for sig in [
        &b"S1SUSPEND\0"[..],
        b"S2SUSPEND\0",
        b"ULSUSPEND\0",
        b"LINHIB0001",
    ] {
        let mut b = made(&[]);
        b[PAGE - 10..PAGE].copy_from_slice(sig);
        assert_eq!(
            reason(&b),
            "a hibernated system's memory image is stored here; resume or boot the system and \
             shut it down first"
        );
    }
}

#[test]
fn old_version_0_swap_is_untrusted_and_other_volumes_are_not_claimed() {
    let mut b = made(&[]);
    b[PAGE - 10..PAGE].copy_from_slice(b"SWAP-SPACE");
    assert!(reason(&b).contains("version 0"));
    assert_eq!(verdict(&vec![0u8; 1 << 20]), FsVerdict::NotMine);
    assert_eq!(verdict(&[0u8; 100]), FsVerdict::NotMine);
}

#[test]
fn damaged_header_fields_are_untrusted() {
    for (at, value, what) in [
        (1024usize, 2u32, "version 2"),
        (1024, 0x0100_0000, "other byte order"),
        (1028, 0, "last page is 0"),
        (1028, 1 << 20, "last page is"),
        (1032, 1 << 20, "bad pages"),
    ] {
        let mut b = made(&[]);
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let why = reason(&b);
        assert!(why.contains(what), "{at}: {why}");
    }
    let mut b = made(&[]);
    b[1032..1036].copy_from_slice(&1u32.to_le_bytes());
    b[1536..1540].copy_from_slice(&0u32.to_le_bytes());
    assert!(reason(&b).contains("bad page 0"));
}

#[test]
fn a_fat_boot_sector_in_the_boot_bits_makes_the_area_untrusted() {
    let mut b = made(&[]);
    b[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    b[3..11].copy_from_slice(b"mkfs.fat");
    b[510..512].copy_from_slice(&[0x55, 0xAA]);
    assert!(reason(&b).contains("fat boot sector"));
}

#[test]
fn a_64k_page_swap_area_is_found() {
    let mut b = vec![0u8; 1 << 20];
    b[65536 - 10..65536].copy_from_slice(b"SWAPSPACE2");
    b[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    b[1028..1032].copy_from_slice(&15u32.to_le_bytes());
    let FsVerdict::Analysed(u) = verdict(&b) else {
        panic!("{:?}", verdict(&b));
    };
    assert_eq!(u.cluster_size, 65536);
    assert_eq!(u.free.runs().collect::<Vec<_>>(), vec![65536..1 << 20]);
}
