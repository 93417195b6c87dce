//! Finding all-zero blocks: parallel reads through the guest view, early exit on data.

use rayon::prelude::*;

use crate::block::BlockDevice;
use crate::compact::Reason;
use crate::error::Result;
use crate::image::DiskImage;
use crate::progress::{CancelToken, Progress};
use crate::units::BlockIndex;
use crate::zero::is_zero;

/// Bytes read per request. Blocks with data usually stop after the first request; the buffer
/// per worker stays small whatever the block size (VHDX blocks go up to 256 MiB).
const SCAN_CHUNK: usize = 1 << 20;

/// Returns the blocks among `candidates` whose whole visible content reads as zeros.
///
/// Reads run on rayon's pool, one bounded buffer per worker; cancellation is checked before
/// each block and progress advanced after each.
pub(crate) fn zero_blocks(
    image: &dyn DiskImage,
    candidates: &[BlockIndex],
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Vec<BlockIndex>> {
    let block_size = image.block_size();
    let size = image.size();
    let chunk = usize::try_from(block_size).map_or(SCAN_CHUNK, |b| b.min(SCAN_CHUNK));
    let found: Vec<Option<BlockIndex>> = candidates
        .par_iter()
        .map_init(
            || vec![0u8; chunk],
            |buf, &block| -> Result<Option<BlockIndex>> {
                cancel.check()?;
                let start = block.0 * block_size;
                let end = (start + block_size).min(size);
                let mut offset = start;
                let mut zero = true;
                while offset < end {
                    let n = usize::try_from(end - offset).map_or(chunk, |r| r.min(chunk));
                    image.read_at(&mut buf[..n], offset)?;
                    if !is_zero(&buf[..n]) {
                        zero = false;
                        break;
                    }
                    offset += n as u64;
                }
                progress.advance(1);
                Ok(zero.then_some(block))
            },
        )
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// For a differencing image: classifies each of `candidates` as [`Reason::SameAsParent`] when
/// its whole visible content reads the same through `parent` (so dropping it changes no read),
/// else as [`Reason::Zero`] when it reads all zeros and `zero_ok` (the format can store an
/// explicit zero block), else leaves it out. Both reads stop as soon as neither can hold.
pub(crate) fn child_blocks(
    image: &dyn DiskImage,
    parent: &dyn BlockDevice,
    zero_ok: bool,
    candidates: &[BlockIndex],
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Vec<(BlockIndex, Reason)>> {
    let block_size = image.block_size();
    let size = image.size().min(parent.size());
    let chunk = usize::try_from(block_size).map_or(SCAN_CHUNK, |b| b.min(SCAN_CHUNK));
    let found: Vec<Option<(BlockIndex, Reason)>> = candidates
        .par_iter()
        .map_init(
            || (vec![0u8; chunk], vec![0u8; chunk]),
            |(mine, theirs), &block| -> Result<Option<(BlockIndex, Reason)>> {
                cancel.check()?;
                let start = block.0 * block_size;
                let end = (start + block_size).min(image.size());
                let mut offset = start;
                let mut zero = zero_ok;
                // A block reaching past the parent's end cannot fall through to it.
                let mut same = end <= size;
                while offset < end && (zero || same) {
                    let n = usize::try_from(end - offset).map_or(chunk, |r| r.min(chunk));
                    image.read_at(&mut mine[..n], offset)?;
                    if same {
                        parent.read_at(&mut theirs[..n], offset)?;
                        same = mine[..n] == theirs[..n];
                    }
                    zero = zero && is_zero(&mine[..n]);
                    offset += n as u64;
                }
                progress.advance(1);
                Ok(if same {
                    Some((block, Reason::SameAsParent))
                } else if zero {
                    Some((block, Reason::Zero))
                } else {
                    None
                })
            },
        )
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}
