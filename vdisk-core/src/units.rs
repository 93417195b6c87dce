//! Newtypes for the address spaces a compactor mixes up (STYLE.md habit 4), and sizes.

use std::fmt;
use std::ops::Range;

/// Bytes in a VHD/VHDX sector as addressed by tables (logical sectors may be larger).
pub const SECTOR: u64 = 512;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// A byte offset in the image file on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostOffset(pub u64);

/// A byte offset in the virtual disk as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtOffset(pub u64);

/// The index of an allocation unit (VHD/VHDX block) of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockIndex(pub u64);

impl fmt::Display for HostOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two or any non-zero value).
/// Returns `None` on overflow.
pub fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align > 0);
    value.checked_next_multiple_of(align)
}

/// One piece of a byte range cut at block boundaries (see [`block_spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpan {
    /// The block the piece lies in.
    pub block: u64,
    /// Offset of the piece within its block.
    pub within: u64,
    /// Virtual offset of the piece.
    pub offset: u64,
    /// Where the piece lies in the caller's buffer.
    pub buf: Range<usize>,
}

/// Cuts `len` bytes at virtual `offset` into pieces that each lie within one block of
/// `block_size` bytes (0 counts as 1), in order. Callers check the range first; offsets
/// saturate rather than wrap.
pub fn block_spans(offset: u64, len: usize, block_size: u64) -> impl Iterator<Item = BlockSpan> {
    let bs = block_size.max(1);
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset.saturating_add(done as u64);
        let (block, within) = (pos / bs, pos % bs);
        let n = usize::try_from(bs - within).map_or(len - done, |r| r.min(len - done));
        let span = BlockSpan {
            block,
            within,
            offset: pos,
            buf: done..done + n,
        };
        done += n;
        Some(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pieces tile the buffer in order, each inside one block, at the right place.
        #[test]
        fn spans_tile_the_range_within_blocks(offset in 0u64..1 << 40, len in 0usize..100_000, bs in 1u64..70_000) {
            let mut next = 0usize;
            for s in block_spans(offset, len, bs) {
                prop_assert_eq!(s.buf.start, next);
                prop_assert!(s.buf.end > s.buf.start);
                prop_assert_eq!(s.offset, offset + s.buf.start as u64);
                prop_assert_eq!(s.block * bs + s.within, s.offset);
                prop_assert!(s.within + (s.buf.len() as u64) <= bs);
                next = s.buf.end;
            }
            prop_assert_eq!(next, len);
        }
    }
}
