//! The btrfs superblock: the primary copy at 64 KiB, its checksum, and every field the rest
//! of the analysis sizes a read or a loop with, bounded here first.

use vdisk_core::fs::{Examined, damaged};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum::CsumType;

/// Byte offset of the primary superblock.
pub(crate) const PRIMARY_OFFSET: u64 = 64 << 10;
/// Bytes of a superblock.
pub(crate) const SUPER_LEN: usize = 4096;
/// Offsets of the superblock copies the file system writes (64 KiB, 64 MiB, 256 GiB).
pub(crate) const MIRRORS: [u64; 3] = [PRIMARY_OFFSET, 64 << 20, 256 << 30];
/// The device bytes btrfs never allocates: the first MiB (boot loaders, the superblock).
pub(crate) const RESERVED_START: u64 = 1 << 20;
/// `_BHRfS_M`, at byte 0x40.
pub(crate) const MAGIC: [u8; 8] = *b"_BHRfS_M";
/// Largest `sys_chunk_array_size` (the array's room in the superblock).
const SYS_CHUNK_ARRAY_MAX: u32 = 2048;
/// Largest tree level + 1 (`BTRFS_MAX_LEVEL`).
pub(crate) const MAX_LEVEL: u8 = 8;

/// Superblock flags the analyser accepts: the header flags `WRITTEN` and `RELOC` that the
/// superblock shares with tree nodes. Every other flag (error state, seed device, metadata
/// dump, an interrupted `btrfstune` change) is a reason not to trust the volume.
const KNOWN_FLAGS: u64 = 0b11;
/// `BTRFS_SUPER_FLAG_ERROR`: the file system hit an error and was forced read-only.
const FLAG_ERROR: u64 = 1 << 2;
/// `BTRFS_SUPER_FLAG_SEEDING`: a seed device other file systems are built upon.
const FLAG_SEEDING: u64 = 1 << 32;

/// Incompatible features: the ones whose on-disk meaning the analyser knows.
pub(crate) mod incompat {
    /// Mixed back references (every modern file system).
    pub const MIXED_BACKREF: u64 = 1 << 0;
    /// A default subvolume other than the top one.
    pub const DEFAULT_SUBVOL: u64 = 1 << 1;
    /// Data and metadata share block groups.
    pub const MIXED_GROUPS: u64 = 1 << 2;
    /// LZO compression.
    pub const COMPRESS_LZO: u64 = 1 << 3;
    /// Zstd compression.
    pub const COMPRESS_ZSTD: u64 = 1 << 4;
    /// Tree nodes larger than a page.
    pub const BIG_METADATA: u64 = 1 << 5;
    /// Extended inode references.
    pub const EXTENDED_IREF: u64 = 1 << 6;
    /// RAID5/6 was used (the chunks' profiles decide).
    pub const RAID56: u64 = 1 << 7;
    /// Tree blocks recorded as `METADATA_ITEM`s.
    pub const SKINNY_METADATA: u64 = 1 << 8;
    /// Holes are implicit in files.
    pub const NO_HOLES: u64 = 1 << 9;
    /// Tree nodes carry `metadata_uuid` instead of `fsid`.
    pub const METADATA_UUID: u64 = 1 << 10;
    /// RAID1C3/C4 was used (the chunks' profiles decide).
    pub const RAID1C34: u64 = 1 << 11;
    /// Simple quotas (owner references inside extent items).
    pub const SIMPLE_QUOTA: u64 = 1 << 16;
    /// All of the above.
    pub const KNOWN: u64 = MIXED_BACKREF
        | DEFAULT_SUBVOL
        | MIXED_GROUPS
        | COMPRESS_LZO
        | COMPRESS_ZSTD
        | BIG_METADATA
        | EXTENDED_IREF
        | RAID56
        | SKINNY_METADATA
        | NO_HOLES
        | METADATA_UUID
        | RAID1C34
        | SIMPLE_QUOTA;
}

/// Read-only-compatible features the analyser knows.
pub(crate) mod compat_ro {
    /// A free-space tree exists.
    pub const FREE_SPACE_TREE: u64 = 1 << 0;
    /// The free-space tree is valid.
    pub const FREE_SPACE_TREE_VALID: u64 = 1 << 1;
    /// fs-verity.
    pub const VERITY: u64 = 1 << 2;
    /// Block group items live in their own tree.
    pub const BLOCK_GROUP_TREE: u64 = 1 << 3;
    /// All of the above.
    pub const KNOWN: u64 = FREE_SPACE_TREE | FREE_SPACE_TREE_VALID | VERITY | BLOCK_GROUP_TREE;
}

/// The device item (`btrfs_dev_item`), 98 bytes: this device as the file system knows it.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DevItem {
    /// Device id inside the file system (1 for the first device).
    pub devid: U64,
    /// Bytes of the device the file system may use.
    pub total_bytes: U64,
    /// Bytes of it in chunks.
    pub bytes_used: U64,
    /// Optimal I/O alignment.
    io_align: U32,
    /// Optimal I/O width.
    io_width: U32,
    /// Minimal I/O size.
    sector_size: U32,
    /// Device type (unused).
    dev_type: U64,
    /// Generation of the last change of this item.
    generation: U64,
    /// Start of the usable area (unused, 0).
    start_offset: U64,
    /// Grouping (unused).
    dev_group: U32,
    /// Seek speed hint.
    seek_speed: u8,
    /// Bandwidth hint.
    bandwidth: u8,
    /// Device UUID.
    uuid: [u8; 16],
    /// File system UUID.
    fsid: [u8; 16],
}

pub(crate) const DEV_ITEM_LEN: usize = 98;
const _: () = assert!(size_of::<DevItem>() == DEV_ITEM_LEN);

/// The 4096-byte superblock (`btrfs_super_block`, little-endian).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Superblock {
    /// Checksum of bytes 0x20..4096.
    pub csum: [u8; 32],
    /// File system UUID.
    pub fsid: [u8; 16],
    /// Where this copy lives (its own byte offset).
    pub bytenr: U64,
    /// Superblock flags.
    pub flags: U64,
    /// `_BHRfS_M`.
    pub magic: [u8; 8],
    /// Transaction id of the last commit.
    pub generation: U64,
    /// Logical address of the root tree's root node.
    pub root: U64,
    /// Logical address of the chunk tree's root node.
    pub chunk_root: U64,
    /// Logical address of the log tree's root (0: no log to replay).
    pub log_root: U64,
    /// Unused.
    log_root_transid: U64,
    /// Bytes of all devices.
    pub total_bytes: U64,
    /// Bytes used by extents (logical).
    pub bytes_used: U64,
    /// Object id of the root directory.
    root_dir_objectid: U64,
    /// Devices in the file system.
    pub num_devices: U64,
    /// Data block size.
    pub sectorsize: U32,
    /// Tree node size.
    pub nodesize: U32,
    /// Old name of nodesize (unused).
    leafsize: U32,
    /// Stripe size (unused).
    stripesize: U32,
    /// Bytes used in `sys_chunk_array`.
    pub sys_chunk_array_size: U32,
    /// Generation of the chunk tree root.
    pub chunk_root_generation: U64,
    /// Compatible features.
    compat_flags: U64,
    /// Read-only-compatible features.
    pub compat_ro_flags: U64,
    /// Incompatible features.
    pub incompat_flags: U64,
    /// Checksum algorithm.
    pub csum_type: U16,
    /// Level of the root tree's root node.
    pub root_level: u8,
    /// Level of the chunk tree's root node.
    pub chunk_root_level: u8,
    /// Level of the log tree's root node.
    log_root_level: u8,
    /// This device.
    pub dev_item: DevItem,
    /// Label, NUL-terminated.
    pub label: [u8; 256],
    /// Generation of the v1 space cache.
    cache_generation: U64,
    /// Generation of the UUID tree.
    uuid_tree_generation: U64,
    /// UUID written in tree nodes when `METADATA_UUID` is set.
    pub metadata_uuid: [u8; 16],
    /// Global roots (extent tree v2).
    nr_global_roots: U64,
    /// Reserved.
    reserved: [u8; 216],
    /// Chunk items of the SYSTEM chunks, to bootstrap the chunk tree.
    pub sys_chunk_array: [u8; 2048],
    /// Backup roots.
    super_roots: [u8; 672],
    /// Padding to 4096.
    padding: [u8; 565],
}

const _: () = assert!(size_of::<Superblock>() == SUPER_LEN);

/// The validated facts the rest of the analysis uses.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub csum: CsumType,
    /// UUID every tree node header carries.
    pub node_fsid: [u8; 16],
    pub sectorsize: u64,
    pub nodesize: u64,
    pub generation: u64,
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub chunk_root_generation: u64,
    pub devid: u64,
    /// Bytes of this device the file system uses, at most the volume's size.
    pub dev_bytes: u64,
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub compat_ro: u64,
    pub label: String,
    /// The bytes of `sys_chunk_array` in use.
    pub sys_chunk_array: Vec<u8>,
}

/// Whether `bytes` (a 4096-byte superblock copy) carries the btrfs magic.
pub(crate) fn has_magic(bytes: &[u8]) -> bool {
    bytes.get(0x40..0x48) == Some(&MAGIC[..])
}

fn is_pow2_within(v: u64, lo: u64, hi: u64) -> bool {
    v.is_power_of_two() && (lo..=hi).contains(&v)
}

impl Geometry {
    /// Validates the primary superblock `bytes` (carrying the magic) of a `volume_size`-byte
    /// volume. Features or states the analyser cannot vouch for are [`Doubt::Damaged`] with
    /// the reason for the user.
    pub(crate) fn parse(bytes: &[u8; SUPER_LEN], volume_size: u64) -> Examined<Geometry> {
        let Ok(sb) = Superblock::ref_from_bytes(bytes) else {
            return damaged("btrfs superblock could not be read");
        };
        let csum = CsumType::from_raw(sb.csum_type.get())?;
        if !csum.verify(bytes) {
            return damaged("btrfs superblock checksum mismatch");
        }
        if sb.bytenr.get() != PRIMARY_OFFSET {
            return damaged(format!(
                "btrfs superblock at 64 KiB says it lives at byte {:#x}",
                sb.bytenr.get()
            ));
        }
        let num_devices = sb.num_devices.get();
        if num_devices != 1 {
            return damaged(if num_devices == 0 {
                "btrfs superblock counts no device".to_owned()
            } else {
                format!(
                    "btrfs spans several devices ({num_devices}); only single-device btrfs is supported"
                )
            });
        }
        if sb.log_root.get() != 0 {
            return damaged(
                "the file system has an unreplayed log; mount and unmount it cleanly first",
            );
        }
        check_flags(sb.flags.get())?;
        let incompat = sb.incompat_flags.get();
        if incompat & !incompat::KNOWN != 0 {
            return damaged(format!(
                "btrfs uses incompatible features this version does not know (flags {:#x})",
                incompat & !incompat::KNOWN
            ));
        }
        let compat_ro = sb.compat_ro_flags.get();
        if compat_ro & !compat_ro::KNOWN != 0 {
            return damaged(format!(
                "btrfs uses read-only features this version does not know (flags {:#x})",
                compat_ro & !compat_ro::KNOWN
            ));
        }
        let sectorsize = u64::from(sb.sectorsize.get());
        let nodesize = u64::from(sb.nodesize.get());
        if !is_pow2_within(sectorsize, 4096, 64 << 10) {
            return damaged(format!("btrfs sector size {sectorsize} is not valid"));
        }
        if !is_pow2_within(nodesize, sectorsize, 64 << 10) {
            return damaged(format!("btrfs node size {nodesize} is not valid"));
        }
        let array_len = sb.sys_chunk_array_size.get();
        if array_len > SYS_CHUNK_ARRAY_MAX {
            return damaged(format!(
                "btrfs system chunk array claims {array_len} bytes, more than its 2048"
            ));
        }
        let (root_level, chunk_root_level) = (sb.root_level, sb.chunk_root_level);
        if root_level >= MAX_LEVEL || chunk_root_level >= MAX_LEVEL {
            return damaged("btrfs tree root level is out of range");
        }
        let (root, chunk_root) = (sb.root.get(), sb.chunk_root.get());
        if root == 0
            || chunk_root == 0
            || !root.is_multiple_of(sectorsize)
            || !chunk_root.is_multiple_of(sectorsize)
        {
            return damaged("btrfs tree root address is not valid");
        }
        let dev_bytes = sb.dev_item.total_bytes.get();
        let total_bytes = sb.total_bytes.get();
        if dev_bytes > volume_size {
            return damaged(format!(
                "btrfs claims a {dev_bytes}-byte device but its volume has {volume_size} bytes (truncated image?)"
            ));
        }
        if dev_bytes > total_bytes || dev_bytes < RESERVED_START {
            return damaged("btrfs device size disagrees with the file system size");
        }
        let node_fsid = if incompat & incompat::METADATA_UUID != 0 {
            sb.metadata_uuid
        } else {
            sb.fsid
        };
        let label_len = sb.label.iter().position(|&b| b == 0).unwrap_or(256);
        let array_len = usize::try_from(array_len).unwrap_or(0);
        Ok(Geometry {
            csum,
            node_fsid,
            sectorsize,
            nodesize,
            generation: sb.generation.get(),
            root,
            root_level,
            chunk_root,
            chunk_root_level,
            chunk_root_generation: sb.chunk_root_generation.get(),
            devid: sb.dev_item.devid.get(),
            dev_bytes,
            total_bytes,
            bytes_used: sb.bytes_used.get(),
            compat_ro,
            label: String::from_utf8_lossy(&sb.label[..label_len]).into_owned(),
            sys_chunk_array: sb.sys_chunk_array[..array_len].to_vec(),
        })
    }

    /// Whether `bytes`, a superblock copy read at `offset`, is a valid copy of this file
    /// system written after the primary (a newer copy some tools would prefer).
    pub(crate) fn is_newer_copy(
        &self,
        bytes: &[u8; SUPER_LEN],
        fsid: &[u8; 16],
        offset: u64,
    ) -> bool {
        let Ok(sb) = Superblock::ref_from_bytes(bytes) else {
            return false;
        };
        has_magic(bytes)
            && sb.fsid == *fsid
            && sb.bytenr.get() == offset
            && self.csum.verify(bytes)
            && sb.generation.get() > self.generation
    }
}

fn check_flags(flags: u64) -> Examined<()> {
    if flags & FLAG_ERROR != 0 {
        return damaged("btrfs recorded an error and wants `btrfs check` first");
    }
    if flags & FLAG_SEEDING != 0 {
        return damaged("btrfs is a seed device that other file systems are built upon");
    }
    if flags & !KNOWN_FLAGS != 0 {
        return damaged(format!(
            "btrfs superblock has flags this version does not know ({:#x}), such as an interrupted btrfstune change",
            flags & !KNOWN_FLAGS
        ));
    }
    Ok(())
}

/// The file system UUID of a superblock copy.
pub(crate) fn fsid_of(bytes: &[u8; SUPER_LEN]) -> [u8; 16] {
    Superblock::ref_from_bytes(bytes).map_or([0; 16], |sb| sb.fsid)
}
