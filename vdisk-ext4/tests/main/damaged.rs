//! Damaged volumes: random byte changes in the metadata of real volumes. The analyser never
//! panics (its own guard would turn a panic into an untrusted "gave up", which counts as a
//! failure here), never returns `Err` for an in-memory volume, and on a volume with
//! `metadata_csum` never reports free a byte that was not free before the damage: every
//! structure that decides free space is under a checksum or cross-checked.

use proptest::prelude::*;
use std::sync::OnceLock;

use super::util::{Volume, analyse};
use vdisk_core::FsVerdict;

/// (bytes, free runs) of a WSL-style ext4 (4 KiB blocks, flex_bg, metadata_csum): its block
/// bitmap is at block 5, the inode table from block 6, the journal inode in it.
fn wsl() -> &'static (Vec<u8>, Vec<std::ops::Range<u64>>) {
    static V: OnceLock<(Vec<u8>, Vec<std::ops::Range<u64>>)> = OnceLock::new();
    V.get_or_init(|| {
        let vol = Volume::make(&["-t", "ext4", "-b", "4096", "-G", "4096"], 32, 8, 200, 2);
        let bytes = vol.bytes();
        let free = vol.dumpe2fs_free();
        (bytes, free)
    })
}

/// An ext2 with 1 KiB blocks: no checksums at all.
fn ext2() -> &'static Vec<u8> {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| Volume::make(&["-t", "ext2", "-b", "1024"], 8, 8, 100, 2).bytes())
}

/// Offsets worth damaging in the WSL volume: superblock, descriptors, block bitmap, the
/// journal inode, anywhere in the metadata.
fn wsl_offset() -> impl Strategy<Value = usize> {
    prop_oneof![
        1024usize..2048,
        4096usize..4096 + 64,
        5 * 4096usize..6 * 4096,
        6 * 4096usize + 7 * 256..6 * 4096 + 8 * 256,
        0usize..518 * 4096,
    ]
}

fn not_given_up(v: &FsVerdict) {
    if let FsVerdict::Untrusted { reason, .. } = v {
        assert!(
            !reason.contains("gave up"),
            "the analyser panicked: {reason}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn damaged_metadata_csum_volumes_never_free_a_byte_that_was_in_use(
        edits in proptest::collection::vec((wsl_offset(), any::<u8>()), 1..4),
    ) {
        let (good, free) = wsl();
        let mut bytes = good.clone();
        for (at, x) in &edits {
            bytes[*at] ^= x.max(&1);
        }
        let v = analyse(bytes);
        not_given_up(&v);
        if let FsVerdict::Analysed(u) = v {
            for r in u.free.runs() {
                let k = free.partition_point(|f| f.end <= r.start);
                prop_assert!(
                    free.get(k).is_some_and(|f| f.start <= r.start && r.end <= f.end),
                    "{r:?} reported free after {edits:?}, but it was in use"
                );
            }
        }
    }

    #[test]
    fn damaged_volumes_without_checksums_never_panic_or_fail(
        edits in proptest::collection::vec((0usize..160 * 1024, any::<u8>()), 1..8),
    ) {
        let mut bytes = ext2().clone();
        for (at, x) in &edits {
            bytes[*at] ^= x.max(&1);
        }
        not_given_up(&analyse(bytes));
    }
}
