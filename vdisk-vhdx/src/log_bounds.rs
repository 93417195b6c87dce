//! How far a pending log may reach into the file: no further than the image can plausibly
//! be.
//!
//! A log entry names file ranges to write or zero and the file size it needs
//! (LastFileOffset, MS-VHDX 2.3.1.1: "a file size that all allocated file structures fit
//! into"). Those numbers come from the file, so a damaged or hostile log could ask for
//! terabytes: replayed, that fills the host file system; laid over the file in memory, it
//! makes the image look that large. Every range an entry writes, and the size it asks for,
//! must therefore lie within the larger of the file's current size and the largest size the
//! image's own layout can need:
//!
//! ```text
//!  plausible = align_1MiB(end of the header section, every region and the log)
//!            + every payload block of the virtual size (block size each)
//!            + every sector bitmap block (1 MiB each), rounded up to 1 MiB
//! ```
//!
//! and every range must also lie within the file size the newest entry records (or the
//! current file, if larger). The metadata used is the one the log itself produces (the
//! overlay), so an entry that grows the disk is measured by the disk it grows to.

use std::ops::Range;

use vdisk_core::{Error, Result, align_up};

use crate::format::{CHUNK_SECTORS, HEADER_SECTION_LEN, MAX_FILE_END, MIB};
use crate::log::{Action, Sequence};
use crate::metadata::Metadata;

/// The largest file the layout of an image with these regions and this metadata can need
/// (see the module doc); `MAX_FILE_END` if that overflows.
pub(crate) fn plausible_file_len(regions: &[Range<u64>], log: &Range<u64>, meta: &Metadata) -> u64 {
    let block_size = u64::from(meta.block_size).max(1);
    let data_blocks = meta.disk_size.div_ceil(block_size);
    let chunk_ratio = ((CHUNK_SECTORS * u64::from(meta.logical_sector_size)) / block_size).max(1);
    let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
    let structures_end = regions
        .iter()
        .chain(std::iter::once(log))
        .map(|r| r.end)
        .fold(HEADER_SECTION_LEN, u64::max);
    align_up(structures_end, MIB)
        .and_then(|s| s.checked_add(data_blocks.checked_mul(block_size)?))
        .and_then(|s| s.checked_add(bitmap_blocks.checked_mul(MIB)?))
        .and_then(|s| align_up(s, MIB))
        .map_or(MAX_FILE_END, |s| s.min(MAX_FILE_END))
}

/// Refuses `sequence` if an entry writes or zeroes past what the file can plausibly be, or
/// past the file size the newest entry records; `log_offset` is the log's place in the file
/// (for messages) and `file_len` the file's size now. The error names the entry (sequence
/// number and file offset) and the range.
pub(crate) fn check_bounds(
    sequence: &Sequence,
    log_offset: u64,
    file_len: u64,
    regions: &[Range<u64>],
    log: &Range<u64>,
    meta: &Metadata,
) -> Result<()> {
    let plausible = plausible_file_len(regions, log, meta).max(file_len);
    let recorded = sequence
        .head()
        .map_or(0, |h| h.last_file_offset)
        .max(file_len);
    let layout = || {
        format!(
            "the largest size this image can need ({plausible} bytes for a {}-byte disk in \
             {}-byte blocks)",
            meta.disk_size, meta.block_size
        )
    };
    for entry in &sequence.entries {
        let entry_at = log_offset + u64::from(entry.offset);
        let name = format!("log entry {} (at {entry_at:#x})", entry.sequence);
        for action in &entry.actions {
            let (verb, at, len) = match action {
                Action::Page(at, page) => ("writes", *at, page.len() as u64),
                Action::Zero(at, len) => ("zeroes", *at, *len),
            };
            let end = at.saturating_add(len);
            let (limit, what) = if end > plausible {
                (plausible, layout())
            } else if end > recorded {
                (
                    recorded,
                    format!("the {recorded}-byte file size the log records"),
                )
            } else {
                continue;
            };
            debug_assert!(end > limit);
            return Err(Error::invalid(
                format!(
                    "{name} {verb} {len} bytes at file offset {at:#x}, past {what}; the log is \
                     damaged and was not replayed"
                ),
                entry_at,
            ));
        }
        if entry.last_file_offset > plausible {
            return Err(Error::invalid(
                format!(
                    "{name} asks for a file of {} bytes, more than {}; the log is damaged \
                     and was not replayed",
                    entry.last_file_offset,
                    layout()
                ),
                entry_at,
            ));
        }
    }
    Ok(())
}
