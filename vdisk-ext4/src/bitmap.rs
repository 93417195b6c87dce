//! Block bitmaps: one block per group, bit `i` (least significant first in each byte) stands
//! for cluster `i` of the group; 1 = in use. Bits past the group's last existing cluster are
//! padding (mke2fs sets them) and never mean free. A group whose bitmap was never written
//! (`BLOCK_UNINIT`) gets the bitmap the kernel would compute for it ([`uninit`]).

use std::ops::Range;

use crate::group;
use crate::group_desc::GroupDesc;
use crate::superblock::Geometry;

/// Calls `free` with each run of clear bits among the first `n` bits of `bits` (bits beyond
/// `bits` count as set), in order; returns how many bits were clear.
pub(crate) fn for_each_free_run(bits: &[u8], n: u64, mut free: impl FnMut(Range<u64>)) -> u64 {
    let n = n.min(bits.len() as u64 * 8);
    let mut open: Option<u64> = None;
    let mut count = 0;
    let mut i = 0u64;
    while i < n {
        let at = usize::try_from(i / 8).unwrap_or(usize::MAX);
        // Whole 64-bit words of one state at a word boundary: one step.
        if i.is_multiple_of(64)
            && n - i >= 64
            && let Some(w) = bits.get(at..at + 8)
        {
            let w = u64::from_le_bytes(w.try_into().unwrap_or([0xFF; 8]));
            if w == 0 {
                open.get_or_insert(i);
                count += 64;
                i += 64;
                continue;
            }
            if w == u64::MAX {
                if let Some(s) = open.take() {
                    free(s..i);
                }
                i += 64;
                continue;
            }
        }
        let set = bits.get(at).is_none_or(|b| b & (1 << (i % 8)) != 0);
        if set {
            if let Some(s) = open.take() {
                free(s..i);
            }
        } else {
            open.get_or_insert(i);
            count += 1;
        }
        i += 1;
    }
    if let Some(s) = open {
        free(s..n);
    }
    count
}

/// The block bitmap the kernel computes for group `g` whose bitmap is not initialised
/// (`ext4_init_block_bitmap`): the base metadata at the group's start, and the group's own
/// block bitmap, inode bitmap and inode table when they lie inside the group (with `flex_bg`
/// they usually lie in another group). Everything else in the group is free.
pub(crate) fn uninit(geo: &Geometry, g: u64, desc: &GroupDesc) -> Vec<u8> {
    let bytes = usize::try_from(geo.clusters_per_group / 8).unwrap_or(0);
    let mut bits = vec![0u8; bytes];
    let first = geo.group_first_block(g);
    let end = first + geo.group_blocks(g);
    let mut mark = |blocks: Range<u64>| {
        let from = blocks.start.max(first);
        let to = blocks.end.min(end);
        if from >= to {
            return;
        }
        for c in (from - first) / geo.cluster_ratio..(to - first).div_ceil(geo.cluster_ratio) {
            if let Some(b) = usize::try_from(c / 8).ok().and_then(|i| bits.get_mut(i)) {
                *b |= 1 << (c % 8);
            }
        }
    };
    let meta = group::meta_start(geo, g);
    mark(meta..meta.saturating_add(group::base_meta_blocks(geo, g)));
    mark(desc.block_bitmap..desc.block_bitmap.saturating_add(1));
    mark(desc.inode_bitmap..desc.inode_bitmap.saturating_add(1));
    mark(desc.inode_table..desc.inode_table.saturating_add(inode_table_blocks(geo)));
    bits
}

/// Blocks of one group's inode table.
pub(crate) fn inode_table_blocks(geo: &Geometry) -> u64 {
    (geo.inodes_per_group * geo.inode_size).div_ceil(geo.block_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(bits: &[u8], n: u64) -> Vec<Range<u64>> {
        let mut runs: Vec<Range<u64>> = Vec::new();
        for i in 0..n.min(bits.len() as u64 * 8) {
            let clear = bits[(i / 8) as usize] & (1 << (i % 8)) == 0;
            if clear {
                match runs.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => runs.push(i..i + 1),
                }
            }
        }
        runs
    }

    proptest! {
        /// The runs are exactly the clear bits, bit by bit, whatever mix of whole zero and
        /// one words and ragged bytes the bitmap holds.
        #[test]
        fn free_runs_are_exactly_the_clear_bits(
            words in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..300),
            n in 0u64..2600,
        ) {
            let mut runs = Vec::new();
            let count = for_each_free_run(&words, n, |r| runs.push(r));
            let want = model(&words, n);
            prop_assert_eq!(count, want.iter().map(|r| r.end - r.start).sum::<u64>());
            prop_assert_eq!(runs, want);
        }
    }

    #[test]
    fn padding_past_the_last_cluster_is_never_free() {
        let mut runs = Vec::new();
        assert_eq!(for_each_free_run(&[0u8; 16], 70, |r| runs.push(r)), 70);
        assert_eq!(runs, vec![0..70]);
        runs.clear();
        assert_eq!(for_each_free_run(&[0u8; 2], 70, |r| runs.push(r)), 16);
        assert_eq!(runs, vec![0..16]);
    }
}
