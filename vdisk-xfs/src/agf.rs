//! The allocation group free-space header (AGF): where each group's free-space B+trees start,
//! and the group's free-block counters the trees must agree with.
//!
//! The AGF is the second sector of each allocation group. The free list (AGFL, fourth sector)
//! holds blocks reserved for the btrees to grow into: they are in no free-space tree, so they
//! stay used here, as they must (the file system writes to them without allocating).

use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum;
use crate::superblock::Geometry;

/// `"XAGF"`.
const MAGIC: [u8; 4] = *b"XAGF";
/// The only AGF version.
const VERSION: u32 = 1;
/// Offset of `agf_crc` (version 5).
const CRC_OFFSET: usize = 216;
/// Bytes of the AGF structure (through `agf_spare2`).
pub(crate) const AGF_LEN: usize = 224;
/// Bytes of the version 5 AGFL header before its block numbers.
const AGFL_V5_HEADER: u64 = 36;
/// Most levels of a free-space btree (`XFS_BTREE_MAXLEVELS` for short-form trees).
pub(crate) const MAX_LEVELS: u32 = 9;

/// The on-disk AGF, big-endian except the CRC.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct AgfRaw {
    /// `"XAGF"`.
    magicnum: [u8; 4],
    /// 1.
    versionnum: U32,
    /// The group's number.
    seqno: U32,
    /// Blocks in the group.
    length: U32,
    /// Roots of the by-block-number tree, the by-size tree and the reverse-mapping tree.
    roots: [U32; 3],
    /// Levels of those trees.
    levels: [U32; 3],
    /// Index of the first free-list entry.
    flfirst: U32,
    /// Index of the last free-list entry.
    fllast: U32,
    /// Free-list entries in use.
    flcount: U32,
    /// Free blocks in the free-space trees.
    freeblks: U32,
    /// Longest free extent.
    longest: U32,
    /// Blocks the free-space trees use beyond their roots.
    btreeblks: U32,
    /// Version 5: the file system's metadata UUID.
    uuid: [u8; 16],
    /// Reverse-mapping and reference-count tree fields, spare space, LSN.
    other: [u8; 136],
    /// Version 5: CRC32c of the sector, little-endian.
    crc: [u8; 4],
    /// Padding.
    spare2: U32,
}

const _: () = assert!(size_of::<AgfRaw>() == AGF_LEN);

/// A validated AGF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agf {
    /// Root block of the by-block-number free-space tree (within the group, past its headers).
    pub bno_root: u32,
    /// Levels of that tree (1..=[`MAX_LEVELS`]).
    pub bno_level: u32,
    /// Free blocks the trees hold.
    pub free_blocks: u32,
    /// Longest free extent.
    pub longest: u32,
    /// Free-list blocks (reserved, used for us).
    pub free_list_count: u32,
}

impl Agf {
    /// Validates the AGF sector of group `agno` (`sector` is the whole sector).
    pub(crate) fn parse(sector: &[u8], agno: u32, g: &Geometry) -> Result<Agf, String> {
        let where_ = format!("allocation group {agno}");
        let Ok((raw, _)) = AgfRaw::read_from_prefix(sector) else {
            return Err(format!("the free-space header of {where_} is cut short"));
        };
        if raw.magicnum != MAGIC {
            return Err(format!(
                "the free-space header (AGF) of {where_} has no XAGF signature"
            ));
        }
        if g.has_crc() {
            if !checksum::verify(sector, CRC_OFFSET) {
                return Err(format!(
                    "the free-space header (AGF) of {where_} fails its checksum: run xfs_repair"
                ));
            }
            if raw.uuid != g.meta_uuid {
                return Err(format!(
                    "the free-space header (AGF) of {where_} belongs to another file system"
                ));
            }
        }
        let length = u64::from(raw.length.get());
        if raw.versionnum.get() != VERSION || raw.seqno.get() != agno || length != g.ag_len(agno) {
            return Err(format!(
                "the free-space header (AGF) of {where_} does not match the superblock \
                 (version {}, group {}, {length} blocks)",
                raw.versionnum.get(),
                raw.seqno.get()
            ));
        }
        let bno_root = raw.roots[0].get();
        let bno_level = raw.levels[0].get();
        if u64::from(bno_root) < g.first_data_block() || u64::from(bno_root) >= length {
            return Err(format!(
                "the free-space tree root of {where_} is at block {bno_root}, outside the group"
            ));
        }
        if !(1..=MAX_LEVELS).contains(&bno_level) {
            return Err(format!(
                "the free-space tree of {where_} claims {bno_level} levels"
            ));
        }
        let free_blocks = raw.freeblks.get();
        let longest = raw.longest.get();
        if u64::from(free_blocks) > length || longest > free_blocks {
            return Err(format!(
                "the free-space counters of {where_} are inconsistent ({free_blocks} free \
                 blocks, longest extent {longest}): run xfs_repair"
            ));
        }
        let header = if g.has_crc() { AGFL_V5_HEADER } else { 0 };
        let agfl_size = (g.sector_size - header) / 4;
        let free_list_count = raw.flcount.get();
        if u64::from(free_list_count) > agfl_size
            || u64::from(raw.flfirst.get()) >= agfl_size
            || u64::from(raw.fllast.get()) >= agfl_size
        {
            return Err(format!(
                "the free list of {where_} is inconsistent ({free_list_count} entries of \
                 {agfl_size}): run xfs_repair"
            ));
        }
        Ok(Agf {
            bno_root,
            bno_level,
            free_blocks,
            longest,
            free_list_count,
        })
    }
}
