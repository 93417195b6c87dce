//! Checks for crash tests of the file-system-aware modes (DESIGN.md section 3): which blocks
//! a compaction may free, and a content check that lets exactly those read zeros.

use std::ops::Range;

use super::whole_disk;
use crate::image::DiskImage;
use crate::zero::is_zero;

/// The blocks of `block_size` (clamped to a disk of `size` bytes) that lie wholly inside one of
/// `ranges` (sorted, disjoint, coalesced): what a file-system-aware compaction may free when
/// `ranges` is its `fs_free`.
pub fn blocks_inside(ranges: &[Range<u64>], block_size: u64, size: u64) -> Vec<Range<u64>> {
    let bs = block_size.max(1);
    let mut out = Vec::new();
    for r in ranges {
        let mut start = r.start.next_multiple_of(bs);
        while start < size.min(r.end) {
            let end = (start + bs).min(size);
            if end > r.end {
                break;
            }
            out.push(start..end);
            start += bs;
        }
    }
    out
}

/// The content check of the file-system-aware modes (DESIGN.md section 3): every byte reads as
/// before, except that each block the compaction may free (wholly inside the file system's
/// free space) reads either as before or all zeros, as a whole, never anything else.
///
/// Use [`MayZero::content`] as [`CrashCase::content`](super::CrashCase::content): it reads the whole disk and replaces
/// each such block by zeros if it reads as before or as zeros, and leaves it as read otherwise
/// (so the comparison with the model fails). [`MayZero::freed`], from [`CrashCase::inspect`](super::CrashCase::inspect),
/// names an offending block and counts the freed ones.
#[derive(Debug)]
pub struct MayZero {
    original: Vec<u8>,
    blocks: Vec<Range<u64>>,
}

impl MayZero {
    /// `original` is the whole virtual disk before the operation; `blocks` the virtual byte
    /// ranges that may become zero (see [`blocks_inside`]).
    pub fn new(original: Vec<u8>, blocks: Vec<Range<u64>>) -> MayZero {
        MayZero { original, blocks }
    }

    /// The blocks that may become zero.
    pub fn blocks(&self) -> &[Range<u64>] {
        &self.blocks
    }

    /// The whole disk of `image`, each block that may become zero normalised as described on
    /// [`MayZero`]. Panics if the disk cannot be read.
    pub fn content(&self, image: &dyn DiskImage) -> Vec<u8> {
        let mut disk = whole_disk(image);
        for r in self.blocks.iter().map(span) {
            let now = &disk[r.clone()];
            if is_zero(now) || now == &self.original[r.clone()] {
                disk[r].fill(0);
            }
        }
        disk
    }

    /// How many of the blocks that held data read zeros in `image` (reading only those
    /// blocks); or, as a message, the first block that reads neither as before nor as zeros.
    /// Bytes outside the blocks are [`MayZero::content`]'s to check.
    pub fn freed(&self, image: &dyn DiskImage) -> std::result::Result<u64, String> {
        let mut zeroed = 0;
        let mut buf = Vec::new();
        for (b, r) in self.blocks.iter().zip(self.blocks.iter().map(span)) {
            buf.resize(r.len(), 0);
            image
                .read_at(&mut buf, b.start)
                .map_err(|e| format!("free block {:#x}..{:#x}: {e}", b.start, b.end))?;
            let before = &self.original[r];
            if buf != before {
                if !is_zero(&buf) {
                    return Err(format!(
                        "free block {:#x}..{:#x} reads neither as before nor as zeros",
                        b.start, b.end
                    ));
                }
                zeroed += 1;
            }
        }
        Ok(zeroed)
    }
}

/// A virtual byte range of an in-memory test disk as indices.
fn span(r: &Range<u64>) -> Range<usize> {
    let at = |x: u64| usize::try_from(x).expect("test disk fits in memory");
    at(r.start)..at(r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_inside_takes_only_whole_blocks_and_clamps_the_last() {
        let free = vec![0..4096, 5000..20_000, 24_576..30_000];
        assert_eq!(
            blocks_inside(&free, 4096, 30_000),
            vec![
                0..4096,
                8192..12_288,
                12_288..16_384,
                24_576..28_672,
                28_672..30_000
            ]
        );
        let short = vec![100..4000, 5000..8000];
        assert!(blocks_inside(&short, 4096, 8192).is_empty());
    }
}
