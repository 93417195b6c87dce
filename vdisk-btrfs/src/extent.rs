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
