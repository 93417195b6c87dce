//! L2 entries: what backs one guest cluster.
//!
//! ```text
//!  bit 63 COPIED (refcount exactly 1) · bit 62 compressed
//!  standard:   bits 9..=55 host cluster offset · bit 0 reads zeros (v3) · others reserved
//!  compressed: bits 0..x host byte offset · bits x..=61 extra 512-byte sectors,
//!              x = 62 - (cluster_bits - 8)
//! ```

use vdisk_core::{Error, Result};

use crate::format::{
    L2_STANDARD_RESERVED, OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, idx,
};
use crate::header::Layout;

/// One decoded L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Nothing here: zeros, or the backing image's data.
    Unallocated,
    /// Reads zeros (v3 zero flag); `host` is a preallocated cluster it still holds.
    Zero {
        /// The preallocated host cluster, if any.
        host: Option<u64>,
        /// The COPIED flag.
        copied: bool,
    },
    /// The guest cluster's bytes, in order, at `host`.
    Standard {
        /// Host cluster offset.
        host: u64,
        /// The COPIED flag: refcount exactly one.
        copied: bool,
    },
    /// A raw deflate stream of `len` bytes at host byte `offset`.
    Compressed {
        /// Host byte offset of the stream.
        offset: u64,
        /// Bytes the stream may occupy (sector granular, up to the end of its last sector).
        len: u64,
    },
}

impl Entry {
    /// Decodes `raw` for an image with `layout`; refuses reserved bits, unaligned offsets, a
    /// zero flag in a v2 image, and host data in the header cluster or past the file's end.
    pub fn decode(raw: u64, l: &Layout) -> Result<Entry> {
        let bad = |what: String| Error::invalid(what, 0);
        if raw & OFLAG_COMPRESSED != 0 {
            if raw & OFLAG_COPIED != 0 {
                return Err(bad(format!(
                    "l2 entry {raw:#018x} is compressed and has the COPIED flag"
                )));
            }
            let (offset, len) = compressed_range(raw, l.cluster_bits);
            if offset < l.cluster_size || offset >= l.file_len {
                return Err(bad(format!(
                    "compressed cluster at {offset:#x} lies in the header cluster or past the \
                     end of the {}-byte file",
                    l.file_len
                )));
            }
            return Ok(Entry::Compressed { offset, len });
        }
        let copied = raw & OFLAG_COPIED != 0;
        let host = raw & OFFSET_MASK;
        if raw & L2_STANDARD_RESERVED != 0 || raw & !OFFSET_MASK & !OFLAG_COPIED & !OFLAG_ZERO != 0
        {
            return Err(bad(format!("l2 entry {raw:#018x} has reserved bits set")));
        }
        if !host.is_multiple_of(l.cluster_size) {
            return Err(bad(format!(
                "l2 entry {raw:#018x} points at {host:#x}, which is not cluster-aligned"
            )));
        }
        if host != 0 && (host < l.cluster_size || host >= l.file_len) {
            return Err(bad(format!(
                "data cluster at {host:#x} lies in the header cluster or past the end of the \
                 {}-byte file",
                l.file_len
            )));
        }
        let host = (host != 0).then_some(host);
        if raw & OFLAG_ZERO != 0 {
            if l.version < 3 {
                return Err(bad(format!(
                    "l2 entry {raw:#018x} has the zero flag, which version 2 images do not have"
                )));
            }
            return Ok(Entry::Zero { host, copied });
        }
        Ok(match host {
            Some(host) => Entry::Standard { host, copied },
            None if copied => {
                return Err(bad(format!(
                    "l2 entry {raw:#018x} has the COPIED flag but no cluster"
                )));
            }
            None => Entry::Unallocated,
        })
    }

    /// The host clusters this entry holds a reference to (first byte, length): one cluster,
    /// or every cluster a compressed stream touches.
    pub fn host_range(self, cluster_size: u64) -> Option<(u64, u64)> {
        match self {
            Entry::Standard { host, .. }
            | Entry::Zero {
                host: Some(host), ..
            } => Some((host, cluster_size)),
            Entry::Compressed { offset, len } => Some((offset, len)),
            _ => None,
        }
    }
}

/// The host byte offset and the length of the compressed stream of entry `raw`.
pub(crate) fn compressed_range(raw: u64, cluster_bits: u32) -> (u64, u64) {
    let shift = 62 - (cluster_bits - 8);
    let offset = raw & ((1u64 << shift) - 1);
    let sectors = ((raw >> shift) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
    (offset, sectors * 512 - (offset & 511))
}

/// Reads the L2 table at `offset` (one cluster) as raw entries.
pub(crate) fn read_table(
    file: &dyn vdisk_core::HostFile,
    l: &Layout,
    offset: u64,
) -> Result<Vec<u64>> {
    let mut buf = vec![0u8; idx(l.cluster_size)];
    file.read_at(&mut buf, offset)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(cluster_bits: u32, version: u32, file_len: u64) -> Layout {
        Layout {
            version,
            cluster_bits,
            cluster_size: 1 << cluster_bits,
            size: 1 << 30,
            l1_size: 1,
            l1_offset: 0,
            reftable_offset: 0,
            reftable_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: 112,
            backing: None,
            backing_offset: 0,
            extensions: Vec::new(),
            file_len,
        }
    }

    proptest! {
        #[test]
        fn any_l2_entry_decodes_to_an_aligned_in_file_cluster_or_is_refused(
            raw in any::<u64>(),
            cluster_bits in 9u32..=21,
            version in 2u32..=3,
            file_len in 0u64..(1 << 40),
        ) {
            let l = layout(cluster_bits, version, file_len);
            let cs = l.cluster_size;
            match Entry::decode(raw, &l) {
                Err(_) | Ok(Entry::Unallocated) | Ok(Entry::Zero { host: None, .. }) => {}
                Ok(Entry::Standard { host, .. }) | Ok(Entry::Zero { host: Some(host), .. }) => {
                    prop_assert!(host % cs == 0 && host >= cs && host < file_len);
                }
                Ok(Entry::Compressed { offset, len }) => {
                    prop_assert!(offset >= cs && offset < file_len);
                    // At most the sectors the descriptor can count, never more than two clusters.
                    prop_assert!(len >= 1 && len <= 2 * cs);
                }
            }
        }

        #[test]
        fn a_compressed_descriptor_round_trips_offset_and_sector_count(
            cluster_bits in 9u32..=21,
            offset in 0u64..(1 << 48),
            extra in 0u64..(1 << 13),
        ) {
            let shift = 62 - (cluster_bits - 8);
            let extra = extra & ((1 << (cluster_bits - 8)) - 1);
            let raw = OFLAG_COMPRESSED | (extra << shift) | offset;
            let (o, len) = compressed_range(raw, cluster_bits);
            prop_assert_eq!(o, offset);
            prop_assert_eq!(len, (extra + 1) * 512 - (offset & 511));
        }
    }
}
