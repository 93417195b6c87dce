//! On-disk structures of VHDX ([MS-VHDX] v1.0), all little-endian, and the format's constants.
//!
//! GUIDs are stored in the Microsoft mixed-endian layout (`Uuid::from_bytes_le`).

use uuid::Uuid;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One kibibyte.
pub(crate) const KIB: u64 = 1 << 10;
/// One mebibyte.
pub(crate) const MIB: u64 = 1 << 20;

/// File type identifier signature at offset 0.
pub(crate) const FILE_SIGNATURE: [u8; 8] = *b"vhdxfile";
/// Size of the header section (file identifier, two headers, two region tables, reserved).
pub(crate) const HEADER_SECTION_LEN: u64 = MIB;
/// Offsets of the two headers.
pub(crate) const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
/// Bytes covered by a header's checksum.
pub(crate) const HEADER_LEN: usize = 4096;
/// Header signature "head".
pub(crate) const HEADER_SIGNATURE: [u8; 4] = *b"head";
/// The only header version defined.
pub(crate) const HEADER_VERSION: u16 = 1;
/// The only log version defined.
pub(crate) const LOG_VERSION: u16 = 0;
/// Offsets of the two region tables.
pub(crate) const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
/// Bytes covered by a region table's checksum.
pub(crate) const REGION_TABLE_LEN: usize = 64 * 1024;
/// Region table signature "regi".
pub(crate) const REGION_SIGNATURE: [u8; 4] = *b"regi";
/// Most region table entries allowed by the spec.
pub(crate) const MAX_REGION_ENTRIES: u32 = 2047;
/// Regions and the log are aligned to (and sized in multiples of) this.
pub(crate) const REGION_ALIGN: u64 = MIB;
/// Metadata table signature "metadata".
pub(crate) const METADATA_SIGNATURE: [u8; 8] = *b"metadata";
/// Size of the metadata table at the start of the metadata region.
pub(crate) const METADATA_TABLE_LEN: usize = 64 * 1024;
/// Most metadata table entries allowed by the spec.
pub(crate) const MAX_METADATA_ENTRIES: u16 = 2047;
/// Largest metadata item allowed by the spec.
pub(crate) const MAX_METADATA_ITEM_LEN: u32 = 1 << 20;
/// Smallest block size.
pub(crate) const MIN_BLOCK_SIZE: u32 = 1 << 20;
/// Largest block size.
pub(crate) const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest virtual disk size (64 TiB).
pub(crate) const MAX_DISK_SIZE: u64 = 64 << 40;
/// Largest log accepted (the spec sets no limit; writers use 1 MiB to a few MiB).
pub(crate) const MAX_LOG_LEN: u64 = 256 * MIB;
/// Largest file offset a log entry may target or ask the file to grow to (256 TiB: the
/// 64 TiB disk limit plus room for any metadata layout).
pub(crate) const MAX_FILE_END: u64 = 256 << 40;
/// Log sectors, data pages and log alignment unit.
pub(crate) const LOG_SECTOR: u64 = 4096;
/// Log entry signature "loge".
pub(crate) const LOG_ENTRY_SIGNATURE: [u8; 4] = *b"loge";
/// Zero descriptor signature "zero".
pub(crate) const ZERO_DESC_SIGNATURE: [u8; 4] = *b"zero";
/// Data descriptor signature "desc".
pub(crate) const DATA_DESC_SIGNATURE: [u8; 4] = *b"desc";
/// Data sector signature "data".
pub(crate) const DATA_SECTOR_SIGNATURE: [u8; 4] = *b"data";
/// Log entries never target the file identifier or the headers (below the region tables).
pub(crate) const LOGGABLE_OFFSET: u64 = 192 * KIB;
/// Sector-bitmap chunk: 2^23 sectors per sector bitmap block.
pub(crate) const CHUNK_SECTORS: u64 = 1 << 23;

/// Region GUID of the block allocation table.
pub(crate) const BAT_REGION: Uuid = Uuid::from_u128(0x2DC27766_F623_4200_9D64_115E9BFD4A08);
/// Region GUID of the metadata region.
pub(crate) const METADATA_REGION: Uuid = Uuid::from_u128(0x8B7CA206_4790_4B9A_B8FE_575F050F886E);
/// Metadata item: file parameters.
pub(crate) const ITEM_FILE_PARAMETERS: Uuid =
    Uuid::from_u128(0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B);
/// Metadata item: virtual disk size.
pub(crate) const ITEM_DISK_SIZE: Uuid = Uuid::from_u128(0x2FA54224_CD1B_4876_B211_5DBED83BF4B8);
/// Metadata item: virtual disk id (page 83 data).
pub(crate) const ITEM_DISK_ID: Uuid = Uuid::from_u128(0xBECA12AB_B2E6_4523_93EF_C309E000C746);
/// Metadata item: logical sector size.
pub(crate) const ITEM_LOGICAL_SECTOR: Uuid =
    Uuid::from_u128(0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F);
/// Metadata item: physical sector size.
pub(crate) const ITEM_PHYSICAL_SECTOR: Uuid =
    Uuid::from_u128(0xCDA348C7_445D_4471_9CC9_E9885251C556);
/// Metadata item: parent locator (differencing images).
pub(crate) const ITEM_PARENT_LOCATOR: Uuid =
    Uuid::from_u128(0xA8D35F2D_B30B_454D_ABF7_D3D84834AB0C);

/// Parent locator type of a VHDX parent (MS-VHDX 2.6.2.6.3).
pub(crate) const VHDX_LOCATOR_TYPE: Uuid = Uuid::from_u128(0xB04AEFB7_D19E_4A81_B789_25B8E9445913);
/// Bytes of one sector bitmap block.
pub(crate) const SECTOR_BITMAP_LEN: u64 = MIB;

/// BAT payload state: not present (reads zeros, or the parent in a child).
pub(crate) const PAYLOAD_NOT_PRESENT: u8 = 0;
/// BAT payload state: undefined (trimmed; content may be anything).
pub(crate) const PAYLOAD_UNDEFINED: u8 = 1;
/// BAT payload state: zero.
pub(crate) const PAYLOAD_ZERO: u8 = 2;
/// BAT payload state: unmapped (trimmed).
pub(crate) const PAYLOAD_UNMAPPED: u8 = 3;
/// BAT payload state: fully present in the file.
pub(crate) const PAYLOAD_FULLY_PRESENT: u8 = 6;
/// BAT payload state: partially present (differencing only; sector bitmap decides).
pub(crate) const PAYLOAD_PARTIALLY_PRESENT: u8 = 7;
/// BAT sector bitmap state: not present.
pub(crate) const SB_NOT_PRESENT: u8 = 0;
/// BAT sector bitmap state: present.
pub(crate) const SB_PRESENT: u8 = 6;

/// The start of the file type identifier (the rest of its 64 KiB is reserved).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct FileIdentifier {
    /// "vhdxfile".
    pub signature: [u8; 8],
    /// Name of the creating application, UTF-16LE, NUL-padded.
    pub creator: [u8; 512],
}

/// One of the two 4 KiB headers.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    /// "head".
    pub signature: [u8; 4],
    /// CRC-32C over the 4 KiB header with this field zeroed.
    pub checksum: U32,
    /// Higher means newer; the valid header with the highest number is current.
    pub sequence_number: U64,
    /// Changes on the first write to the file in a session.
    pub file_write_guid: [u8; 16],
    /// Changes on the first write that changes what the disk reads.
    pub data_write_guid: [u8; 16],
    /// Identifies the active log entries; zero when the log is empty.
    pub log_guid: [u8; 16],
    /// Log format version, 0.
    pub log_version: U16,
    /// Format version, 1.
    pub version: U16,
    /// Bytes of the log, a multiple of 1 MiB.
    pub log_length: U32,
    /// Byte offset of the log, a multiple of 1 MiB, at least 1 MiB.
    pub log_offset: U64,
    /// Zero.
    pub reserved: [u8; 4016],
}

/// The 16-byte start of a region table.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RegionTableHeader {
    /// "regi".
    pub signature: [u8; 4],
    /// CRC-32C over the 64 KiB table with this field zeroed.
    pub checksum: U32,
    /// Number of valid entries that follow, at most 2047.
    pub entry_count: U32,
    /// Zero.
    pub reserved: U32,
}

/// One region table entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RegionEntry {
    /// What the region holds (BAT, metadata, or unknown).
    pub guid: [u8; 16],
    /// Byte offset of the region, a multiple of 1 MiB, at least 1 MiB.
    pub file_offset: U64,
    /// Bytes of the region, a multiple of 1 MiB.
    pub length: U32,
    /// Bit 0: a reader that does not know the region must refuse the file.
    pub required: U32,
}

/// The 32-byte start of the metadata table.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct MetadataTableHeader {
    /// "metadata".
    pub signature: [u8; 8],
    /// Zero.
    pub reserved: U16,
    /// Number of entries that follow, at most 2047.
    pub entry_count: U16,
    /// Zero.
    pub reserved2: [u8; 20],
}

/// One metadata table entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct MetadataEntry {
    /// What the item is.
    pub item_id: [u8; 16],
    /// Offset of the item from the start of the metadata region (at least 64 KiB), or 0 when
    /// the length is 0.
    pub offset: U32,
    /// Bytes of the item, at most 1 MiB.
    pub length: U32,
    /// Bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired.
    pub flags: U32,
    /// Zero.
    pub reserved: U32,
}

/// Metadata entry flag: user item (not interpreted by the format).
pub(crate) const META_IS_USER: u32 = 1;
/// Metadata entry flag: a reader that does not know the item must refuse the file.
pub(crate) const META_IS_REQUIRED: u32 = 4;

/// The file parameters metadata item.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct FileParameters {
    /// Payload block size in bytes, a power of two from 1 MiB to 256 MiB.
    pub block_size: U32,
    /// Bit 0 LeaveBlockAllocated (fixed disk), bit 1 HasParent (differencing disk).
    pub flags: U32,
}

/// File parameters flag: blocks are never freed (a fixed disk).
pub(crate) const PARAM_LEAVE_BLOCK_ALLOCATED: u32 = 1;
/// File parameters flag: the image has a parent (a differencing disk).
pub(crate) const PARAM_HAS_PARENT: u32 = 2;

/// The 20-byte header of the parent locator metadata item.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LocatorHeader {
    /// What kind of parent the key/value pairs locate (VHDX: [`VHDX_LOCATOR_TYPE`]).
    pub locator_type: [u8; 16],
    /// Zero.
    pub reserved: U16,
    /// Number of key/value entries that follow.
    pub key_value_count: U16,
}

/// One key/value entry of the parent locator; strings are UTF-16LE without a NUL.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LocatorEntry {
    /// Offset of the key from the start of the item, non-zero.
    pub key_offset: U32,
    /// Offset of the value from the start of the item, non-zero.
    pub value_offset: U32,
    /// Bytes of the key, non-zero.
    pub key_length: U16,
    /// Bytes of the value, non-zero.
    pub value_length: U16,
}

/// The 64-byte header at the start of every log entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LogEntryHeader {
    /// "loge".
    pub signature: [u8; 4],
    /// CRC-32C over the whole entry (`entry_length` bytes) with this field zeroed.
    pub checksum: U32,
    /// Bytes of the entry, a multiple of 4 KiB.
    pub entry_length: U32,
    /// Offset in the log of the oldest entry still needed (the sequence's first entry).
    pub tail: U32,
    /// Entry number; consecutive within a sequence.
    pub sequence_number: U64,
    /// Number of descriptors following this header.
    pub descriptor_count: U32,
    /// Zero.
    pub reserved: U32,
    /// Must equal the header's LogGuid for the entry to be valid.
    pub log_guid: [u8; 16],
    /// File size the writer had made durable when writing the entry.
    pub flushed_file_offset: U64,
    /// File size the image needs once the entry is applied.
    pub last_file_offset: U64,
}

/// A log descriptor that zeroes a range of the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ZeroDescriptor {
    /// "zero".
    pub signature: [u8; 4],
    /// Zero.
    pub reserved: U32,
    /// Bytes to zero, a multiple of 4 KiB.
    pub zero_length: U64,
    /// Where to zero, a multiple of 4 KiB.
    pub file_offset: U64,
    /// The entry's sequence number.
    pub sequence_number: U64,
}

/// A log descriptor that writes one 4 KiB page whose middle is in a data sector.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DataDescriptor {
    /// "desc".
    pub signature: [u8; 4],
    /// The page's last 4 bytes (the data sector keeps its sequence number there).
    pub trailing_bytes: [u8; 4],
    /// The page's first 8 bytes (the data sector keeps its signature and sequence there).
    pub leading_bytes: [u8; 8],
    /// Where the page goes, a multiple of 4 KiB.
    pub file_offset: U64,
    /// The entry's sequence number.
    pub sequence_number: U64,
}

/// A 4 KiB data sector of a log entry, one per data descriptor, in descriptor order.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DataSector {
    /// "data".
    pub signature: [u8; 4],
    /// High 32 bits of the entry's sequence number.
    pub sequence_high: U32,
    /// Bytes 8..4092 of the page.
    pub data: [u8; 4084],
    /// Low 32 bits of the entry's sequence number.
    pub sequence_low: U32,
}

const _: () = assert!(size_of::<FileIdentifier>() == 520);
const _: () = assert!(size_of::<Header>() == HEADER_LEN);
const _: () = assert!(size_of::<RegionTableHeader>() == 16);
const _: () = assert!(size_of::<RegionEntry>() == 32);
const _: () = assert!(size_of::<MetadataTableHeader>() == 32);
const _: () = assert!(size_of::<MetadataEntry>() == 32);
const _: () = assert!(size_of::<FileParameters>() == 8);
const _: () = assert!(size_of::<LocatorHeader>() == 20);
const _: () = assert!(size_of::<LocatorEntry>() == 12);
const _: () = assert!(size_of::<LogEntryHeader>() == 64);
const _: () = assert!(size_of::<ZeroDescriptor>() == 32);
const _: () = assert!(size_of::<DataDescriptor>() == 32);
const _: () = assert!(size_of::<DataSector>() as u64 == LOG_SECTOR);

/// The GUID in an on-disk field.
pub(crate) fn guid(bytes: [u8; 16]) -> Uuid {
    Uuid::from_bytes_le(bytes)
}

/// CRC-32C of `bytes` with the 4-byte checksum field at `at` taken as zero.
pub(crate) fn crc_with_zeroed_field(bytes: &[u8], at: usize) -> u32 {
    let (head, rest) = bytes.split_at(at.min(bytes.len()));
    let crc = crc32c::crc32c(head);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4][..rest.len().min(4)]);
    crc32c::crc32c_append(crc, rest.get(4..).unwrap_or(&[]))
}
