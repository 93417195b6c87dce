//! The free-space B+tree by block number (bnobt): one per allocation group, whose leaf records
//! `(startblock, blockcount)` are the group's free extents in block order.
//!
//! Blocks are short-form btree blocks: a header (`"ABTB"` on version 4, 16 bytes; `"AB3B"` on
//! version 5, 56 bytes with the block's own address, owner group, UUID and CRC32c), then
//! either leaf records, or keys followed by child pointers (group block numbers). The walk is
//! depth-first in key order, bounded in depth by the AGF's level count and in nodes by the
//! group's size, and every record must start at or after the end of the one before: a tree
//! whose links loop or repeat cannot count an extent twice.

use vdisk_core::fs::{Examined, MetaReader, damaged};
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::agf::Agf;
use crate::checksum;
use crate::superblock::{BBSIZE, Geometry};

/// Version 4 magic.
const MAGIC_V4: [u8; 4] = *b"ABTB";
/// Version 5 magic.
const MAGIC_V5: [u8; 4] = *b"AB3B";
/// Header bytes, version 4.
const HEADER_V4: usize = 16;
/// Header bytes, version 5.
const HEADER_V5: usize = 56;
/// Offset of the version 5 CRC.
const CRC_OFFSET: usize = 52;
/// Bytes of a leaf record and of a key (`startblock`, `blockcount`).
const RECORD: usize = 8;
/// Bytes of a child pointer.
const POINTER: usize = 4;

/// The short-form btree block header common to versions 4 and 5.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ShortHeader {
    /// `"ABTB"` or `"AB3B"`.
    magic: [u8; 4],
    /// 0 for leaves.
    level: U16,
    /// Records (leaf) or keys and pointers (node) in use.
    numrecs: U16,
    /// Left and right siblings (not followed: the walk goes down from the root).
    siblings: [U32; 2],
}

/// The version 5 part of the header, after [`ShortHeader`].
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct V5Header {
    /// The block's own disk address in 512-byte units.
    blkno: U64,
    /// Last write sequence.
    lsn: U64,
    /// The file system's metadata UUID.
    uuid: [u8; 16],
    /// The group owning the block.
    owner: U32,
    /// CRC32c of the block, little-endian.
    crc: [u8; 4],
}

const _: () = assert!(size_of::<ShortHeader>() == HEADER_V4);
const _: () = assert!(size_of::<ShortHeader>() + size_of::<V5Header>() == HEADER_V5);

/// A leaf record, and the key of a node (same layout).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AllocRec {
    /// First free block in the group.
    startblock: U32,
    /// Free blocks.
    blockcount: U32,
}

const _: () = assert!(size_of::<AllocRec>() == RECORD);

/// What one group's tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TreeTotals {
    /// Free blocks.
    pub blocks: u64,
    /// Longest extent.
    pub longest: u64,
    /// Extents.
    pub extents: u64,
    /// Tree blocks read.
    pub nodes: u64,
}

/// Walks group `agno`'s bnobt from `agf`'s root and calls `found(agbno, blocks)` for each free
/// extent, in block order. Damage of any kind is a [`vdisk_core::fs::Doubt::Damaged`] naming
/// the group.
pub(crate) fn walk(
    reader: &MetaReader<'_>,
    g: &Geometry,
    agno: u32,
    agf: &Agf,
    mut found: impl FnMut(u64, u64),
) -> Examined<TreeTotals> {
    let header = if g.has_crc() { HEADER_V5 } else { HEADER_V4 };
    let magic = if g.has_crc() { MAGIC_V5 } else { MAGIC_V4 };
    let block_len = usize::try_from(g.block_size).unwrap_or(usize::MAX);
    let leaf_max = (block_len - header) / RECORD;
    let node_max = (block_len - header) / (RECORD + POINTER);
    let ag_len = g.ag_len(agno);
    let first = g.first_data_block();
    let mut totals = TreeTotals::default();
    let mut next_free = first;
    let mut stack: Vec<(u64, u32)> = vec![(u64::from(agf.bno_root), agf.bno_level - 1)];
    let bad = |what: String| {
        damaged(format!(
            "the free-space tree of allocation group {agno} {what}: run xfs_repair"
        ))
    };
    while let Some((agbno, level)) = stack.pop() {
        totals.nodes += 1;
        if totals.nodes > ag_len {
            return bad("has more blocks than the group".into());
        }
        let at = g.byte_of(agno, agbno);
        let block = reader.read(at, block_len, "a free-space tree block")?;
        let is_root = totals.nodes == 1;
        let Ok((head, rest)) = ShortHeader::read_from_prefix(&block) else {
            return bad(format!("has a truncated block at group block {agbno}"));
        };
        if head.magic != magic {
            return bad(format!(
                "has a block without its signature at group block {agbno}"
            ));
        }
        if g.has_crc() {
            if !checksum::verify(&block, CRC_OFFSET) {
                return bad(format!(
                    "has a block failing its checksum at group block {agbno}"
                ));
            }
            let Ok((v5, _)) = V5Header::read_from_prefix(rest) else {
                return bad(format!("has a truncated block at group block {agbno}"));
            };
            if v5.blkno.get() != at / BBSIZE || v5.owner.get() != agno || v5.uuid != g.meta_uuid {
                return bad(format!("has a misplaced block at group block {agbno}"));
            }
        }
        let block_level = u32::from(head.level.get());
        let count = usize::from(head.numrecs.get());
        if block_level != level {
            return bad(format!(
                "has a level-{block_level} block where level {level} belongs (group block {agbno})"
            ));
        }
        let max = if level == 0 { leaf_max } else { node_max };
        if count > max || (count == 0 && !(is_root && level == 0)) {
            return bad(format!(
                "has a block with {count} entries (group block {agbno})"
            ));
        }
        if level == 0 {
            let Ok((records, _)) =
                <[AllocRec]>::ref_from_prefix_with_elems(&block[header..], count)
            else {
                return bad(format!("has a truncated block at group block {agbno}"));
            };
            for rec in records {
                let start = u64::from(rec.startblock.get());
                let len = u64::from(rec.blockcount.get());
                if len == 0 || start < next_free || start + len > ag_len {
                    return bad(format!(
                        "has an out-of-order or out-of-range extent ({start}, {len} blocks)"
                    ));
                }
                next_free = start + len;
                totals.blocks += len;
                totals.longest = totals.longest.max(len);
                totals.extents += 1;
                found(start, len);
            }
        } else {
            let Ok((pointers, _)) =
                <[U32]>::ref_from_prefix_with_elems(&block[header + node_max * RECORD..], count)
            else {
                return bad(format!("has a truncated block at group block {agbno}"));
            };
            // Pushed in reverse so that children are visited in key order.
            for child in pointers.iter().rev() {
                let child = u64::from(child.get());
                if child < first || child >= ag_len {
                    return bad(format!("points at block {child}, outside the group"));
                }
                stack.push((child, level - 1));
            }
        }
    }
    Ok(totals)
}
