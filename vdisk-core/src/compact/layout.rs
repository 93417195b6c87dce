//! Planning block moves: fill holes from the end, each surviving block moved at most once.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::image::{HostLayout, Relocation};
use crate::units::{BlockIndex, HostOffset, align_up};

/// Where a compaction leaves the file: the moves to make and where the block area ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePlan {
    /// The moves, highest source first (the order they should be applied in).
    pub moves: Vec<Relocation>,
    /// End of the last block or metadata after the moves.
    pub data_end: u64,
}

/// Plans moves for the `survivors` (blocks that keep host space, with their footprint start)
/// so that the block area becomes as short as possible.
///
/// Free space is every byte at or after `layout.data_start` not covered by a survivor's
/// footprint or a reserved range. Surviving blocks are taken from the highest down; each goes
/// into the lowest free gap that fits it at an offset aligned from `layout.data_start`, if that
/// gap lies below it. Blocks therefore
/// only move towards the start, into space that no live block or metadata uses at any point,
/// and each moves at most once.
///
/// Fails with `InvalidImage` if survivors overlap each other, a reserved range, or the metadata
/// before `data_start` (the format's open-time validation should have refused such an image).
pub fn plan_moves(layout: &HostLayout, survivors: &[(BlockIndex, HostOffset)]) -> Result<MovePlan> {
    let footprint = layout.block_footprint;
    let align = layout.alignment.max(1);
    let mut occupied: Vec<(Range<u64>, Option<BlockIndex>)> =
        Vec::with_capacity(survivors.len() + layout.reserved.len());
    for r in &layout.reserved {
        occupied.push((r.clone(), None));
    }
    for &(block, HostOffset(host)) in survivors {
        let end = host.checked_add(footprint).ok_or_else(|| {
            Error::invalid(
                format!("block {block} lies past any possible file end"),
                host,
            )
        })?;
        if host < layout.data_start {
            return Err(Error::invalid(
                format!("block {block} overlaps the image's metadata"),
                host,
            ));
        }
        occupied.push((host..end, Some(block)));
    }
    occupied.sort_unstable_by_key(|(r, _)| (r.start, r.end));
    for pair in occupied.windows(2) {
        if pair[1].0.start < pair[0].0.end {
            let what =
                |b: Option<BlockIndex>| b.map_or("metadata".to_string(), |b| format!("block {b}"));
            return Err(Error::invalid(
                format!("{} overlaps {}", what(pair[1].1), what(pair[0].1)),
                pair[1].0.start,
            ));
        }
    }

    // Free gaps between occupied ranges, lowest first.
    let mut gaps: Vec<Range<u64>> = Vec::new();
    let mut cursor = layout.data_start;
    for (r, _) in &occupied {
        if r.start > cursor {
            gaps.push(cursor..r.start);
        }
        cursor = cursor.max(r.end);
    }

    let mut by_host: Vec<(BlockIndex, u64)> = survivors.iter().map(|&(b, h)| (b, h.0)).collect();
    by_host.sort_unstable_by_key(|&(_, h)| std::cmp::Reverse(h));

    let mut moves = Vec::new();
    let mut gap_idx = 0;
    let mut data_end = layout.metadata_end();
    for &(block, host) in &by_host {
        // Skip gaps too small for a block: all blocks have the same footprint, so a gap that
        // cannot take one now never will.
        let slot = loop {
            let Some(gap) = gaps.get(gap_idx) else {
                break None;
            };
            match on_grid(layout.data_start, gap.start, align) {
                Some(start)
                    if start
                        .checked_add(footprint)
                        .is_some_and(|end| end <= gap.end) =>
                {
                    break Some(start);
                }
                _ => gap_idx += 1,
            }
        };
        match slot {
            Some(to) if to < host => {
                moves.push(Relocation {
                    block,
                    from: HostOffset(host),
                    to: HostOffset(to),
                });
                gaps[gap_idx].start = to + footprint;
                data_end = data_end.max(to + footprint);
            }
            // No gap below this block, so none below any lower block either: the rest stay,
            // and (blocks being disjoint) this one ends highest among them.
            _ => {
                data_end = data_end.max(host + footprint);
                break;
            }
        }
    }
    Ok(MovePlan { moves, data_end })
}

/// The first offset at or after `at` that lies `k * align` bytes after `base` (`at >= base`):
/// alignment is measured from the start of the block area, not from the start of the file.
fn on_grid(base: u64, at: u64, align: u64) -> Option<u64> {
    align_up(at.checked_sub(base)?, align)?.checked_add(base)
}

#[cfg(test)]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one reserved range is the case under test"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(
        data_start: u64,
        footprint: u64,
        align: u64,
        reserved: Vec<Range<u64>>,
    ) -> HostLayout {
        HostLayout {
            data_start,
            block_footprint: footprint,
            data_offset: Some(0),
            alignment: align,
            reserved,
            trailer_len: 512,
            end_alignment: 1,
        }
    }

    #[test]
    fn blocks_after_holes_fill_the_holes_from_the_end() {
        // Slots 0..4 of 100 bytes from 1000; blocks in slots 1 and 3 survive.
        let l = layout(1000, 100, 1, vec![]);
        let plan = plan_moves(
            &l,
            &[
                (BlockIndex(7), HostOffset(1100)),
                (BlockIndex(9), HostOffset(1300)),
            ],
        )
        .unwrap();
        assert_eq!(
            plan.moves,
            vec![Relocation {
                block: BlockIndex(9),
                from: HostOffset(1300),
                to: HostOffset(1000)
            }]
        );
        assert_eq!(plan.data_end, 1200);
    }

    #[test]
    fn packed_file_needs_no_moves() {
        let l = layout(0, 10, 1, vec![]);
        let plan = plan_moves(
            &l,
            &[
                (BlockIndex(0), HostOffset(0)),
                (BlockIndex(1), HostOffset(10)),
            ],
        )
        .unwrap();
        assert!(plan.moves.is_empty());
        assert_eq!(plan.data_end, 20);
    }

    #[test]
    fn reserved_ranges_are_skipped_and_kept() {
        let l = layout(0, 10, 1, vec![5..12]);
        let plan = plan_moves(&l, &[(BlockIndex(0), HostOffset(40))]).unwrap();
        assert_eq!(plan.moves[0].to, HostOffset(12));
        assert_eq!(plan.data_end, 22);
    }

    #[test]
    fn overlapping_blocks_are_refused() {
        let l = layout(0, 10, 1, vec![]);
        let err = plan_moves(
            &l,
            &[
                (BlockIndex(0), HostOffset(0)),
                (BlockIndex(1), HostOffset(5)),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
        let err = plan_moves(
            &layout(100, 10, 1, vec![]),
            &[(BlockIndex(0), HostOffset(50))],
        )
        .unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
    }

    #[test]
    fn alignment_is_measured_from_the_start_of_the_block_area() {
        // Slots of 3072 bytes from 512 (a table holding slot numbers): the free slot at 3584 is
        // taken, not the file offset 3072 (a multiple of the alignment but not a slot).
        let l = layout(512, 3072, 3072, vec![]);
        let plan = plan_moves(&l, &[(BlockIndex(0), HostOffset(512 + 3 * 3072))]).unwrap();
        assert_eq!(plan.moves[0].to, HostOffset(512));
        let plan = plan_moves(
            &l,
            &[
                (BlockIndex(0), HostOffset(512)),
                (BlockIndex(1), HostOffset(512 + 3 * 3072)),
            ],
        )
        .unwrap();
        assert_eq!(plan.moves[0].to, HostOffset(512 + 3072));
        // After a reserved range ending off the grid, the next slot on the grid.
        let l = layout(512, 3072, 3072, vec![512..1000]);
        let plan = plan_moves(&l, &[(BlockIndex(0), HostOffset(512 + 3 * 3072))]).unwrap();
        assert_eq!(plan.moves[0].to, HostOffset(512 + 3072));
    }

    #[test]
    fn empty_image_ends_at_metadata() {
        let plan = plan_moves(&layout(64, 10, 1, vec![100..200]), &[]).unwrap();
        assert_eq!(plan.data_end, 200);
    }

    proptest! {
        /// For random slot layouts: moves go down, never collide with anything live, respect
        /// alignment, move each block at most once, and on an aligned grid pack densely.
        #[test]
        fn moves_are_safe_and_pack_densely(
            used in prop::collection::vec(any::<bool>(), 0..200),
            reserved_slot in prop::option::of(0usize..200),
        ) {
            let fp = 4096 + 512;
            let start = 1536;
            let reserved: Vec<Range<u64>> = reserved_slot.map(|s| {
                let a = start + s as u64 * fp; vec![a..a + fp]
            }).unwrap_or_default();
            let survivors: Vec<(BlockIndex, HostOffset)> = used.iter().enumerate()
                .filter(|&(i, &u)| u && Some(i) != reserved_slot)
                .map(|(i, _)| (BlockIndex(i as u64 * 3 % 1000), HostOffset(start + i as u64 * fp)))
                .collect();
            let l = layout(start, fp, 512, reserved.clone());
            let plan = plan_moves(&l, &survivors).unwrap();
            let mut finals: Vec<(u64, u64)> = survivors.iter().map(|&(b, h)| (b.0, h.0)).collect();
            let mut moved = std::collections::HashSet::new();
            for m in &plan.moves {
                prop_assert!(m.to < m.from);
                prop_assert!(m.to.0 % 512 == 0 && m.to.0 >= start);
                prop_assert!(moved.insert(m.block));
                for f in finals.iter_mut().filter(|f| f.0 == m.block.0) { f.1 = m.to.0; }
            }
            let mut ranges: Vec<Range<u64>> = finals.iter().map(|&(_, h)| h..h + fp).chain(reserved.iter().cloned()).collect();
            ranges.sort_by_key(|r| r.start);
            for w in ranges.windows(2) { prop_assert!(w[0].end <= w[1].start); }
            let max_end = ranges.iter().map(|r| r.end).max().unwrap_or(start);
            prop_assert_eq!(plan.data_end, max_end.max(start));
            // Targets never overlap a source that has not moved yet (sources are all live
            // until moved, and targets are gaps at plan time).
            for m in &plan.moves {
                for &(_, h) in &survivors { prop_assert!(m.to.0 + fp <= h.0 || h.0 + fp <= m.to.0); }
            }
            let slots_needed = survivors.len() as u64 + reserved.len() as u64;
            let reserved_beyond = reserved_slot.is_some_and(|s| s as u64 > survivors.len() as u64);
            if !reserved_beyond {
                prop_assert_eq!(plan.data_end, start + slots_needed * fp);
            }
        }
    }
}
