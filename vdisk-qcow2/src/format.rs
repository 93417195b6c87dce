//! On-disk structures of qemu's qcow2 format (versions 2 and 3), all big-endian, and the
//! format's constants (qemu's docs/interop/qcow2.txt).
//!
//! ```text
//!   cluster 0   header (72 bytes in v2, header_length in v3), header extensions
//!               (type, length, data padded to 8 bytes; type 0 ends them), backing file name
//!   anywhere    L1 table (u64 per 512 MiB of guest space at 64 KiB clusters) ─► L2 tables
//!   (cluster-   (one cluster of u64 entries) ─► data clusters, zero clusters (v3),
//!    aligned)   compressed clusters (raw deflate, 512-byte sector granular)
//!               refcount table ─► refcount blocks (2^refcount_order bits per host cluster)
//!               snapshot table ─► each snapshot's L1 table ─► L2 tables shared or its own
//! ```

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// "QFI\xfb".
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of a version 2 header (the fields up to `snapshots_offset`).
pub(crate) const V2_HEADER_LEN: u64 = 72;
/// Smallest version 3 `header_length` (up to `header_length` itself).
pub(crate) const V3_MIN_HEADER_LEN: u64 = 104;
/// Smallest and largest `cluster_bits` (512 bytes to 2 MiB), as qemu accepts them.
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// Largest `refcount_order` (64-bit refcounts).
pub(crate) const MAX_REFCOUNT_ORDER: u32 = 6;
/// Largest L1 table, in bytes (qemu's QCOW_MAX_L1_SIZE).
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table, in bytes (qemu's QCOW_MAX_REFTABLE_SIZE).
pub(crate) const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Most internal snapshots (qemu's QCOW_MAX_SNAPSHOTS).
pub(crate) const MAX_SNAPSHOTS: u32 = 65536;
/// Largest snapshot table, in bytes (qemu's QCOW_MAX_SNAPSHOTS_SIZE).
pub(crate) const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;
/// Largest extra data of one snapshot entry (qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA).
pub(crate) const MAX_SNAPSHOT_EXTRA: u32 = 1024;
/// Longest backing file name (qemu refuses longer ones).
pub(crate) const MAX_BACKING_NAME: u32 = 1023;
/// Most L2 entries loaded at open, over all allocated L2 tables of the active L1 table (8
/// bytes each: 256 MiB). A larger table set is refused rather than exhausting memory: that is
/// 2 TiB of allocated guest space at 64 KiB clusters, 128 GiB at 4 KiB clusters.
pub(crate) const MAX_LOADED_L2_ENTRIES: u64 = 1 << 25;
/// Most guest clusters (blocks) an image may have, virtual size and clusters the L2 tables
/// address past it together. Core plans a compaction with one state per block (16 bytes each:
/// 1 GiB) and `info` counts them all, so a header alone (a few bytes can claim 256 TiB) must not
/// decide how much memory and time vdisk spends. As many blocks as the largest VHDX has (64 TiB
/// in 1 MiB blocks): 4 TiB at 64 KiB clusters, 128 TiB at 2 MiB, 256 GiB at 4 KiB. A larger
/// image is refused as not supported (yet), its file unchanged.
pub(crate) const MAX_GUEST_CLUSTERS: u64 = 1 << 26;
/// Most host clusters whose refcounts `check` rebuilds (6 bytes each: 192 MiB; a 2 TiB file
/// at 64 KiB clusters, 16 GiB at 512 bytes).
pub(crate) const MAX_CHECKED_CLUSTERS: u64 = 1 << 25;

/// Incompatible feature bit 0: the image was not closed cleanly (lazy refcounts pending).
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found the image corrupt.
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub(crate) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib (or is set at all).
pub(crate) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub(crate) const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Compatible feature bit 0: lazy refcounts.
pub(crate) const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit 0: the bitmaps extension is consistent.
pub(crate) const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit 1: the external data file is raw (readable without the image).
pub(crate) const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension: end of the list.
pub(crate) const EXT_END: u32 = 0;
/// Header extension: the backing file's format name.
pub(crate) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: the feature name table.
pub(crate) const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension: persistent dirty bitmaps.
pub(crate) const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full disk encryption header pointer.
pub(crate) const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension: the external data file's name.
pub(crate) const EXT_DATA_FILE: u32 = 0x4441_5441;

/// L1 and L2 entry bit 63: the refcount of the cluster pointed to is exactly one.
pub(crate) const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entry bit 62: the cluster is compressed.
pub(crate) const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Standard L2 entry bit 0 (version 3): the cluster reads as zeros.
pub(crate) const OFLAG_ZERO: u64 = 1;
/// Host offset bits (9..=55) of an L1 entry or a standard L2 entry.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits of an L1 entry that must be zero (1..=8 and 56..=62; bit 0 is reserved too).
pub(crate) const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Bits of a standard L2 entry that must be zero (1..=8 and 56..=61).
pub(crate) const L2_STANDARD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Bits of a refcount table entry that must be zero.
pub(crate) const REFTABLE_RESERVED: u64 = 0x1ff;

/// The header as it lies at offset 0 (v3 layout; a v2 header stops after `snapshots_offset`,
/// the rest is then read as defaults, never from the file).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// 2 or 3.
    pub version: U32,
    /// Where the backing file name lies (0: no backing file).
    pub backing_file_offset: U64,
    /// Length of the backing file name (not NUL-terminated).
    pub backing_file_size: U32,
    /// log2 of the cluster size.
    pub cluster_bits: U32,
    /// Virtual size in bytes.
    pub size: U64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: U32,
    /// Entries in the active L1 table.
    pub l1_size: U32,
    /// Offset of the active L1 table (cluster-aligned).
    pub l1_table_offset: U64,
    /// Offset of the refcount table (cluster-aligned).
    pub refcount_table_offset: U64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: U32,
    /// Internal snapshots.
    pub nb_snapshots: U32,
    /// Offset of the snapshot table (cluster-aligned).
    pub snapshots_offset: U64,
    /// v3: incompatible feature bits.
    pub incompatible_features: U64,
    /// v3: compatible feature bits.
    pub compatible_features: U64,
    /// v3: autoclear feature bits.
    pub autoclear_features: U64,
    /// v3: refcount width is 2^refcount_order bits (v2: 4).
    pub refcount_order: U32,
    /// v3: length of the header (extensions start here).
    pub header_length: U32,
    /// v3 with header_length > 104: 0 zlib, 1 zstd.
    pub compression_type: u8,
    /// Padding to a multiple of 8.
    pub padding: [u8; 7],
}

/// Bytes of [`Header`].
pub(crate) const HEADER_LEN: u64 = size_of::<Header>() as u64;

const _: () = assert!(HEADER_LEN == 112);
const _: () = assert!(std::mem::offset_of!(Header, l1_size) == 36);
const _: () = assert!(std::mem::offset_of!(Header, snapshots_offset) == 64);
const _: () = assert!(std::mem::offset_of!(Header, incompatible_features) as u64 == V2_HEADER_LEN);
const _: () = assert!(std::mem::offset_of!(Header, refcount_order) == 96);
const _: () = assert!(std::mem::offset_of!(Header, compression_type) as u64 == V3_MIN_HEADER_LEN);

/// The fixed part of a snapshot table entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SnapshotEntry {
    /// Offset of the snapshot's L1 table.
    pub l1_table_offset: U64,
    /// Entries in it.
    pub l1_size: U32,
    /// Length of the id string.
    pub id_str_size: zerocopy::byteorder::big_endian::U16,
    /// Length of the name.
    pub name_size: zerocopy::byteorder::big_endian::U16,
    /// Time of the snapshot, seconds.
    pub date_sec: U32,
    /// Time of the snapshot, nanoseconds.
    pub date_nsec: U32,
    /// Guest clock at the snapshot.
    pub vm_clock_nsec: U64,
    /// Size of the saved VM state (32-bit; see the extra data).
    pub vm_state_size: U32,
    /// Bytes of extra data following this fixed part.
    pub extra_data_size: U32,
}

/// Bytes of [`SnapshotEntry`].
pub(crate) const SNAPSHOT_ENTRY_LEN: u64 = size_of::<SnapshotEntry>() as u64;
const _: () = assert!(SNAPSHOT_ENTRY_LEN == 40);

/// Reads a big-endian u64 at `at` of `b` (the caller has bounded `at + 8 <= b.len()`).
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Reads a big-endian u32 at `at` of `b` (bounded by the caller).
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

/// `x` as an index or length in memory. Callers bound `x` first (a cluster is at most 2 MiB,
/// a table at most 64 MiB); on a host where it would not fit, it saturates, so an allocation
/// fails or a slice access is refused rather than wrapping.
#[allow(
    clippy::cast_possible_truncation,
    reason = "compared with usize::MAX first"
)]
pub(crate) const fn idx(x: u64) -> usize {
    if x > usize::MAX as u64 {
        usize::MAX
    } else {
        x as usize
    }
}
