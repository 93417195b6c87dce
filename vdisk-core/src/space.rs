//! The host space map: what every byte range of an image's host file holds, as the format
//! says it and as the compactor checks it before it punches, frees, reuses or cuts a byte.
//!
//! ```text
//!  0                                                                         file end
//!  │ Metadata{fixed} │ BlockData(7) │ Free │ Metadata{movable} │ BlockData(2) │ Trailer │
//! ```

use std::ops::Range;

use crate::error::{Error, Result};
use crate::image::{DiskImage, ImageKind};
use crate::units::BlockIndex;

/// What one host byte range holds. Non-exhaustive: formats may bring uses these do not
/// describe, so a match needs an arm for the rest; the engine treats a use it does not know as
/// fixed metadata (never punched, moved or reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostUse {
    /// The host footprint of one block: everything the block owns (its data, and per-block
    /// metadata such as a VHD sector bitmap or a trailer). Moved, punched and freed whole.
    BlockData(BlockIndex),
    /// The format's own structures: headers, tables, logs, locator data, bitmaps. Never
    /// punched or reused. `movable`: the format can move the range as a whole with
    /// [`crate::Compactable::move_metadata`], and the planner may move it down into free
    /// space like a block; otherwise it stays where it is, and the file never ends before it.
    Metadata {
        /// Whether [`crate::Compactable::move_metadata`] can move it.
        movable: bool,
    },
    /// A structure the format writes anew after the last block when the file is shortened
    /// ([`crate::Compactable::truncate`]; the VHD footer): never punched or reused, and not in
    /// the way of a shrink.
    Trailer,
    /// Used by nothing the image reads: it may be punched, reused or cut off.
    Free,
}

impl HostUse {
    /// Fixed metadata: what the map records where two structures of the format overlap.
    pub const FIXED: HostUse = HostUse::Metadata { movable: false };
}

/// Every byte range of a host file, tagged with what it holds: sorted, disjoint, covering
/// `0..len()` with no gap (what nothing claims is [`HostUse::Free`]). Built only through
/// [`HostSpaceMap::new`], which proves that no block's footprint overlaps metadata or another
/// block, and that every block lies inside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpaceMap {
    ranges: Vec<(Range<u64>, HostUse)>,
}

impl HostSpaceMap {
    /// The map of a `file_len`-byte file whose used ranges are `used` (any order; empty ranges
    /// and [`HostUse::Free`] entries are ignored). Metadata ranges may overlap each other (two
    /// structures sharing a sector): they are merged, into fixed metadata unless all of them
    /// are the same use. Metadata may reach past the file's end (the map then ends with it).
    ///
    /// Refused with [`crate::ErrorKind::InvalidImage`] (the message says nothing was changed:
    /// compaction builds the map before writing) when a block's range overlaps metadata or
    /// another block, or ends past the file's end.
    pub fn new(
        file_len: u64,
        used: impl IntoIterator<Item = (Range<u64>, HostUse)>,
    ) -> Result<HostSpaceMap> {
        let mut all: Vec<(Range<u64>, HostUse)> = used
            .into_iter()
            .filter(|(r, u)| r.start < r.end && *u != HostUse::Free)
            .collect();
        all.sort_unstable_by_key(|(r, _)| (r.start, r.end));
        let what = |u: HostUse| match u {
            HostUse::BlockData(b) => format!("block {b}"),
            _ => "metadata".to_string(),
        };
        let mut ranges: Vec<(Range<u64>, HostUse)> = Vec::with_capacity(all.len() * 2 + 1);
        let mut end = 0;
        for (r, u) in all {
            if let HostUse::BlockData(b) = u
                && r.end > file_len
            {
                return Err(Error::invalid(
                    format!(
                        "block {b} at {:#x} ends past the end of the {file_len}-byte file; \
                         nothing was changed",
                        r.start
                    ),
                    r.start,
                ));
            }
            if r.start < end {
                let (prev, prev_use) = ranges.last_mut().expect("end > 0 means a range");
                let block = |u| matches!(u, HostUse::BlockData(_));
                if block(u) || block(*prev_use) {
                    return Err(Error::invalid(
                        format!(
                            "the host space of {} ({:#x}..{:#x}) overlaps {} ({:#x}..{:#x}); \
                             the image is inconsistent and nothing was changed",
                            what(u),
                            r.start,
                            r.end,
                            what(*prev_use),
                            prev.start,
                            prev.end
                        ),
                        r.start,
                    ));
                }
                if *prev_use != u {
                    *prev_use = HostUse::FIXED;
                }
                prev.end = prev.end.max(r.end);
                end = prev.end;
                continue;
            }
            if r.start > end {
                ranges.push((end..r.start, HostUse::Free));
            }
            end = r.end;
            ranges.push((r, u));
        }
        if file_len > end {
            ranges.push((end..file_len, HostUse::Free));
        }
        Ok(HostSpaceMap { ranges })
    }

    /// The map of `image`'s host file: the format's `fixed` metadata ranges, its `other` used
    /// ranges (movable metadata, the trailer), and each block that holds host space
    /// ([`crate::BlockState::host`]) over `footprint` bytes from there (a fixed image's block
    /// over its visible bytes: its data, in place). What a format's
    /// [`DiskImage::host_space`] usually returns.
    pub fn of_image(
        image: &dyn DiskImage,
        footprint: u64,
        fixed: impl IntoIterator<Item = Range<u64>>,
        other: impl IntoIterator<Item = (Range<u64>, HostUse)>,
    ) -> Result<HostSpaceMap> {
        let blocks = block_ranges(image, footprint)?;
        let used = blocks
            .into_iter()
            .map(|(b, r)| (r, HostUse::BlockData(b)))
            .chain(fixed.into_iter().map(|r| (r, HostUse::FIXED)))
            .chain(other);
        HostSpaceMap::new(image.host_file().len()?, used)
    }

    /// Every range, in host order, covering `0..len()`.
    pub fn ranges(&self) -> &[(Range<u64>, HostUse)] {
        &self.ranges
    }

    /// Where the map ends: the file's length, or the end of metadata that reaches past it.
    pub fn len(&self) -> u64 {
        self.ranges.last().map_or(0, |(r, _)| r.end)
    }

    /// Whether the map covers no byte.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Each block that holds host space, with its range, in block order.
    pub fn blocks(&self) -> Vec<(BlockIndex, Range<u64>)> {
        let mut out: Vec<(BlockIndex, Range<u64>)> = self
            .ranges
            .iter()
            .filter_map(|(r, u)| match u {
                HostUse::BlockData(b) => Some((*b, r.clone())),
                _ => None,
            })
            .collect();
        out.sort_unstable_by_key(|(b, _)| *b);
        out
    }

    /// What holds the byte at `offset` (`None` past the map's end).
    pub fn use_at(&self, offset: u64) -> Option<HostUse> {
        let i = self.ranges.partition_point(|(r, _)| r.end <= offset);
        self.ranges.get(i).map(|(_, u)| *u)
    }

    /// Whether every byte of `range` is [`HostUse::Free`] (bytes past the map's end count as
    /// free: a write there extends the file).
    pub fn is_free(&self, range: Range<u64>) -> bool {
        let i = self.ranges.partition_point(|(r, _)| r.end <= range.start);
        self.ranges[i..]
            .iter()
            .take_while(|(r, _)| r.start < range.end)
            .all(|(_, u)| *u == HostUse::Free)
    }
}

/// Each block of `image` that holds host space, with its range: `footprint` bytes from
/// [`crate::BlockState::host`], or for a fixed image its visible bytes. In block order.
pub(crate) fn block_ranges(
    image: &dyn DiskImage,
    footprint: u64,
) -> Result<Vec<(BlockIndex, Range<u64>)>> {
    let (bs, size) = (image.block_size(), image.size());
    let fixed = image.kind() == ImageKind::Fixed;
    let mut owned = Vec::new();
    for i in 0..image.block_count() {
        let block = BlockIndex(i);
        let Some(host) = image.block_state(block)?.host() else {
            continue;
        };
        let len = match fixed {
            false => footprint,
            true => bs.min(size.saturating_sub(i.saturating_mul(bs))),
        };
        if len == 0 {
            // A fixed image's table entry past the virtual size: no host byte is its own.
            continue;
        }
        let end = host.0.checked_add(len).ok_or_else(|| {
            Error::invalid(
                format!("block {block} lies past any possible file end"),
                host.0,
            )
        })?;
        owned.push((block, host.0..end));
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const META: HostUse = HostUse::FIXED;

    fn blocks(v: &[(u64, Range<u64>)]) -> Vec<(Range<u64>, HostUse)> {
        v.iter()
            .map(|(b, r)| (r.clone(), HostUse::BlockData(BlockIndex(*b))))
            .collect()
    }

    #[test]
    fn the_map_covers_every_byte_and_what_nothing_claims_is_free() {
        let mut used = blocks(&[(1, 300..400), (0, 200..300)]);
        used.push((0..100, META));
        let map = HostSpaceMap::new(500, used).unwrap();
        assert_eq!(
            map.ranges(),
            &[
                (0..100, META),
                (100..200, HostUse::Free),
                (200..300, HostUse::BlockData(BlockIndex(0))),
                (300..400, HostUse::BlockData(BlockIndex(1))),
                (400..500, HostUse::Free),
            ]
        );
        assert_eq!(map.len(), 500);
        assert!(map.is_free(100..200) && map.is_free(450..600));
        assert!(!map.is_free(150..250));
        assert_eq!(map.use_at(99), Some(META));
        assert_eq!(
            map.blocks(),
            vec![(BlockIndex(0), 200..300), (BlockIndex(1), 300..400)]
        );
    }

    #[test]
    fn a_block_over_metadata_or_another_block_or_past_the_end_is_refused() {
        for (bl, len) in [
            (blocks(&[(0, 50..150)]), 1000),
            (blocks(&[(0, 450..550)]), 1000),
            (blocks(&[(0, 200..300), (1, 250..350)]), 1000),
            // A long range reaching over a later, shorter one.
            (blocks(&[(0, 100..450), (1, 300..320)]), 1000),
            (blocks(&[(0, 900..1100)]), 1000),
        ] {
            let used = [(0..100, META), (500..600, META)].into_iter().chain(bl);
            let err = HostSpaceMap::new(len, used).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
            assert!(err.to_string().contains("nothing was changed"), "{err}");
        }
    }

    #[test]
    fn overlapping_metadata_merges_into_fixed_metadata_unless_all_alike() {
        let movable = HostUse::Metadata { movable: true };
        let used = [(0..100, META), (50..150, movable), (200..300, movable)];
        let map = HostSpaceMap::new(300, used.into_iter().chain(blocks(&[]))).unwrap();
        assert_eq!(
            map.ranges(),
            &[
                (0..150, META),
                (150..200, HostUse::Free),
                (200..300, movable)
            ]
        );
        let map = HostSpaceMap::new(100, [(0..60, movable), (40..80, movable)]).unwrap();
        assert_eq!(map.ranges()[0], (0..80, movable));
        // Metadata past the end of the file: the map ends with it.
        assert_eq!(HostSpaceMap::new(10, [(0..20, META)]).unwrap().len(), 20);
    }
}
