//! The root directory: 32-byte entries, of which three critical primary entries describe the
//! volume itself: the allocation bitmap (type 0x81), the up-case table (0x82) and the volume
//! label (0x83). The root directory's clusters are a chain in the FAT (it has no
//! "NoFatChain" flag).

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::boot_region::Geometry;
use crate::fat;

/// Entry type: end of directory.
const END_OF_DIRECTORY: u8 = 0x00;
/// Entry type: allocation bitmap.
const ALLOCATION_BITMAP: u8 = 0x81;
/// Entry type: up-case table.
const UP_CASE_TABLE: u8 = 0x82;
/// Entry type: volume label.
const VOLUME_LABEL: u8 = 0x83;
/// Root directory clusters read while looking for the critical entries (they come first).
const MAX_ROOT_CLUSTERS: u64 = 64;
/// Bytes of the root directory read at most while looking (clusters may be 32 MiB).
const MAX_ROOT_BYTES: u64 = 4 << 20;

/// A stream the volume keeps: first cluster and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stream {
    pub first_cluster: u32,
    pub length: u64,
}

/// The critical entries of the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root {
    pub bitmap: Stream,
    pub up_case: Stream,
    pub label: String,
    /// The root directory's clusters read (its first ones).
    pub clusters: Vec<u64>,
}

fn stream(entry: &[u8]) -> Stream {
    Stream {
        first_cluster: u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]),
        length: u64::from_le_bytes([
            entry[24], entry[25], entry[26], entry[27], entry[28], entry[29], entry[30], entry[31],
        ]),
    }
}

/// Reads the root directory until its end (or the first clusters) for the critical entries.
pub(crate) fn read_root(r: &MetaReader<'_>, g: &Geometry) -> Examined<Root> {
    let limit = MAX_ROOT_CLUSTERS.min((MAX_ROOT_BYTES / g.cluster_size).max(1));
    let chain = fat::chain(r, g, u64::from(g.root_cluster), limit, "the root directory")?;
    let mut bitmaps = Vec::new();
    let mut up_case = None;
    let mut label = String::new();
    let cs = usize::try_from(g.cluster_size).unwrap_or(usize::MAX);
    'clusters: for &c in &chain {
        let bytes = r.read(g.cluster_bytes(c).start, cs, "the root directory")?;
        for entry in bytes.chunks_exact(32) {
            match entry[0] {
                END_OF_DIRECTORY => break 'clusters,
                ALLOCATION_BITMAP => bitmaps.push((entry[1] & 1, stream(entry))),
                UP_CASE_TABLE => up_case = Some(stream(entry)),
                VOLUME_LABEL => {
                    let n = usize::from(entry[1]).min(11);
                    let units: Vec<u16> = entry[2..2 + 2 * n]
                        .chunks_exact(2)
                        .map(|u| u16::from_le_bytes([u[0], u[1]]))
                        .collect();
                    label = String::from_utf16_lossy(&units);
                }
                _ => {}
            }
        }
    }
    let bitmap = match bitmaps.as_slice() {
        [(0, s)] => *s,
        [] => return damaged("the exfat root directory has no allocation bitmap entry"),
        _ => {
            return damaged(
                "the exfat root directory has more than one allocation bitmap (TexFAT), which \
                 this analyser does not read",
            );
        }
    };
    let Some(up_case) = up_case else {
        return damaged("the exfat root directory has no up-case table entry");
    };
    Ok(Root {
        bitmap,
        up_case,
        label,
        clusters: chain,
    })
}
