//! L1 tables: one u64 per L2 table (bits 9..=55 its offset, bit 63 COPIED), the active one
//! from the header and one per internal snapshot.

use vdisk_core::{Error, HostFile, Result};

use crate::format::{L1_RESERVED, OFFSET_MASK, OFLAG_COPIED};
use crate::header::Layout;

/// One L1 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct L1Entry {
    /// The L2 table's offset (0: none).
    pub l2: u64,
    /// The COPIED flag: the L2 table's refcount is exactly one.
    pub copied: bool,
}

/// Reads the `entries`-entry L1 table at `offset` (bounded by the caller) and checks each
/// entry: no reserved bits, a cluster-aligned L2 table in the file and not in the header
/// cluster. `what` names the table in messages.
pub(crate) fn read(
    file: &dyn HostFile,
    l: &Layout,
    offset: u64,
    entries: u64,
    what: &str,
) -> Result<Vec<L1Entry>> {
    let mut buf = vec![0u8; usize::try_from(entries * 8).unwrap_or(0)];
    file.read_at(&mut buf, offset)?;
    let mut out = Vec::with_capacity(buf.len() / 8);
    for (i, c) in buf.chunks_exact(8).enumerate() {
        let raw = u64::from_be_bytes(c.try_into().unwrap_or_default());
        let at = offset + i as u64 * 8;
        if raw & L1_RESERVED != 0 {
            return Err(Error::invalid(
                format!("{what} entry {i} ({raw:#018x}) has reserved bits set"),
                at,
            ));
        }
        let l2 = raw & OFFSET_MASK;
        if l2 != 0
            && (!l2.is_multiple_of(l.cluster_size)
                || l2 < l.cluster_size
                || l2
                    .checked_add(l.cluster_size)
                    .is_none_or(|e| e > l.file_len))
        {
            return Err(Error::invalid(
                format!(
                    "{what} entry {i} points at an l2 table at {l2:#x}, which is unaligned, in \
                     the header cluster or past the end of the {}-byte file",
                    l.file_len
                ),
                at,
            ));
        }
        out.push(L1Entry {
            l2,
            copied: raw & OFLAG_COPIED != 0,
        });
    }
    Ok(out)
}
