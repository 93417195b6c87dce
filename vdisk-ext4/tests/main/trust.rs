//! The trust rules, each on a real volume changed by debugfs (which keeps checksums right,
//! so the rule itself is what is tested) or by a byte flip (checksums).

use super::util::{Volume, analyse, detail, trusted, untrusted};
use vdisk_core::FsAnalyzer;
use vdisk_core::FsVerdict;
use vdisk_core::fs::MemDevice;

fn wsl() -> Volume {
    Volume::make(&["-t", "ext4", "-b", "4096", "-G", "4096"], 32, 8, 200, 2)
}

#[test]
fn a_journal_needing_recovery_is_untrusted_and_tells_a_wsl_user_to_shut_down() {
    let vol = wsl();
    vol.debugfs("feature needs_recovery");
    let reason = untrusted(vol.bytes());
    assert!(
        reason.contains("shut WSL down cleanly with `wsl --shutdown` first"),
        "{reason}"
    );
    assert!(reason.contains("Linux VM"), "{reason}");
}

#[test]
fn an_error_state_or_recorded_errors_are_untrusted() {
    let vol = wsl();
    vol.debugfs("ssv state 3");
    assert!(untrusted(vol.bytes()).contains("errors"));
    let vol = wsl();
    vol.debugfs("ssv error_count 2");
    assert!(untrusted(vol.bytes()).contains("2 since the last check"));
}

#[test]
fn a_volume_not_unmounted_cleanly_is_untrusted() {
    let vol = Volume::make(&["-t", "ext2"], 16, 4, 100, 2);
    vol.debugfs("ssv state 0");
    assert!(untrusted(vol.bytes()).contains("not unmounted cleanly"));
}

#[test]
fn unknown_incompatible_features_are_untrusted() {
    let vol = wsl();
    vol.debugfs("ssv feature_incompat 0x100002c2");
    assert!(untrusted(vol.bytes()).contains("unknown incompatible features (0x10000000)"));
}

#[test]
fn orphans_awaiting_cleanup_keep_their_blocks_used_so_the_volume_stays_trusted() {
    let vol = wsl();
    let before: Vec<_> = trusted(vol.bytes()).free.runs().collect();
    vol.debugfs("ssv last_orphan 12");
    let u = trusted(vol.bytes());
    assert_eq!(detail(&u, "orphans_pending"), "true");
    assert_eq!(u.free.runs().collect::<Vec<_>>(), before);
}

/// The byte offset of group 0's block bitmap, from dumpe2fs.
fn group0_bitmap(vol: &Volume) -> u64 {
    let out = super::util::e2("dumpe2fs", &[vol.path.to_str().unwrap()]);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("Block bitmap at "))
        .unwrap();
    let n: u64 = line.trim_start()["Block bitmap at ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    n * vol.block_size()
}

#[test]
fn checksum_mismatches_in_superblock_descriptors_or_bitmaps_are_untrusted() {
    let vol = wsl();
    let good = vol.bytes();
    let mut sb = good.clone();
    sb[1024 + 0x78] ^= 1; // a label byte: only the checksum notices
    assert!(untrusted(sb).contains("superblock checksum"));
    let mut gd = good.clone();
    gd[4096 + 0x10] ^= 1; // group 0's used-directories count
    assert!(untrusted(gd).contains("group descriptor 0 checksum"));
    let mut bm = good.clone();
    let at = usize::try_from(group0_bitmap(&vol)).unwrap();
    bm[at + 100] ^= 0x10; // a used block of the inode table region
    assert!(untrusted(bm).contains("fails its checksum"));
}

#[test]
fn a_bitmap_that_disagrees_with_its_descriptor_count_is_untrusted_run_e2fsck() {
    let vol = Volume::make(&["-t", "ext2", "-b", "1024"], 16, 8, 100, 2);
    let mut bytes = vol.bytes();
    let at = usize::try_from(group0_bitmap(&vol)).unwrap();
    bytes[at + 2] ^= 0x01; // an inode table block of group 0 now reads free
    let reason = untrusted(bytes);
    assert!(reason.contains("run e2fsck"), "{reason}");
}

#[test]
fn a_file_system_larger_than_its_volume_is_untrusted() {
    let vol = wsl();
    let mut bytes = vol.bytes();
    bytes.truncate(bytes.len() - 4096);
    assert!(untrusted(bytes).contains("larger than"));
}

#[test]
fn no_magic_is_not_mine_and_device_errors_are_errors() {
    assert_eq!(analyse(vec![0; 1 << 20]), FsVerdict::NotMine);
    assert_eq!(analyse(vec![0; 100]), FsVerdict::NotMine);
    let vol = wsl();
    let failing = MemDevice::new(vol.bytes()).failing(4096..4097);
    assert!(vdisk_ext4::ANALYZER.analyze(&failing).is_err());
}

#[test]
fn a_journal_holding_transactions_is_untrusted_even_without_the_recovery_flag() {
    let vol = wsl();
    let bmap = super::util::e2("debugfs", &["-R", "bmap <8> 0", vol.path.to_str().unwrap()]);
    let first: usize = bmap.trim().parse().unwrap();
    let mut bytes = vol.bytes();
    // jbd2 superblock s_start (big-endian, offset 0x1c): the first transaction to replay.
    bytes[first * 4096 + 0x1C..first * 4096 + 0x20].copy_from_slice(&1u32.to_be_bytes());
    assert!(untrusted(bytes).contains("wsl --shutdown"));
}
