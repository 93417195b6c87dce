//! The allocation bitmap: bit `i` (least significant first in each byte) is cluster `i + 2`,
//! set when the cluster is in use. Read in chunks and fed into the free map run by run.

use std::ops::Range;

use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged};

use crate::boot_region::Geometry;

/// Bitmap bytes read per step.
const CHUNK: u64 = 1 << 20;

/// Free clusters, as the bitmap says.
#[derive(Debug)]
pub(crate) struct Free {
    pub map: FreeMap,
    pub clusters: u64,
}

/// Reads the bitmap stored in `clusters` (consecutive) into a free map of `volume_len` bytes.
pub(crate) fn read(
    r: &MetaReader<'_>,
    g: &Geometry,
    clusters: &Range<u64>,
    length: u64,
    volume_len: u64,
) -> Examined<Free> {
    let needed = g.cluster_count.div_ceil(8);
    if length < needed {
        return damaged(format!(
            "the exfat allocation bitmap holds {length} bytes, fewer than the {needed} its \
             clusters need"
        ));
    }
    let start = g.cluster_bytes(clusters.start).start;
    let alignment = 1u64 << g.heap_start.trailing_zeros().min(63);
    let mut map = FreeMap::new(volume_len, g.cluster_size.min(alignment));
    let mut free = 0u64;
    let mut run: Option<u64> = None;
    let mut at = 0u64;
    while at < needed {
        let len = CHUNK.min(needed - at);
        let bytes = r.read(
            start + at,
            usize::try_from(len).unwrap_or(usize::MAX),
            "the exfat allocation bitmap",
        )?;
        for (i, &byte) in bytes.iter().enumerate() {
            let base = (at + i as u64) * 8;
            for bit in 0..8u64 {
                let index = base + bit;
                if index >= g.cluster_count {
                    break;
                }
                let cluster = index + 2;
                if byte & (1 << bit) == 0 {
                    free += 1;
                    run.get_or_insert(cluster);
                } else if let Some(first) = run.take() {
                    map.mark_free(g.cluster_bytes(first).start..g.cluster_bytes(cluster).start);
                }
            }
        }
        at += len;
    }
    if let Some(first) = run {
        map.mark_free(g.cluster_bytes(first).start..g.cluster_bytes(g.cluster_count + 2).start);
    }
    Ok(Free {
        map,
        clusters: free,
    })
}

/// Whether bit of cluster `n` says free: used for the cross-checks.
pub(crate) fn is_free(r: &MetaReader<'_>, bitmap_start: u64, n: u64) -> Examined<bool> {
    let index = n - 2;
    let b = r.read(bitmap_start + index / 8, 1, "the exfat allocation bitmap")?;
    Ok(b[0] & (1 << (index % 8)) == 0)
}
