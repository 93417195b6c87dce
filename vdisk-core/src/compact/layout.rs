//! Planning moves: fill holes from the end, each surviving block and each movable metadata
//! range moved at most once, into space no live data uses.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::image::{HostLayout, Relocation};
use crate::space::{HostSpaceMap, HostUse};
use crate::units::{BlockIndex, HostOffset, align_up};

/// One metadata move: the structure at `from` goes to `to..to + from.len()` (to < from.start,
/// into space free at plan time), through [`crate::Compactable::move_metadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataMove {
    /// Where the structure lies now (a movable metadata range of the host space map).
    pub from: Range<u64>,
    /// Where it will start.
    pub to: u64,
}

/// Where a compaction leaves the file: the moves to make and where the block area ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePlan {
    /// The block moves, highest source first (the order they should be applied in).
    pub moves: Vec<Relocation>,
    /// The metadata moves, highest source first.
    pub metadata_moves: Vec<MetadataMove>,
    /// End of the last block or metadata after the moves.
    pub data_end: u64,
}

/// What may move: a surviving block or a movable metadata range.
#[derive(Clone, Copy)]
enum Mover {
    Block(BlockIndex),
    Metadata,
}

/// Plans moves over the host space map `space` so that the block area becomes as short as
/// possible. Blocks for which `keep` says false are being freed: their space counts as free.
///
/// Free space is every byte at or after `layout.data_start` that the map calls free or that a
/// freed block holds. The surviving blocks and the movable metadata ranges are taken from the
/// highest down; each goes into the lowest free gap that fits it at an offset on the grid
/// ([`HostLayout::alignment`] measured from `layout.data_start`), if that gap lies below it.
/// Everything therefore only moves towards the start, into space that nothing live uses at
/// any point, and moves at most once; fixed metadata and trailers stay where they are.
///
/// Fails with `InvalidImage` if a surviving block lies before `data_start` (the format's
/// open-time validation should have refused such an image; the map has already proven that
/// blocks overlap neither each other nor metadata).
pub fn plan_moves(
    layout: &HostLayout,
    space: &HostSpaceMap,
    keep: &dyn Fn(BlockIndex) -> bool,
) -> Result<MovePlan> {
    let footprint = layout.block_footprint;
    let align = layout.alignment.max(1);
    let mut data_end = layout.data_start;
    let mut movers: Vec<(Range<u64>, Mover)> = Vec::new();
    // Free gaps between what stays or is live, lowest first.
    let mut gaps: Vec<Range<u64>> = Vec::new();
    let mut cursor = layout.data_start;
    for (r, u) in space.ranges() {
        let mover = match *u {
            HostUse::Free => continue,
            HostUse::BlockData(b) if !keep(b) => continue,
            HostUse::BlockData(b) if r.start < layout.data_start => {
                return Err(Error::invalid(
                    format!("block {b} overlaps the image's metadata"),
                    r.start,
                ));
            }
            HostUse::BlockData(b) => Some(Mover::Block(b)),
            HostUse::Metadata { movable: true } => Some(Mover::Metadata),
            HostUse::Trailer => None,
            // Fixed metadata, and uses this engine does not know, stay.
            _ => {
                data_end = data_end.max(r.end);
                None
            }
        };
        if let Some(m) = mover {
            movers.push((r.clone(), m));
        }
        if r.start > cursor {
            gaps.push(cursor..r.start);
        }
        cursor = cursor.max(r.end);
    }
    movers.sort_unstable_by_key(|(r, _)| std::cmp::Reverse(r.start));

    let (mut moves, mut metadata_moves) = (Vec::new(), Vec::new());
    let mut block_gap = 0;
    for (r, mover) in movers {
        let len = r.end - r.start;
        let slot = match mover {
            // Blocks all have the same footprint, so a gap that cannot take one now never
            // will: the search resumes where the last one stopped.
            Mover::Block(_) => loop {
                let Some(gap) = gaps.get(block_gap) else {
                    break None;
                };
                match fit(gap, layout.data_start, align, footprint) {
                    Some(to) => break Some((block_gap, to)),
                    None => block_gap += 1,
                }
            },
            Mover::Metadata => (0..gaps.len()).find_map(|i| {
                let to = fit(&gaps[i], layout.data_start, align, len)?;
                Some((i, to))
            }),
        };
        match slot {
            Some((i, to)) if to < r.start => {
                gaps[i].start = to + len;
                data_end = data_end.max(to + len);
                match mover {
                    Mover::Block(block) => moves.push(Relocation {
                        block,
                        from: HostOffset(r.start),
                        to: HostOffset(to),
                    }),
                    Mover::Metadata => metadata_moves.push(MetadataMove { from: r, to }),
                }
            }
            _ => data_end = data_end.max(r.end),
        }
    }
    Ok(MovePlan {
        moves,
        metadata_moves,
        data_end,
    })
}

/// Where in `gap` something of `len` bytes fits on the grid of `align` from `base`.
fn fit(gap: &Range<u64>, base: u64, align: u64, len: u64) -> Option<u64> {
    let start = on_grid(base, gap.start, align)?;
    (start.checked_add(len)? <= gap.end).then_some(start)
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

    /// A layout, with the fixed metadata ranges `reserved` (and the space before
    /// `data_start`) for [`plan_moves`].
    fn layout(
        data_start: u64,
        footprint: u64,
        align: u64,
        reserved: Vec<Range<u64>>,
    ) -> (HostLayout, Vec<Range<u64>>) {
        let l = HostLayout {
            data_start,
            block_footprint: footprint,
            data_offset: Some(0),
            alignment: align,
            trailer_len: 512,
            end_alignment: 1,
        };
        (l, reserved)
    }

    /// Plans over the map of a file holding the fixed metadata and the survivors.
    fn plan_moves(
        (l, reserved): &(HostLayout, Vec<Range<u64>>),
        survivors: &[(BlockIndex, HostOffset)],
    ) -> Result<MovePlan> {
        let fp = l.block_footprint;
        let used: Vec<(Range<u64>, HostUse)> = reserved
            .iter()
            .map(|r| (r.clone(), HostUse::FIXED))
            .chain(
                survivors
                    .iter()
                    .map(|&(b, h)| (h.0..h.0 + fp, HostUse::BlockData(b))),
            )
            .collect();
        let len = used.iter().map(|(r, _)| r.end).max().unwrap_or(0);
        super::plan_moves(l, &HostSpaceMap::new(len, used)?, &|_| true)
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

    proptest! {
        /// For random mixes of blocks, movable metadata of any length and a fixed range: every
        /// move (block or metadata) goes down, onto the grid, into space the map called free,
        /// each source at most once; afterwards nothing overlaps, and the block area ends
        /// where the last range does.
        #[test]
        fn movable_metadata_moves_down_once_onto_the_grid_into_free_space(
            kinds in prop::collection::vec(0u8..3, 0..120),
            lens in prop::collection::vec(1u64..4608, 120),
            fixed_slot in prop::option::of(0usize..120),
        ) {
            let (fp, start) = (4096 + 512, 1536);
            let l = HostLayout {
                data_start: start,
                block_footprint: fp,
                data_offset: Some(0),
                alignment: 512,
                trailer_len: 0,
                end_alignment: 1,
            };
            let mut used = Vec::new();
            for (i, &k) in kinds.iter().enumerate() {
                let at = start + i as u64 * fp;
                match k {
                    _ if Some(i) == fixed_slot => used.push((at..at + fp, HostUse::FIXED)),
                    1 => used.push((at..at + fp, HostUse::BlockData(BlockIndex(i as u64)))),
                    2 => used.push((at..at + lens[i], HostUse::Metadata { movable: true })),
                    _ => {}
                }
            }
            let end = start + kinds.len() as u64 * fp;
            let map = HostSpaceMap::new(end, used.clone()).unwrap();
            let plan = super::plan_moves(&l, &map, &|_| true).unwrap();
            let mut finals: Vec<Range<u64>> = Vec::new();
            let mut moved = std::collections::HashSet::new();
            let mut targets: Vec<(u64, u64)> = plan.moves.iter().map(|m| (m.from.0, m.to.0)).collect();
            targets.extend(plan.metadata_moves.iter().map(|m| (m.from.start, m.to)));
            for (r, _) in &used {
                let len = r.end - r.start;
                let to = match targets.iter().find(|(from, _)| *from == r.start) {
                    Some(&(_, to)) => {
                        prop_assert!(to < r.start && (to - start) % 512 == 0);
                        prop_assert!(map.is_free(to..to + len), "target {} not free", to);
                        prop_assert!(moved.insert(r.start));
                        to
                    }
                    None => r.start,
                };
                finals.push(to..to + len);
            }
            prop_assert_eq!(targets.len(), moved.len());
            finals.sort_by_key(|r| r.start);
            for w in finals.windows(2) { prop_assert!(w[0].end <= w[1].start, "{:?}", w); }
            let max_end = finals.iter().map(|r| r.end).max().unwrap_or(start);
            prop_assert_eq!(plan.data_end, max_end.max(start));
        }
    }
}
