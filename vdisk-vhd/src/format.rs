//! On-disk structures of VHD 1.0 ("Virtual Hard Disk Image Format Specification", Microsoft,
//! 2006), all big-endian, and the format's constants.

#[cfg(test)]
use zerocopy::FromZeros;
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in a VHD sector; every table offset counts these.
pub(crate) const SECTOR: u64 = 512;
/// Size of the footer at the end of every VHD (and its copy at offset 0 of a dynamic one).
pub(crate) const FOOTER_LEN: u64 = 512;
/// Size of the dynamic disk header.
pub(crate) const HEADER_LEN: u64 = 1024;
/// Footer cookie.
pub(crate) const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// Dynamic header cookie.
pub(crate) const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// File format version written in the footer (1.0).
pub(crate) const FOOTER_VERSION: u32 = 0x0001_0000;
/// Dynamic header version (1.0); the only one defined.
pub(crate) const HEADER_VERSION: u32 = 0x0001_0000;
/// Footer `features`: bit 1 is reserved and must always be set.
pub(crate) const FEATURES_RESERVED: u32 = 0x0000_0002;
/// Footer `data_offset` of a fixed disk (no further structures).
pub(crate) const NO_DATA_OFFSET: u64 = u64::MAX;
/// A BAT entry of a block that is not allocated.
pub(crate) const BAT_UNALLOCATED: u32 = u32::MAX;
/// Disk type of a fixed disk.
pub(crate) const DISK_FIXED: u32 = 2;
/// Disk type of a dynamic disk.
pub(crate) const DISK_DYNAMIC: u32 = 3;
/// Disk type of a differencing disk.
pub(crate) const DISK_DIFFERENCING: u32 = 4;
/// Block size written by [`crate::VhdDriver`] when the caller does not choose one (what
/// Hyper-V and qemu use).
pub(crate) const DEFAULT_BLOCK_SIZE: u64 = 2 << 20;
/// Smallest block size accepted (one sector).
pub(crate) const MIN_BLOCK_SIZE: u64 = SECTOR;
/// Largest block size accepted (Hyper-V uses 512 KiB and 2 MiB, qemu 2 MiB).
pub(crate) const MAX_BLOCK_SIZE: u64 = 256 << 20;
/// Largest virtual size created: 2040 GiB, the VHD limit Hyper-V and qemu enforce.
pub(crate) const MAX_CREATE_SIZE: u64 = 2040 << 30;
/// Largest virtual size opened (a margin over [`MAX_CREATE_SIZE`] for other writers).
pub(crate) const MAX_OPEN_SIZE: u64 = 2 << 40;
/// Most BAT entries accepted: 64 MiB of table (2 TiB in 128 KiB blocks).
pub(crate) const MAX_BAT_ENTRIES: u64 = 1 << 24;
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
pub(crate) const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// Creator application written by vdisk.
pub(crate) const CREATOR_APP: [u8; 4] = *b"vdsk";
/// Creator version written by vdisk: 0.1 as major << 16 | minor.
pub(crate) const CREATOR_VERSION: u32 = 0x0000_0001;
/// Creator host OS written by vdisk: "Wi2k", the value every current writer uses (Hyper-V,
/// Disk2VHD, qemu) whatever the host; "Mac " would only confuse readers.
pub(crate) const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";

/// The 512-byte footer at the end of the file (spec: "Hard Disk Footer Format").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Footer {
    /// "conectix".
    pub cookie: [u8; 8],
    /// Feature flags (bit 0 temporary disk, bit 1 reserved, always set).
    pub features: U32,
    /// Format version, 0x00010000.
    pub version: U32,
    /// Byte offset of the dynamic header; all ones for a fixed disk.
    pub data_offset: U64,
    /// Creation time, seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: U32,
    /// Application that created the image ("vpc ", "qemu", "win ", "d2v ", "vdsk").
    pub creator_app: [u8; 4],
    /// Version of that application.
    pub creator_version: U32,
    /// Host OS of the creator ("Wi2k", "Mac ").
    pub creator_host_os: [u8; 4],
    /// Virtual size at creation, bytes.
    pub original_size: U64,
    /// Current virtual size, bytes.
    pub current_size: U64,
    /// CHS geometry: cylinders.
    pub cylinders: U16,
    /// CHS geometry: heads.
    pub heads: u8,
    /// CHS geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: U32,
    /// One's complement of the byte sum of the footer with this field zeroed.
    pub checksum: U32,
    /// Identifies the image; differencing children point at it.
    pub unique_id: [u8; 16],
    /// 1 if the VM was saved (hibernated) with this disk attached.
    pub saved_state: u8,
    /// Zero.
    pub reserved: [u8; 427],
}

/// One parent locator entry of the dynamic header (differencing disks).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ParentLocator {
    /// Platform code ("W2ru", "W2ku", "Mac ", "MacX") or zero if unused.
    pub platform_code: [u8; 4],
    /// Sectors reserved for the locator data.
    pub data_space: U32,
    /// Bytes of locator data.
    pub data_length: U32,
    /// Zero.
    pub reserved: U32,
    /// Byte offset of the locator data.
    pub data_offset: U64,
}

/// The 1024-byte dynamic disk header (spec: "Dynamic Disk Header Format").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DynamicHeader {
    /// "cxsparse".
    pub cookie: [u8; 8],
    /// Next structure; unused, all ones.
    pub data_offset: U64,
    /// Byte offset of the block allocation table.
    pub table_offset: U64,
    /// Header version, 0x00010000.
    pub version: U32,
    /// Entries in the BAT.
    pub max_table_entries: U32,
    /// Bytes of data per block (not counting the sector bitmap).
    pub block_size: U32,
    /// One's complement of the byte sum of the header with this field zeroed.
    pub checksum: U32,
    /// Unique id of the parent (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Modification time of the parent (differencing disks).
    pub parent_timestamp: U32,
    /// Zero.
    pub reserved1: U32,
    /// Parent file name, UTF-16BE (differencing disks).
    pub parent_name: [u8; 512],
    /// Where the parent's path is stored (differencing disks).
    pub parent_locators: [ParentLocator; 8],
    /// Zero.
    pub reserved2: [u8; 256],
}

const _: () = assert!(size_of::<Footer>() as u64 == FOOTER_LEN);
const _: () = assert!(size_of::<ParentLocator>() == 24);
const _: () = assert!(size_of::<DynamicHeader>() as u64 == HEADER_LEN);

/// Byte range of `checksum` in the footer.
pub(crate) const FOOTER_CHECKSUM_AT: usize = 64;
/// Byte range of `checksum` in the dynamic header.
pub(crate) const HEADER_CHECKSUM_AT: usize = 36;
const _: () = assert!(std::mem::offset_of!(Footer, checksum) == FOOTER_CHECKSUM_AT);
const _: () = assert!(std::mem::offset_of!(DynamicHeader, checksum) == HEADER_CHECKSUM_AT);

/// The VHD checksum: one's complement of the sum of all bytes, the 4 bytes of the checksum
/// field at `field_at` counted as zero.
pub(crate) fn checksum(bytes: &[u8], field_at: usize) -> u32 {
    let field = field_at..field_at.saturating_add(4);
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !field.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// The checksum this footer's bytes call for.
    pub(crate) fn computed_checksum(&self) -> u32 {
        checksum(self.as_bytes(), FOOTER_CHECKSUM_AT)
    }

    /// Stores the correct checksum.
    pub(crate) fn seal(&mut self) {
        self.checksum = U32::new(self.computed_checksum());
    }

    /// The checksum old qemu versions stored: computed before the unique id was filled in.
    pub(crate) fn checksum_without_unique_id(&self) -> u32 {
        let mut copy = *self;
        copy.unique_id = [0; 16];
        copy.computed_checksum()
    }

    /// The checksum of this footer as a dynamic disk without a unique id: what a tool that
    /// turned an old qemu dynamic image into a differencing one left behind (dfvfs's
    /// `image-differential.vhd`).
    pub(crate) fn checksum_as_dynamic_without_unique_id(&self) -> u32 {
        let mut copy = *self;
        copy.disk_type = U32::new(DISK_DYNAMIC);
        copy.unique_id = [0; 16];
        copy.computed_checksum()
    }
}

impl DynamicHeader {
    /// The checksum this header's bytes call for.
    pub(crate) fn computed_checksum(&self) -> u32 {
        checksum(self.as_bytes(), HEADER_CHECKSUM_AT)
    }

    /// The checksum of this header with every parent field zeroed (the same tool's quirk as
    /// [`Footer::checksum_as_dynamic_without_unique_id`]).
    pub(crate) fn checksum_without_parent_fields(&self) -> u32 {
        let mut copy = *self;
        copy.parent_unique_id = [0; 16];
        copy.parent_timestamp = U32::new(0);
        copy.parent_name = [0; 512];
        copy.parent_locators = zerocopy::FromZeros::new_zeroed();
        copy.computed_checksum()
    }

    /// Stores the correct checksum.
    pub(crate) fn seal(&mut self) {
        self.checksum = U32::new(self.computed_checksum());
    }
}

/// Shows a 4- or 8-byte tag for messages: printable ASCII as text, anything else escaped.
pub(crate) fn show_tag(tag: &[u8]) -> String {
    tag.iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_its_own_field_and_complements_the_sum() {
        let mut bytes = [0u8; 16];
        bytes[0] = 1;
        bytes[1] = 2;
        bytes[4..8].copy_from_slice(&[0xff; 4]);
        assert_eq!(checksum(&bytes, 4), !3u32);
        let mut footer = Footer::new_zeroed();
        footer.cookie = FOOTER_COOKIE;
        footer.seal();
        assert_eq!(footer.checksum.get(), footer.computed_checksum());
        assert_eq!(
            footer.computed_checksum(),
            !b"conectix".iter().map(|&b| u32::from(b)).sum::<u32>()
        );
    }

    #[test]
    fn tags_show_printable_ascii_and_escape_the_rest() {
        assert_eq!(show_tag(b"vpc "), "vpc ");
        assert_eq!(show_tag(&[0, b'a']), "\\x00a");
    }
}
