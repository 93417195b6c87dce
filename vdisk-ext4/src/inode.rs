//! Inodes, as far as the analyser needs them: the journal's (and the resize inode's) block
//! map, to prove that every block they use is marked used. A map is either an extent tree
//! (`EXT4_EXTENTS_FL`: a header and up to four entries in `i_block`, index nodes below) or the
//! classic block map (12 direct pointers, then single, double and triple indirect blocks).
//! Both walks are bounded: depth, entries per node, and the file's own length in blocks.

use std::ops::Range;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::group;
use crate::group_desc::GroupDesc;
use crate::superblock::Geometry;

/// `i_flags`: the block map is an extent tree.
const EXTENTS_FL: u32 = 0x8_0000;
/// Extent node header magic.
const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest extent tree the kernel builds (`EXT4_MAX_EXTENT_DEPTH`).
const MAX_DEPTH: u16 = 5;
/// Length field values above this mark an unwritten extent (length - this).
const UNWRITTEN: u16 = 32768;

/// The first 0x70 bytes of an inode record (all an analyser needs).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawInode {
    mode: U16,
    uid: U16,
    size_lo: U32,
    times_and_ids: [u8; 18],
    links: U16,
    blocks_lo: U32,
    flags: U32,
    osd1: U32,
    block: [u8; 60],
    generation: U32,
    file_acl_lo: U32,
    size_high: U32,
}

const _: () = assert!(size_of::<RawInode>() == 0x70);

/// One inode's block map.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    /// `i_block`: the extent root or the 15 block pointers.
    block: [u8; 60],
    /// Whether `block` is an extent tree.
    extents: bool,
    /// Length of the file in blocks (rounded up).
    pub blocks: u64,
}

/// A piece of a file's map: data blocks or the map's own blocks (index nodes, indirect
/// blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// First logical block of data; `None` for a block of the map itself.
    pub logical: Option<u64>,
    /// Physical blocks.
    pub physical: Range<u64>,
}

/// Reads inode `ino` (1-based).
pub(crate) fn read(reader: &MetaReader<'_>, geo: &Geometry, ino: u64) -> Examined<Inode> {
    if ino == 0 || ino > geo.inodes_per_group.saturating_mul(geo.groups) {
        return damaged(format!(
            "ext4 superblock names inode {ino}, which does not exist"
        ));
    }
    let g = (ino - 1) / geo.inodes_per_group;
    let index = (ino - 1) % geo.inodes_per_group;
    let at = group::descriptor_offset(geo, g);
    let desc_bytes = reader.read(
        at,
        usize::try_from(geo.desc_size).unwrap_or(0),
        "a group descriptor",
    )?;
    let desc = GroupDesc::parse(geo, g, &desc_bytes).or_else(damaged)?;
    let offset = desc
        .inode_table
        .checked_mul(geo.block_size)
        .and_then(|t| t.checked_add(index * geo.inode_size))
        .filter(|_| desc.inode_table < geo.blocks_count);
    let Some(offset) = offset else {
        return damaged(format!(
            "ext4 inode table of group {g} lies outside the file system"
        ));
    };
    let bytes = reader.read(offset, size_of::<RawInode>(), "an inode")?;
    let Ok((raw, _)) = RawInode::read_from_prefix(&bytes) else {
        return damaged("inode record is short");
    };
    let size = u64::from(raw.size_lo.get()) | u64::from(raw.size_high.get()) << 32;
    Ok(Inode {
        block: raw.block,
        extents: raw.flags.get() & EXTENTS_FL != 0,
        blocks: size.div_ceil(geo.block_size),
    })
}

impl Inode {
    /// The block pointer `i` of a classic map (`i_block[i]`).
    pub(crate) fn pointer(&self, i: usize) -> u64 {
        self.block.get(i * 4..i * 4 + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
    }

    /// Calls `piece` with every data extent (up to the file's length) and every block of the
    /// map itself. Damaged maps (bad magic, depth, pointers outside the file system) are
    /// `Doubt::Damaged`.
    pub(crate) fn walk(
        &self,
        reader: &MetaReader<'_>,
        geo: &Geometry,
        piece: &mut dyn FnMut(Piece),
    ) -> Examined<()> {
        let mut w = Walker {
            reader,
            geo,
            piece,
            limit: self.blocks,
        };
        if self.extents {
            w.extent_node(&self.block, None)
        } else {
            for i in 0..12 {
                w.data(i as u64, self.pointer(i))?;
            }
            let per = geo.block_size / 4;
            let mut logical = 12;
            for (i, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
                w.indirect(self.pointer(i), level, logical)?;
                logical = logical.saturating_add(per.saturating_pow(level));
            }
            Ok(())
        }
    }
}

struct Walker<'r, 'a> {
    reader: &'r MetaReader<'a>,
    geo: &'r Geometry,
    piece: &'r mut dyn FnMut(Piece),
    /// Logical blocks of the file: mapping past them is ignored.
    limit: u64,
}

impl Walker<'_, '_> {
    fn block_in_fs(&self, block: u64, len: u64) -> Examined<()> {
        if block < self.geo.first_data_block
            || block
                .checked_add(len)
                .is_none_or(|e| e > self.geo.blocks_count)
        {
            return damaged(format!(
                "ext4 block map points at block {block}, outside the file system"
            ));
        }
        Ok(())
    }

    fn read_block(&mut self, block: u64) -> Examined<Vec<u8>> {
        self.block_in_fs(block, 1)?;
        (self.piece)(Piece {
            logical: None,
            physical: block..block + 1,
        });
        self.reader.read(
            block * self.geo.block_size,
            usize::try_from(self.geo.block_size).unwrap_or(0),
            "a block map block",
        )
    }

    fn data(&mut self, logical: u64, block: u64) -> Examined<()> {
        if block == 0 || logical >= self.limit {
            return Ok(());
        }
        self.block_in_fs(block, 1)?;
        (self.piece)(Piece {
            logical: Some(logical),
            physical: block..block + 1,
        });
        Ok(())
    }

    fn indirect(&mut self, block: u64, level: u32, logical: u64) -> Examined<()> {
        if block == 0 || logical >= self.limit {
            return Ok(());
        }
        let bytes = self.read_block(block)?;
        let per = self.geo.block_size / 4;
        let span = per.saturating_pow(level - 1);
        for (i, p) in bytes.chunks_exact(4).enumerate() {
            let p = u64::from(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
            let at = logical.saturating_add((i as u64).saturating_mul(span));
            if level == 1 {
                self.data(at, p)?;
            } else {
                self.indirect(p, level - 1, at)?;
            }
        }
        Ok(())
    }

    /// One extent node (`bytes` = header + entries); `depth` = the depth its parent expects.
    fn extent_node(&mut self, bytes: &[u8], want_depth: Option<u16>) -> Examined<()> {
        let header = |at: usize| {
            bytes
                .get(at..at + 2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        };
        let (magic, entries, max, depth) = (header(0), header(2), header(4), header(6));
        let capacity = (bytes.len() / 12).saturating_sub(1);
        if magic != EXTENT_MAGIC
            || entries > max
            || usize::from(max) > capacity
            || depth > MAX_DEPTH
            || want_depth.is_some_and(|d| d != depth)
        {
            return damaged("ext4 extent tree of a system inode is damaged (run e2fsck)");
        }
        for e in bytes[12..].chunks_exact(12).take(usize::from(entries)) {
            let u32_at = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
            let u16_at = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
            let logical = u64::from(u32_at(0));
            if depth == 0 {
                let raw_len = u16_at(4);
                let len = u64::from(if raw_len > UNWRITTEN {
                    raw_len - UNWRITTEN
                } else {
                    raw_len
                });
                let start = u64::from(u32_at(8)) | u64::from(u16_at(6)) << 32;
                if logical >= self.limit || len == 0 {
                    continue;
                }
                self.block_in_fs(start, len)?;
                (self.piece)(Piece {
                    logical: Some(logical),
                    physical: start..start + len,
                });
            } else {
                let leaf = u64::from(u32_at(4)) | u64::from(u16_at(8)) << 32;
                let child = self.read_block(leaf)?;
                self.extent_node(&child, Some(depth - 1))?;
            }
        }
        Ok(())
    }
}
