//! The file allocation table: one entry per cluster, 0 = free. Every copy is read in chunks;
//! mirrored copies must agree byte for byte, and a cluster is free only when its entry is 0 in
//! every copy. Free clusters go into the [`FreeMap`] run by run, so memory stays that of the map
//! whatever the FAT's size.
//!
//! Entries are packed: FAT12 holds two 12-bit entries in three bytes (entry `n` at byte
//! `n * 3 / 2`, the low 12 bits of that 16-bit word for even `n`, the high 12 for odd `n`),
//! FAT16 one 16-bit word, FAT32 one 32-bit word of which the low 28 bits count.

use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged};

use crate::boot_sector::{FatType, Geometry};

/// Entries decoded per step: even, so a FAT12 chunk starts on a byte boundary.
const CHUNK_ENTRIES: u64 = 1 << 18;

/// What the scan of the FAT found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Free clusters (entry 0 in every copy), as bytes of the volume.
    pub free: FreeMap,
    /// Count of free clusters.
    pub free_clusters: u64,
    /// Entry 0 (the media byte in its low 8 bits) and entry 1 (the shutdown bits), of the
    /// active (or first) copy.
    pub entry0: u32,
    pub entry1: u32,
    /// The FAT32 root directory's first cluster is free in some copy.
    pub root_free: bool,
}

/// Decodes entry `n` (relative to the chunk, `n` even-aligned for FAT12) from `bytes`.
pub(crate) fn entry(fat_type: FatType, bytes: &[u8], n: usize) -> Option<u32> {
    match fat_type {
        FatType::Fat12 => {
            let at = n * 3 / 2;
            let word = u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]);
            Some(u32::from(if n.is_multiple_of(2) {
                word & 0x0FFF
            } else {
                word >> 4
            }))
        }
        FatType::Fat16 => {
            let at = n * 2;
            Some(u32::from(u16::from_le_bytes([
                *bytes.get(at)?,
                *bytes.get(at + 1)?,
            ])))
        }
        FatType::Fat32 => {
            let at = n * 4;
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF)
        }
    }
}

/// Bytes holding entries `first..first + count` (`first` even for FAT12): offset in the FAT
/// and length.
fn entry_bytes(fat_type: FatType, first: u64, count: u64) -> (u64, u64) {
    match fat_type {
        FatType::Fat12 => (first * 3 / 2, (count * 3).div_ceil(2)),
        FatType::Fat16 => (first * 2, count * 2),
        FatType::Fat32 => (first * 4, count * 4),
    }
}

/// Reads every copy of the FAT and collects the free clusters; see the module docs.
pub(crate) fn scan(r: &MetaReader<'_>, g: &Geometry, volume_len: u64) -> Examined<Scan> {
    let entries = g.cluster_count + 2;
    // Clusters start at `data_start`, which need not be a multiple of the cluster size (FAT12
    // and FAT16 root directories end on any sector): the map's unit must divide both, or every
    // free run would lose the units it only partly covers.
    let alignment = 1u64 << g.data_start.trailing_zeros().min(63);
    let mut free = FreeMap::new(volume_len, g.cluster_size.min(alignment));
    let mut free_clusters = 0u64;
    let mut run: Option<u64> = None; // first cluster of the current free run
    let (mut entry0, mut entry1) = (0, 0);
    let mut root_free = false;
    let root = g.root_cluster.map(u64::from);
    let reference = usize::from(g.active_fat.unwrap_or(0));
    let limit = g.fat_type.reserved_values();
    let mut first = 0u64;
    while first < entries {
        let count = CHUNK_ENTRIES.min(entries - first);
        let (offset, len) = entry_bytes(g.fat_type, first, count);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut copies = Vec::with_capacity(usize::from(g.num_fats));
        for k in 0..u64::from(g.num_fats) {
            let at = g.fat_start + k * g.fat_bytes + offset;
            copies.push(r.read(at, len, &format!("fat copy {}", k + 1))?);
        }
        if g.active_fat.is_none()
            && let Some(k) = copies.iter().position(|c| *c != copies[0])
        {
            return damaged(format!(
                "the fat copies disagree (copy {} differs from copy 1 near cluster {first}); \
                 run fsck.fat or chkdsk",
                k + 1
            ));
        }
        for i in 0..count {
            let n = first + i;
            let at = usize::try_from(i).unwrap_or(usize::MAX);
            let mut all_free = true;
            let mut any_free = false;
            let mut value = 0;
            for (k, copy) in copies.iter().enumerate() {
                let Some(e) = entry(g.fat_type, copy, at) else {
                    return damaged("the fat ended early");
                };
                all_free &= e == 0;
                any_free |= e == 0;
                if k == reference {
                    value = e;
                }
            }
            match n {
                0 => entry0 = value,
                1 => entry1 = value,
                _ => {
                    root_free |= any_free && root == Some(n);
                    if value == 1 || (u64::from(value) >= entries && value < limit) {
                        return damaged(format!(
                            "the fat links cluster {n} to cluster {value}, which does not exist; \
                             run fsck.fat or chkdsk"
                        ));
                    }
                    if all_free {
                        free_clusters += 1;
                        run.get_or_insert(n);
                    } else if let Some(start) = run.take() {
                        free.mark_free(g.cluster_bytes(start).start..g.cluster_bytes(n).start);
                    }
                }
            }
        }
        first += count;
    }
    if let Some(start) = run {
        free.mark_free(g.cluster_bytes(start).start..g.cluster_bytes(entries).start);
    }
    Ok(Scan {
        free,
        free_clusters,
        entry0,
        entry1,
        root_free,
    })
}
