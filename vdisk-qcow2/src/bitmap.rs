//! Persistent dirty bitmaps (the bitmaps header extension): a bitmap directory, one bitmap
//! table per bitmap, and the data clusters the tables name. vdisk never reads or changes the
//! bitmaps; it only needs to know which host clusters they hold, so that `check` counts their
//! references and the host space map keeps them where they are.
//!
//! ```text
//!  extension data: nb_bitmaps u32 · reserved u32 · directory_size u64 · directory_offset u64
//!  directory entry: table_offset u64 · table_size u32 · flags u32 · type u8 ·
//!                   granularity_bits u8 · name_size u16 · extra_data_size u32 · extra · name,
//!                   padded to 8 bytes
//!  table entry:     bits 9..=55 data cluster offset (0: all zeros or all ones, no cluster)
//! ```

use vdisk_core::{Error, HostFile, Result};

use crate::format::{EXT_BITMAPS, OFFSET_MASK, be32, be64, idx};
use crate::header::Layout;

/// Most bitmaps (qemu's limit).
const MAX_BITMAPS: u32 = 65535;
/// Largest bitmap directory (qemu's limit).
const MAX_DIRECTORY: u64 = 64 << 20;
/// Largest bitmap table, in entries (bounded like the L1 table).
const MAX_TABLE_ENTRIES: u64 = 1 << 22;

/// The host byte ranges the bitmaps hold: the directory, each table, each data cluster.
pub(crate) fn host_ranges(
    file: &dyn HostFile,
    l: &Layout,
) -> Result<Vec<(u64, u64, &'static str)>> {
    let Some(ext) = l.extensions.iter().find(|e| e.kind == EXT_BITMAPS) else {
        return Ok(Vec::new());
    };
    let bad = |m: String| Error::invalid(m, ext.offset);
    if ext.data.len() < 24 {
        return Err(bad(format!(
            "the bitmaps extension has {} bytes, fewer than its 24",
            ext.data.len()
        )));
    }
    let nb = be32(&ext.data, 0);
    let dir_size = be64(&ext.data, 8);
    let dir_offset = be64(&ext.data, 16);
    let cs = l.cluster_size;
    if nb > MAX_BITMAPS
        || dir_size > MAX_DIRECTORY
        || !dir_offset.is_multiple_of(cs)
        || dir_offset < cs
        || dir_offset
            .checked_add(dir_size)
            .is_none_or(|e| e > l.file_len)
    {
        return Err(bad(format!(
            "the bitmap directory ({nb} bitmaps, {dir_size} bytes at {dir_offset:#x}) is out of \
             range, unaligned or past the end of the file"
        )));
    }
    let mut out = vec![(dir_offset, dir_size, "the bitmap directory")];
    let mut dir = vec![0u8; idx(dir_size)];
    file.read_at(&mut dir, dir_offset)?;
    let mut at = 0usize;
    for n in 0..nb {
        if at + 24 > dir.len() {
            return Err(bad(format!(
                "bitmap {n} lies past the end of the bitmap directory"
            )));
        }
        let table = be64(&dir, at);
        let entries = u64::from(be32(&dir, at + 8));
        let name = usize::from(u16::from_be_bytes([dir[at + 18], dir[at + 19]]));
        let extra = idx(u64::from(be32(&dir, at + 20)));
        let next = (at + 24)
            .saturating_add(extra)
            .saturating_add(name)
            .next_multiple_of(8);
        if next > dir.len()
            || entries > MAX_TABLE_ENTRIES
            || !table.is_multiple_of(cs)
            || table < cs
            || table
                .checked_add(entries * 8)
                .is_none_or(|e| e > l.file_len)
        {
            return Err(bad(format!(
                "the table of bitmap {n} ({entries} entries at {table:#x}) is out of range, \
                 unaligned or past the end of the file"
            )));
        }
        out.push((table, entries * 8, "a bitmap table"));
        let mut raw = vec![0u8; idx(entries * 8)];
        file.read_at(&mut raw, table)?;
        for c in raw.chunks_exact(8) {
            let data = u64::from_be_bytes(c.try_into().unwrap_or_default()) & OFFSET_MASK;
            if data != 0 {
                if !data.is_multiple_of(cs) || data < cs || data >= l.file_len {
                    return Err(bad(format!(
                        "a data cluster of bitmap {n} at {data:#x} is unaligned, in the header \
                         cluster or past the end of the file"
                    )));
                }
                out.push((data, cs, "a bitmap data cluster"));
            }
        }
        at = next;
    }
    Ok(out)
}
