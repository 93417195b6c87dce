//! Internal snapshots: the snapshot table (one variable-length entry per snapshot, each
//! padded to 8 bytes) and each snapshot's L1 table, read only to know which host clusters the
//! snapshots hold.

use vdisk_core::{Error, HostFile, Result};
use zerocopy::FromBytes;

use crate::format::{
    MAX_L1_BYTES, MAX_SNAPSHOT_EXTRA, MAX_SNAPSHOT_TABLE_BYTES, SNAPSHOT_ENTRY_LEN, SnapshotEntry,
    be64, idx,
};
use crate::header::Layout;

/// One internal snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Its id string.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Offset of its L1 table.
    pub l1_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u64,
    /// The virtual size when it was taken (from the extra data; the current size if absent).
    pub disk_size: u64,
}

/// Reads the snapshot table: `nb_snapshots` entries from `snapshots_offset`, bounded by the
/// format's limits and the file. Returns the snapshots and the table's length in bytes.
pub(crate) fn read_table(file: &dyn HostFile, l: &Layout) -> Result<(Vec<Snapshot>, u64)> {
    let mut out = Vec::with_capacity(l.nb_snapshots.min(1024) as usize);
    let mut at = l.snapshots_offset;
    // Each snapshot's L1 table has clusters of its own, so together they fit in the file: a
    // bound on the work of every walk over them (check, host space map).
    let mut l1_bytes = 0u64;
    for n in 0..l.nb_snapshots {
        let used = at - l.snapshots_offset;
        let fixed_end = at.saturating_add(SNAPSHOT_ENTRY_LEN);
        if fixed_end > l.file_len || used + SNAPSHOT_ENTRY_LEN > MAX_SNAPSHOT_TABLE_BYTES {
            return Err(Error::invalid(
                format!(
                    "snapshot {n} of the table at {:#x} lies past the end of the file or the format's 64 MiB limit",
                    l.snapshots_offset
                ),
                at,
            ));
        }
        let mut raw = [0u8; idx(SNAPSHOT_ENTRY_LEN)];
        file.read_at(&mut raw, at)?;
        let e = SnapshotEntry::read_from_bytes(&raw)
            .map_err(|_| Error::invalid("short snapshot entry", at))?;
        let extra = e.extra_data_size.get();
        if extra > MAX_SNAPSHOT_EXTRA {
            return Err(Error::invalid(
                format!(
                    "snapshot {n} has {extra} bytes of extra data, more than the format's {MAX_SNAPSHOT_EXTRA}"
                ),
                at,
            ));
        }
        let var = u64::from(extra) + u64::from(e.id_str_size.get()) + u64::from(e.name_size.get());
        let end = fixed_end + var;
        let padded = end.next_multiple_of(8);
        if end > l.file_len || padded - l.snapshots_offset > MAX_SNAPSHOT_TABLE_BYTES {
            return Err(Error::invalid(
                format!("snapshot {n} runs past the end of the file"),
                at,
            ));
        }
        let mut rest = vec![0u8; idx(var)];
        file.read_at(&mut rest, fixed_end)?;
        let (extra_bytes, strings) = rest.split_at(idx(u64::from(extra)));
        let (id, name) = strings.split_at(usize::from(e.id_str_size.get()));
        let disk_size = if extra_bytes.len() >= 16 {
            be64(extra_bytes, 8)
        } else {
            l.size
        };
        let l1_size = u64::from(e.l1_size.get());
        let l1_offset = e.l1_table_offset.get();
        if l1_size * 8 > MAX_L1_BYTES
            || !l1_offset.is_multiple_of(l.cluster_size)
            || (l1_size > 0 && l1_offset < l.cluster_size)
            || l1_offset
                .checked_add(l1_size * 8)
                .is_none_or(|x| x > l.file_len)
        {
            return Err(Error::invalid(
                format!(
                    "the l1 table of snapshot {n} ({l1_size} entries at {l1_offset:#x}) is \
                     unaligned, too large, in the header cluster or past the end of the file"
                ),
                at,
            ));
        }
        l1_bytes += l1_size * 8;
        if l1_bytes > l.file_len {
            return Err(Error::invalid(
                format!(
                    "the l1 tables of snapshots 0 to {n} take {l1_bytes} bytes, more than the \
                     {}-byte file holds: some of them share clusters, which qemu never writes",
                    l.file_len
                ),
                at,
            ));
        }
        out.push(Snapshot {
            id: String::from_utf8_lossy(id).to_string(),
            name: String::from_utf8_lossy(name).to_string(),
            l1_offset,
            l1_size,
            disk_size,
        });
        at = padded;
    }
    Ok((out, at - l.snapshots_offset))
}
