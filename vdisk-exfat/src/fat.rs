//! The exFAT file allocation table: 32-bit entries, one per cluster, linking the clusters of
//! streams kept as chains (the root directory, the allocation bitmap and the up-case table in
//! particular). Free space is not read from it: files stored contiguously ("NoFatChain") have
//! no FAT entries at all, so only the allocation bitmap says which clusters are used.

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::boot_region::Geometry;

/// Entry value ending a chain.
const END_OF_CHAIN: u32 = 0xFFFF_FFFF;

/// Entry `n` of the first FAT.
fn entry(r: &MetaReader<'_>, g: &Geometry, n: u64) -> Examined<u32> {
    let b = r.read(g.fat_start + 4 * n, 4, "the exfat fat")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The clusters of the chain from `first`, at most `limit` of them (the chain may be longer).
/// A link to a cluster outside the heap, or a loop, is damage.
pub(crate) fn chain(
    r: &MetaReader<'_>,
    g: &Geometry,
    first: u64,
    limit: u64,
    what: &str,
) -> Examined<Vec<u64>> {
    let mut out = Vec::new();
    let mut n = first;
    while (out.len() as u64) < limit {
        if !g.is_cluster(n) {
            return damaged(format!(
                "the exfat fat links {what} to cluster {n}, outside the heap; run fsck.exfat"
            ));
        }
        if out.contains(&n) {
            return damaged(format!(
                "the exfat fat chain of {what} loops; run fsck.exfat"
            ));
        }
        out.push(n);
        let next = entry(r, g, n)?;
        if next == END_OF_CHAIN {
            break;
        }
        n = u64::from(next);
    }
    Ok(out)
}

/// The clusters of a stream of `length` bytes from `first` that the volume keeps contiguous
/// (the allocation bitmap and up-case table: Linux reads them as consecutive clusters): each
/// FAT entry must be the next cluster, the end of the chain at the last, or 0 (no chain
/// recorded). Anything else means readers disagree on where the stream lies.
pub(crate) fn contiguous(
    r: &MetaReader<'_>,
    g: &Geometry,
    first: u64,
    length: u64,
    what: &str,
) -> Examined<std::ops::Range<u64>> {
    let count = length.div_ceil(g.cluster_size).max(1);
    let end = first.saturating_add(count);
    if !g.is_cluster(first) || !g.is_cluster(end - 1) {
        return damaged(format!(
            "{what} (clusters {first} to {}) lies outside the heap",
            end - 1
        ));
    }
    for n in first..end {
        let next = entry(r, g, n)?;
        let last = n + 1 == end;
        let fine =
            next == 0 || (last && next == END_OF_CHAIN) || (!last && u64::from(next) == n + 1);
        if !fine {
            return damaged(format!(
                "{what} is not stored in consecutive clusters (the fat links cluster {n} to \
                 {next:#x}); run fsck.exfat"
            ));
        }
    }
    Ok(first..end)
}
