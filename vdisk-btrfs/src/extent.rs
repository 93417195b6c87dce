//! The extent tree: every allocated extent of the logical address space (`EXTENT_ITEM` for
//! data and non-skinny tree blocks, `METADATA_ITEM` for tree blocks), and the block group
//! items (`BLOCK_GROUP_ITEM`) that say how many bytes each chunk has in use.
//!
//! The walk meets extents in address order, so the free ranges of each chunk are the gaps
//! between them, produced as the walk goes (no list of runs is held). At the end each block
//! group's used bytes must equal the sum of its extents: a disagreement means the tree and
//! its accounting differ, and the volume is not trusted.

use std::ops::Range;

use vdisk_core::fs::{Examined, damaged};
use zerocopy::FromBytes;
use zerocopy::byteorder::little_endian::U64;

use crate::chunk::ChunkMap;
use crate::node::Key;

/// Key type of an extent (`EXTENT_ITEM_KEY`): object id = start, offset = length.
pub(crate) const EXTENT_ITEM: u8 = 168;
/// Key type of a tree block (`METADATA_ITEM_KEY`): object id = start, offset = level.
pub(crate) const METADATA_ITEM: u8 = 169;
/// Key type of a block group (`BLOCK_GROUP_ITEM_KEY`): object id = start, offset = length.
pub(crate) const BLOCK_GROUP_ITEM: u8 = 192;

/// Gathers the allocation of every chunk from extent and block group items.
#[derive(Debug)]
pub(crate) struct Allocation<'m> {
    map: &'m ChunkMap,
    nodesize: u64,
    sectorsize: u64,
    /// Used bytes each chunk's block group item claims.
    group_used: Vec<Option<u64>>,
    /// Bytes of the extents found in each chunk.
    extent_bytes: Vec<u64>,
    /// The chunk the walk is in, and the first logical byte not yet known used or free.
    current: usize,
    cursor: u64,
}

impl<'m> Allocation<'m> {
    pub(crate) fn new(map: &'m ChunkMap, nodesize: u64, sectorsize: u64) -> Allocation<'m> {
        let n = map.chunks().len();
        Allocation {
            map,
            nodesize,
            sectorsize,
            group_used: vec![None; n],
            extent_bytes: vec![0; n],
            current: 0,
            cursor: map.chunks().first().map_or(0, |c| c.start),
        }
    }

    /// Takes one item of the extent tree (or the block group tree); calls `free` with the
    /// logical ranges an extent shows to be free, in address order.
    pub(crate) fn item(
        &mut self,
        key: Key,
        data: &[u8],
        free: &mut dyn FnMut(usize, Range<u64>),
    ) -> Examined<()> {
        match key.kind {
            EXTENT_ITEM => self.extent(key.objectid, key.offset, free),
            METADATA_ITEM => self.extent(key.objectid, self.nodesize, free),
            BLOCK_GROUP_ITEM => self.block_group(key, data),
            _ => Ok(()),
        }
    }

    /// A block group item: its chunk, and the used bytes it claims.
    pub(crate) fn block_group(&mut self, key: Key, data: &[u8]) -> Examined<()> {
        let (start, length) = (key.objectid, key.offset);
        let Ok((used, rest)) = U64::read_from_prefix(data) else {
            return damaged("btrfs block group item is truncated");
        };
        let flags = rest
            .get(8..16)
            .and_then(|f| U64::read_from_bytes(f).ok())
            .map(|f| f.get());
        let i = self.map.index_of(start);
        let chunk = i.map(|i| &self.map.chunks()[i]);
        match (i, chunk) {
            (Some(i), Some(c))
                if c.start == start
                    && c.length == length
                    && flags == Some(c.flags)
                    && used.get() <= length
                    && self.group_used[i].is_none() =>
            {
                self.group_used[i] = Some(used.get());
                Ok(())
            }
            _ => damaged(format!(
                "btrfs block group at {start:#x} does not match its chunk"
            )),
        }
    }

    fn extent(
        &mut self,
        start: u64,
        len: u64,
        free: &mut dyn FnMut(usize, Range<u64>),
    ) -> Examined<()> {
        let chunks = self.map.chunks();
        if len == 0
            || !start.is_multiple_of(self.sectorsize)
            || !len.is_multiple_of(self.sectorsize)
        {
            return damaged(format!(
                "btrfs extent at {start:#x} has an invalid length {len}"
            ));
        }
        while chunks.get(self.current).is_some_and(|c| c.end() <= start) {
            self.finish_current(free);
        }
        let Some(chunk) = chunks.get(self.current) else {
            return damaged(format!(
                "btrfs extent at {start:#x} lies outside every chunk"
            ));
        };
        if start < chunk.start || start < self.cursor {
            return damaged(format!(
                "btrfs extent at {start:#x} overlaps another one or lies outside every chunk"
            ));
        }
        let end = start.saturating_add(len);
        if end > chunk.end() {
            return damaged(format!(
                "btrfs extent at {start:#x} runs past the end of its chunk"
            ));
        }
        if start > self.cursor {
            free(self.current, self.cursor..start);
        }
        self.cursor = end;
        self.extent_bytes[self.current] += len;
        Ok(())
    }

    /// The rest of the current chunk is free; moves to the next.
    fn finish_current(&mut self, free: &mut dyn FnMut(usize, Range<u64>)) {
        let chunks = self.map.chunks();
        if let Some(c) = chunks.get(self.current) {
            if c.end() > self.cursor {
                free(self.current, self.cursor..c.end());
            }
            self.current += 1;
            self.cursor = chunks.get(self.current).map_or(0, |n| n.start);
        }
    }

    /// Ends the walk: the chunks after the last extent are free up to their ends; every
    /// chunk must have its block group item, agreeing with its extents.
    pub(crate) fn finish(&mut self, free: &mut dyn FnMut(usize, Range<u64>)) -> Examined<()> {
        while self.current < self.map.chunks().len() {
            self.finish_current(free);
        }
        for (i, c) in self.map.chunks().iter().enumerate() {
            match self.group_used[i] {
                None => {
                    return damaged(format!(
                        "btrfs chunk at {:#x} has no block group item",
                        c.start
                    ));
                }
                Some(used) if used != self.extent_bytes[i] => {
                    return damaged(format!(
                        "btrfs block group at {:#x} says {used} bytes are used but its extents hold {}",
                        c.start, self.extent_bytes[i]
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunk::{Chunk, flags};

    const SECTOR: u64 = 4096;

    /// Chunks of `sizes` sectors laid one after another with a one-sector gap, and extents
    /// cut from the `(skip, take)` sector pairs walked through the chunks in order.
    fn model(sizes: &[u64], cuts: &[(u64, u64)]) -> (ChunkMap, Vec<Range<u64>>) {
        let mut chunks = Vec::new();
        let mut at = 1 << 20;
        for (i, &s) in sizes.iter().enumerate() {
            chunks.push(Chunk {
                start: at,
                length: s * SECTOR,
                flags: flags::DATA,
                copies: vec![(i as u64 + 1) << 30],
            });
            at += (s + 1) * SECTOR;
        }
        let mut extents = Vec::new();
        let (mut c, mut pos) = (0usize, chunks.first().map_or(0, |c| c.start));
        for &(skip, take) in cuts {
            let Some(chunk) = chunks.get(c) else { break };
            let start = pos + skip * SECTOR;
            let end = (start + take * SECTOR).min(chunk.end());
            if start < end {
                extents.push(start..end);
                pos = end;
            } else {
                c += 1;
                pos = chunks.get(c).map_or(0, |n| n.start);
            }
        }
        (ChunkMap::new(chunks).unwrap(), extents)
    }

    proptest! {
        #[test]
        fn free_ranges_are_each_chunk_less_its_extents_and_block_groups_must_agree(
            sizes in proptest::collection::vec(1u64..40, 1..6),
            cuts in proptest::collection::vec((0u64..5, 1u64..8), 0..40),
            lie in any::<bool>(),
        ) {
            let (map, extents) = model(&sizes, &cuts);
            let mut alloc = Allocation::new(&map, 16384, SECTOR);
            let mut free = Vec::new();
            let mut sink = |i: usize, r: Range<u64>| free.push((i, r));
            for e in &extents {
                let key = Key { objectid: e.start, kind: EXTENT_ITEM, offset: e.end - e.start };
                alloc.item(key, &[], &mut sink).unwrap();
            }
            for (i, c) in map.chunks().iter().enumerate() {
                let mut used: u64 = extents.iter().filter(|e| e.start >= c.start && e.end <= c.end())
                    .map(|e| e.end - e.start).sum();
                if lie && i == 0 {
                    used = if used >= SECTOR { used - SECTOR } else { used + SECTOR };
                }
                let mut data = used.to_le_bytes().to_vec();
                data.extend_from_slice(&256u64.to_le_bytes());
                data.extend_from_slice(&c.flags.to_le_bytes());
                let key = Key { objectid: c.start, kind: BLOCK_GROUP_ITEM, offset: c.length };
                alloc.item(key, &data, &mut sink).unwrap();
            }
            let finished = alloc.finish(&mut sink);
            prop_assert_eq!(finished.is_err(), lie);
            // Expected: every chunk byte in no extent.
            let mut expected = Vec::new();
            for (i, c) in map.chunks().iter().enumerate() {
                let mut at = c.start;
                for e in extents.iter().filter(|e| e.start >= c.start && e.end <= c.end()) {
                    if e.start > at { expected.push((i, at..e.start)); }
                    at = e.end;
                }
                if c.end() > at { expected.push((i, at..c.end())); }
            }
            prop_assert_eq!(free, expected);
        }
    }

    #[test]
    fn overlapping_or_stray_extents_are_damage() {
        let (map, _) = model(&[10, 10], &[]);
        let c0 = map.chunks()[0].start;
        let mut sink = |_: usize, _: Range<u64>| {};
        let mut a = Allocation::new(&map, 16384, SECTOR);
        let key = |s: u64, l: u64| Key {
            objectid: s,
            kind: EXTENT_ITEM,
            offset: l,
        };
        a.item(key(c0, 2 * SECTOR), &[], &mut sink).unwrap();
        assert!(a.item(key(c0 + SECTOR, SECTOR), &[], &mut sink).is_err());
        let mut a = Allocation::new(&map, 16384, SECTOR);
        // In the gap between the chunks.
        assert!(
            a.item(key(c0 + 10 * SECTOR, SECTOR), &[], &mut sink)
                .is_err()
        );
        let mut a = Allocation::new(&map, 16384, SECTOR);
        assert!(
            a.item(key(c0 + 9 * SECTOR, 2 * SECTOR), &[], &mut sink)
                .is_err()
        );
        let mut a = Allocation::new(&map, 16384, SECTOR);
        assert!(a.item(key(c0 + 1, SECTOR), &[], &mut sink).is_err());
    }
}
