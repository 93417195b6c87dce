//! On-disk structures of VirtualBox's VDI format (version 1.1, the only one VirtualBox and qemu
//! write), all little-endian, and the format's constants.
//!
//! ```text
//!   0x000  pre-header: 64 bytes of text ("<<< Oracle VM VirtualBox Disk Image >>>\n"),
//!          signature 0xbeda107f at 0x40, version 0x00010001 at 0x44
//!   0x048  header (VDIHEADER1, 0x180 bytes; VDIHEADER1PLUS adds the LCHS geometry: 0x190)
//!   offset_bmap  block map: one u32 per block of the virtual disk
//!                 0xffffffff free (reads zeros, or the parent's data in a differencing image)
//!                 0xfffffffe zero (reads zeros, even in a differencing image)
//!                 n          the block's data is in slot n of the data area
//!   offset_data  data area: slot n at offset_data + n * (block_extra + block_size), the
//!                block's extra data first, then its data; slots 0..blocks_allocated are used
//!                and a new block always goes into slot blocks_allocated
//! ```

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in a sector (the unit qemu aligns the block map and data area to).
pub(crate) const SECTOR: u64 = 512;
/// The signature at offset 0x40.
pub(crate) const SIGNATURE: u32 = 0xbeda_107f;
/// Offset of the signature.
pub(crate) const SIGNATURE_OFFSET: u64 = 0x40;
/// Version 1.1 as major << 16 | minor.
pub(crate) const VERSION_1_1: u32 = 0x0001_0001;
/// Where the header proper starts (after the text, signature and version).
pub(crate) const HEADER_START: u64 = 0x48;
/// `header_size` of a VDIHEADER1 (no LCHS geometry), as qemu writes it.
pub(crate) const HEADER1_SIZE: u32 = 0x180;
/// `header_size` of a VDIHEADER1PLUS (with LCHS geometry), as VirtualBox writes it.
pub(crate) const HEADER1_PLUS_SIZE: u32 = 0x190;
/// Bytes of the pre-header and header read at open (the first sector).
pub(crate) const HEADER_LEN: u64 = 512;
/// Offset of `blocks_allocated`, the only header field compaction rewrites.
pub(crate) const BLOCKS_ALLOCATED_OFFSET: u64 = 0x184;

/// Offset of `uuid_modify`, which a compaction that changes the content renews.
pub(crate) const UUID_MODIFY_OFFSET: u64 = 0x198;

/// Image type of a dynamic ("normal") image.
pub(crate) const TYPE_DYNAMIC: u32 = 1;
/// Image type of a fixed image: every block preallocated.
pub(crate) const TYPE_FIXED: u32 = 2;
/// Image type of an undo image (obsolete VirtualBox feature).
pub(crate) const TYPE_UNDO: u32 = 3;
/// Image type of a differencing image: free blocks read the parent's.
pub(crate) const TYPE_DIFFERENCING: u32 = 4;

/// A block map entry of a block with no data in this image.
pub(crate) const ENTRY_FREE: u32 = 0xffff_ffff;
/// A block map entry of a block that reads zeros and has no data.
pub(crate) const ENTRY_ZERO: u32 = 0xffff_fffe;
/// Most blocks a block map may describe (qemu's limit: the slots must stay below
/// [`ENTRY_ZERO`], and four bytes each must fit in 32 bits of offset).
pub(crate) const MAX_BLOCKS: u32 = 0x3fff_ffff;
/// Smallest block size accepted.
pub(crate) const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (VirtualBox writes 1 MiB; anything above this is hostile).
pub(crate) const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest per-block extra data accepted.
pub(crate) const MAX_BLOCK_EXTRA: u32 = 1 << 20;
/// Block size written when the caller does not choose one: what VirtualBox and qemu use (qemu
/// opens no other).
pub(crate) const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// Largest virtual size created: what [`MAX_BLOCKS`] blocks of 1 MiB address.
pub(crate) const MAX_CREATE_BLOCKS: u64 = MAX_BLOCKS as u64;
/// The text vdisk writes at offset 0 (VirtualBox's own, so its tools recognise the file).
pub(crate) const TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
/// Where vdisk puts the block map: one sector after the start, as qemu does.
pub(crate) const CREATE_BMAP_OFFSET: u64 = 0x200;

/// The pre-header and header, as they lie in the first 512 bytes of the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    /// Free text, conventionally "<<< ... >>>\n", NUL-padded.
    pub text: [u8; 64],
    /// [`SIGNATURE`].
    pub signature: U32,
    /// [`VERSION_1_1`].
    pub version: U32,
    /// Bytes of the header from offset 0x48: [`HEADER1_SIZE`] or [`HEADER1_PLUS_SIZE`].
    pub header_size: U32,
    /// [`TYPE_DYNAMIC`], [`TYPE_FIXED`], [`TYPE_UNDO`] or [`TYPE_DIFFERENCING`].
    pub image_type: U32,
    /// Flags (none defined that change the layout).
    pub image_flags: U32,
    /// Free-text description, NUL-padded.
    pub description: [u8; 256],
    /// Byte offset of the block map.
    pub offset_bmap: U32,
    /// Byte offset of the data area (slot 0).
    pub offset_data: U32,
    /// Legacy geometry: cylinders.
    pub cylinders: U32,
    /// Legacy geometry: heads.
    pub heads: U32,
    /// Legacy geometry: sectors per track.
    pub sectors: U32,
    /// Legacy geometry: bytes per sector (512).
    pub sector_size: U32,
    /// Unused (once a geometry translation mode).
    pub unused1: U32,
    /// Virtual size in bytes.
    pub disk_size: U64,
    /// Bytes of data per block (a power of two).
    pub block_size: U32,
    /// Bytes of extra data before each block's data in its slot.
    pub block_extra: U32,
    /// Entries in the block map.
    pub blocks_in_image: U32,
    /// Slots of the data area in use; the next block allocated goes into this slot.
    pub blocks_allocated: U32,
    /// This image's UUID (VirtualBox's `uuidCreate`), in VirtualBox's byte order.
    pub uuid_image: [u8; 16],
    /// Changed on every modification (`uuidModify`).
    pub uuid_modify: [u8; 16],
    /// Differencing images: the parent's [`Header::uuid_image`] (`uuidLinkage`).
    pub uuid_link: [u8; 16],
    /// Differencing images: the parent's [`Header::uuid_modify`] when the child was made.
    pub uuid_parent_modify: [u8; 16],
    /// VDIHEADER1PLUS only: LCHS cylinders.
    pub lchs_cylinders: U32,
    /// VDIHEADER1PLUS only: LCHS heads.
    pub lchs_heads: U32,
    /// VDIHEADER1PLUS only: LCHS sectors per track.
    pub lchs_sectors: U32,
    /// VDIHEADER1PLUS only: LCHS bytes per sector.
    pub lchs_sector_size: U32,
    /// Padding to the end of the first sector.
    pub padding: [u8; 40],
}

const _: () = assert!(size_of::<Header>() as u64 == HEADER_LEN);
const _: () = assert!(std::mem::offset_of!(Header, signature) as u64 == SIGNATURE_OFFSET);
const _: () = assert!(std::mem::offset_of!(Header, header_size) as u64 == HEADER_START);
const _: () = assert!(std::mem::offset_of!(Header, offset_bmap) as u64 == 0x154);
const _: () = assert!(std::mem::offset_of!(Header, disk_size) as u64 == 0x170);
const _: () =
    assert!(std::mem::offset_of!(Header, blocks_allocated) as u64 == BLOCKS_ALLOCATED_OFFSET);
const _: () = assert!(std::mem::offset_of!(Header, uuid_image) as u64 == 0x188);
const _: () = assert!(std::mem::offset_of!(Header, uuid_modify) as u64 == UUID_MODIFY_OFFSET);
const _: () = assert!(std::mem::offset_of!(Header, uuid_link) as u64 == 0x1a8);
const _: () = assert!(
    std::mem::offset_of!(Header, lchs_cylinders) as u64 == HEADER_START + HEADER1_SIZE as u64
);
const _: () = assert!(
    std::mem::offset_of!(Header, padding) as u64 == HEADER_START + HEADER1_PLUS_SIZE as u64
);

/// A UUID as VirtualBox stores it (the first three fields little-endian), in the usual text
/// form.
pub(crate) fn show_uuid(raw: &[u8; 16]) -> String {
    let mut b = *raw;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

/// A NUL-padded text field as a string (lossy, trimmed).
pub(crate) fn show_text(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_show_in_the_usual_text_form_from_virtualbox_byte_order() {
        let raw = [
            0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34,
            0x56, 0x78,
        ];
        assert_eq!(show_uuid(&raw), "12345678-1234-5678-9abc-def012345678");
    }
}
