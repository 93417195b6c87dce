//! Finding all-zero blocks: host-file holes without reading, then parallel reads through the
//! guest view with early exit on data.

use std::ops::Range;

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

/// A block the zero scan looks at, with the host offset where its data starts (the guest's
/// bytes of the block lie there in order) when known.
pub(crate) type Candidate = (BlockIndex, Option<u64>);

/// What the zero scan found.
pub(crate) struct ZeroScan {
    /// Blocks whose whole visible content reads as zeros.
    pub zero: Vec<BlockIndex>,
    /// How many of them lie entirely in host-file holes, so nothing of them was read.
    pub from_holes: u64,
}

/// Returns the blocks among `candidates` whose whole visible content reads as zeros.
///
/// Host-file holes (`SEEK_DATA`/`SEEK_HOLE`) read zeros, so only the parts of a block's data
/// the host file stores are read; a block wholly in a hole is taken without any read. The
/// reads go through the guest view on rayon's pool, one bounded buffer per worker, and stop
/// at the first non-zero byte. Cancellation is checked before each block and progress
/// advanced after each.
pub(crate) fn zero_blocks(
    image: &dyn DiskImage,
    candidates: &[Candidate],
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<ZeroScan> {
    let block_size = image.block_size();
    let size = image.size();
    let chunk = usize::try_from(block_size).map_or(SCAN_CHUNK, |b| b.min(SCAN_CHUNK));
    let found: Vec<Option<(BlockIndex, bool)>> = candidates
        .par_iter()
        .map_init(
            Vec::new,
            |buf, &(block, data_host)| -> Result<Option<(BlockIndex, bool)>> {
                cancel.check()?;
                let start = block.0 * block_size;
                let end = (start + block_size).min(size);
                let outcome = scan_block(image, buf, chunk, start..end, data_host)?;
                progress.advance(1);
                Ok(match outcome {
                    BlockScan::Data => None,
                    BlockScan::Zero => Some((block, false)),
                    BlockScan::Hole => Some((block, true)),
                })
            },
        )
        .collect::<Result<_>>()?;
    let mut scan = ZeroScan {
        zero: Vec::new(),
        from_holes: 0,
    };
    for (block, hole) in found.into_iter().flatten() {
        scan.zero.push(block);
        scan.from_holes += u64::from(hole);
    }
    Ok(scan)
}

/// What one block holds.
enum BlockScan {
    /// Some non-zero byte.
    Data,
    /// Only zeros, some of which were read.
    Zero,
    /// Only host-file holes: nothing was read.
    Hole,
}

/// Scans the virtual range `virt` of one block whose data starts at host offset `data_host`
/// (if known): the host file's data segments inside it are read through the guest view, the
/// holes between them are skipped.
fn scan_block(
    image: &dyn DiskImage,
    buf: &mut Vec<u8>,
    chunk: usize,
    virt: Range<u64>,
    data_host: Option<u64>,
) -> Result<BlockScan> {
    let host = image.host_file();
    let len = virt.end - virt.start;
    let mut read_any = false;
    // Position relative to the block's start.
    let mut pos = 0u64;
    while pos < len {
        // The next piece the host file stores, relative to the block's start.
        let (from, to) = match data_host {
            Some(base) => {
                let Some(data) = host.next_data(base + pos)? else {
                    break;
                };
                let from = data.saturating_sub(base).max(pos);
                if from >= len {
                    break;
                }
                let hole = host.next_hole(base + from)?.saturating_sub(base);
                // A hole at `from` itself (the file changed in between): read to the end.
                (from, if hole <= from { len } else { hole.min(len) })
            }
            None => (pos, len),
        };
        // Allocated on first use: a worker that only meets holes never needs one.
        if buf.is_empty() {
            buf.resize(chunk, 0u8);
        }
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(chunk, |r| r.min(chunk));
            image.read_at(&mut buf[..n], virt.start + at)?;
            read_any = true;
            if !is_zero(&buf[..n]) {
                return Ok(BlockScan::Data);
            }
            at += n as u64;
        }
        pos = to;
    }
    Ok(if read_any {
        BlockScan::Zero
    } else {
        BlockScan::Hole
    })
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
