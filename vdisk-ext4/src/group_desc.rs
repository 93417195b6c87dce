//! Group descriptors: 32 bytes, or `s_desc_size` (64 or more) with `64bit`, whose high halves
//! then extend each block number and count. Each is checked against its checksum when the
//! volume has one (crc32c with `metadata_csum`, crc16 with `uninit_bg`), as the kernel does
//! before trusting a descriptor.

use std::mem::offset_of;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum;
use crate::superblock::Geometry;

/// `bg_flags`: the block bitmap is not initialised (compute it).
pub(crate) const BLOCK_UNINIT: u16 = 0x2;

/// The low half of a descriptor (all there is without `64bit`).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Low {
    /// Block bitmap block, low 32 bits.
    block_bitmap: U32,
    /// Inode bitmap block, low 32 bits.
    inode_bitmap: U32,
    /// First inode table block, low 32 bits.
    inode_table: U32,
    /// Free clusters, low 16 bits.
    free_blocks_count: U16,
    /// Free inodes, directories, low 16 bits.
    inode_counts: [u8; 4],
    /// `BLOCK_UNINIT`, `INODE_UNINIT`, `INODE_ZEROED`.
    flags: U16,
    /// Snapshot exclude bitmap.
    exclude_bitmap: U32,
    /// crc32c of the block bitmap, low 16 bits.
    block_bitmap_csum: U16,
    /// crc32c of the inode bitmap, low 16 bits; unused inodes, low 16 bits.
    inode_csum_and_unused: [u8; 4],
    /// Checksum of the descriptor.
    checksum: U16,
}

/// The high half of a 64-byte descriptor.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct High {
    /// Block bitmap block, high 32 bits.
    block_bitmap: U32,
    /// Inode bitmap block, high 32 bits.
    inode_bitmap: U32,
    /// First inode table block, high 32 bits.
    inode_table: U32,
    /// Free clusters, high 16 bits.
    free_blocks_count: U16,
    /// Free inodes, directories, unused inodes, exclude bitmap: high halves.
    misc: [u8; 10],
    /// crc32c of the block bitmap, high 16 bits.
    block_bitmap_csum: U16,
    /// crc32c of the inode bitmap, high 16 bits; padding.
    rest: [u8; 6],
}

const _: () = assert!(size_of::<Low>() == 32 && size_of::<High>() == 32);
const _: () = assert!(offset_of!(Low, checksum) == 0x1E);
const _: () = assert!(offset_of!(High, block_bitmap_csum) == 0x38 - 0x20);

/// Offset of `bg_checksum`.
const CHECKSUM_AT: usize = offset_of!(Low, checksum);
/// Descriptor size from which the block bitmap checksum has a high half.
const BITMAP_CSUM_HI_END: u64 = 0x3A;

/// One group's descriptor, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupDesc {
    /// Block of the block bitmap.
    pub block_bitmap: u64,
    /// Block of the inode bitmap.
    pub inode_bitmap: u64,
    /// First block of the inode table.
    pub inode_table: u64,
    /// Free clusters of the group.
    pub free_clusters: u64,
    /// `bg_flags`.
    pub flags: u16,
    /// crc32c of the block bitmap (only the low 16 bits unless the descriptor is 64 bytes or
    /// more).
    pub block_bitmap_csum: u32,
}

impl GroupDesc {
    /// Decodes `bytes` (exactly `geo.desc_size`) as group `g`'s descriptor and checks its
    /// checksum. `Err` gives the reason.
    pub(crate) fn parse(geo: &Geometry, g: u64, bytes: &[u8]) -> Result<GroupDesc, String> {
        let (low, rest) =
            Low::read_from_prefix(bytes).map_err(|_| "group descriptor is short".to_owned())?;
        let high = if geo.features.is_64bit() {
            High::read_from_prefix(rest).ok().map(|(h, _)| h)
        } else {
            None
        };
        verify(geo, g, bytes, low.checksum.get())?;
        let join = |lo: u32, hi: Option<u32>| u64::from(lo) | u64::from(hi.unwrap_or(0)) << 32;
        let csum_hi = match &high {
            Some(h) if geo.desc_size >= BITMAP_CSUM_HI_END => u32::from(h.block_bitmap_csum.get()),
            _ => 0,
        };
        Ok(GroupDesc {
            block_bitmap: join(low.block_bitmap.get(), high.map(|h| h.block_bitmap.get())),
            inode_bitmap: join(low.inode_bitmap.get(), high.map(|h| h.inode_bitmap.get())),
            inode_table: join(low.inode_table.get(), high.map(|h| h.inode_table.get())),
            free_clusters: u64::from(low.free_blocks_count.get())
                | high.map_or(0, |h| u64::from(h.free_blocks_count.get()) << 16),
            flags: low.flags.get(),
            block_bitmap_csum: u32::from(low.block_bitmap_csum.get()) | csum_hi << 16,
        })
    }

    /// Whether the block bitmap is uninitialised and must be computed (honoured only when the
    /// descriptors carry checksums, as in the kernel).
    pub(crate) fn block_uninit(&self, geo: &Geometry) -> bool {
        geo.features.has_group_csum() && self.flags & BLOCK_UNINIT != 0
    }

    /// Whether `csum` (the crc32c of a block bitmap) matches the descriptor's.
    pub(crate) fn bitmap_csum_matches(&self, geo: &Geometry, csum: u32) -> bool {
        let mask = if geo.desc_size >= BITMAP_CSUM_HI_END {
            u32::MAX
        } else {
            0xFFFF
        };
        csum & mask == self.block_bitmap_csum
    }
}

/// Checks the descriptor checksum of group `g`, if the volume has one.
fn verify(geo: &Geometry, g: u64, bytes: &[u8], stored: u16) -> Result<(), String> {
    let group = u32::try_from(g).unwrap_or(u32::MAX).to_le_bytes();
    let tail = bytes.get(CHECKSUM_AT + 2..).unwrap_or(&[]);
    let want = if geo.features.has_metadata_csum() {
        let crc = checksum::ext4(geo.csum_seed, &group);
        let crc = checksum::ext4(crc, &bytes[..CHECKSUM_AT]);
        let crc = checksum::ext4(crc, &[0, 0]);
        let crc = checksum::ext4(crc, tail);
        (crc & 0xFFFF) as u16
    } else if geo.features.has_group_csum() {
        let crc = checksum::crc16(!0, &geo.uuid);
        let crc = checksum::crc16(crc, &group);
        let crc = checksum::crc16(crc, &bytes[..CHECKSUM_AT]);
        checksum::crc16(crc, tail)
    } else {
        return Ok(());
    };
    if want == stored {
        Ok(())
    } else {
        Err(format!(
            "ext4 group descriptor {g} checksum does not match (metadata is damaged; run e2fsck)"
        ))
    }
}
