//! The XFS superblock (`xfs_dsb`): signature, geometry and feature flags. Everything later
//! steps size a read or a loop with is validated here.
//!
//! The primary superblock is the first sector of allocation group 0, big-endian. Version 5
//! (`versionnum & 0xf == 5`) adds feature masks and a CRC32c over the whole sector.

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum;

/// `"XFSB"`.
pub(crate) const MAGIC: [u8; 4] = *b"XFSB";
/// Bytes of the superblock structure read here (through `meta_uuid`); the sector may be larger.
pub(crate) const SB_LEN: usize = 264;
/// Offset of `sb_crc` (version 5).
const CRC_OFFSET: usize = 224;
/// Basic block: the unit of disk addresses (`daddr`) and of log blocks.
pub(crate) const BBSIZE: u64 = 512;

/// Smallest and largest block sizes XFS formats.
const BLOCK_SIZES: std::ops::RangeInclusive<u64> = 512..=65536;
/// Smallest and largest sector sizes XFS formats.
const SECTOR_SIZES: std::ops::RangeInclusive<u64> = 512..=32768;
/// Smallest allocation group XFS accepts, in blocks (`XFS_MIN_AG_BLOCKS`).
const MIN_AG_BLOCKS: u64 = 64;
/// Largest allocation group, in bytes (`XFS_MAX_AG_BYTES`, 1 TiB).
const MAX_AG_BYTES: u64 = 1 << 40;

/// `versionnum` bits of a version 4 file system XFS still mounts (`XFS_SB_VERSION_OKBITS`
/// without the version number; the shared bit 0x200 is refused by every kernel).
const V4_OK_BITS: u16 = 0xfdf0;
/// `features2` bits known: lazy-count, attr2, projid32, crc, ftype.
const FEATURES2_KNOWN: u32 = 0x2 | 0x8 | 0x80 | 0x100 | 0x200;
/// Version 5 incompatible features: ftype, sparse inodes, meta uuid, bigtime, nrext64,
/// exchange-range, parent pointers. `NEEDSREPAIR` (0x10) is handled apart; metadata directory
/// trees (0x100) and zoned devices (0x200) move realtime and quota metadata and are not known.
const INCOMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80;
/// Version 5 incompatible feature: `xfs_repair` must run before the next mount.
pub(crate) const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
/// Version 5 incompatible feature: metadata blocks carry `meta_uuid`, not `uuid`.
const INCOMPAT_META_UUID: u32 = 0x4;
/// Version 5 read-only-compatible features: free inode btree, reverse mapping, reflink,
/// inode btree counters.
const RO_COMPAT_KNOWN: u32 = 0x1 | 0x2 | 0x4 | 0x8;
/// Version 5 incompatible log features: logged extended attribute updates.
const LOG_INCOMPAT_KNOWN: u32 = 0x1;

/// The on-disk superblock, as far as this analyser reads it (all big-endian).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Superblock {
    /// `"XFSB"`.
    magicnum: [u8; 4],
    /// File system block size in bytes.
    blocksize: U32,
    /// Blocks of the data device.
    dblocks: U64,
    /// Blocks of the realtime device.
    rblocks: U64,
    /// Realtime extents.
    rextents: U64,
    /// File system UUID.
    uuid: [u8; 16],
    /// First block of the internal log (an `agno << agblklog | agbno` number), 0 if external.
    logstart: U64,
    /// Root directory inode.
    rootino: U64,
    /// Realtime bitmap inode.
    rbmino: U64,
    /// Realtime summary inode.
    rsumino: U64,
    /// Realtime extent size in blocks.
    rextsize: U32,
    /// Blocks per allocation group (the last may be shorter).
    agblocks: U32,
    /// Number of allocation groups.
    agcount: U32,
    /// Realtime bitmap blocks.
    rbmblocks: U32,
    /// Log blocks.
    logblocks: U32,
    /// Version number (low 4 bits) and version 4 feature bits.
    versionnum: U16,
    /// Sector size in bytes.
    sectsize: U16,
    /// Inode size in bytes.
    inodesize: U16,
    /// Inodes per block.
    inopblock: U16,
    /// Volume label, NUL padded.
    fname: [u8; 12],
    /// log2 of `blocksize`.
    blocklog: u8,
    /// log2 of `sectsize`.
    sectlog: u8,
    /// log2 of `inodesize`.
    inodelog: u8,
    /// log2 of `inopblock`.
    inopblog: u8,
    /// log2 of `agblocks`, rounded up: the shift of AG numbers in block numbers.
    agblklog: u8,
    /// log2 of `rextents`.
    rextslog: u8,
    /// Non-zero while mkfs is still writing the file system.
    inprogress: u8,
    /// Maximum percentage of space for inodes.
    imax_pct: u8,
    /// Allocated inodes, free inodes, free data blocks, free realtime extents (counters).
    counters: [U64; 4],
    /// User and group quota inodes.
    quota_inodes: [U64; 2],
    /// Quota flags.
    qflags: U16,
    /// Miscellaneous flags.
    flags: u8,
    /// Shared version (unused).
    shared_vn: u8,
    /// Inode chunk alignment.
    inoalignmt: U32,
    /// Stripe unit and width.
    stripe: [U32; 2],
    /// log2 of the directory block size in blocks.
    dirblklog: u8,
    /// log2 of the log sector size.
    logsectlog: u8,
    /// Log sector size.
    logsectsize: U16,
    /// Log stripe unit.
    logsunit: U32,
    /// More feature bits.
    features2: U32,
    /// Copy of `features2` (an old alignment bug wrote it here).
    bad_features2: U32,
    /// Version 5: compatible features.
    features_compat: U32,
    /// Version 5: read-only compatible features.
    features_ro_compat: U32,
    /// Version 5: incompatible features.
    features_incompat: U32,
    /// Version 5: incompatible log features.
    features_log_incompat: U32,
    /// Version 5: CRC32c of the sector, little-endian.
    crc: [u8; 4],
    /// Sparse inode chunk alignment.
    spino_align: U32,
    /// Project quota inode.
    pquotino: U64,
    /// Last write sequence.
    lsn: U64,
    /// Version 5 with the meta-uuid feature: the UUID metadata blocks carry.
    meta_uuid: [u8; 16],
}

const _: () = assert!(size_of::<Superblock>() == SB_LEN);

/// Where the log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogPlacement {
    /// Inside the data device: AG `agno`, blocks `agbno..agbno + blocks`.
    Internal {
        /// Allocation group.
        agno: u32,
        /// First block in the group.
        agbno: u32,
        /// Blocks.
        blocks: u32,
    },
    /// On another device.
    External,
}

/// The validated geometry and features of a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// 4 or 5.
    pub version: u8,
    /// Block size in bytes (512..=64 KiB, a power of two).
    pub block_size: u64,
    /// Sector size in bytes (512..=32 KiB, a power of two, at most the block size).
    pub sector_size: u64,
    /// Blocks of the data device; `data_blocks * block_size` lies within the volume.
    pub data_blocks: u64,
    /// Blocks per allocation group.
    pub ag_blocks: u64,
    /// Allocation groups (`ceil(data_blocks / ag_blocks)`).
    pub ag_count: u32,
    /// log2 of `ag_blocks` rounded up.
    pub ag_block_log: u32,
    /// The log.
    pub log: LogPlacement,
    /// Blocks of a realtime device (0: none).
    pub realtime_blocks: u64,
    /// The UUID metadata blocks carry (`meta_uuid` or `uuid`).
    pub meta_uuid: [u8; 16],
    /// File system UUID.
    pub uuid: [u8; 16],
    /// Volume label.
    pub label: String,
    /// Version 5 incompatible features.
    pub incompat: u32,
}

impl Geometry {
    /// Blocks in allocation group `agno` (the last one may be shorter).
    pub(crate) fn ag_len(&self, agno: u32) -> u64 {
        let start = u64::from(agno) * self.ag_blocks;
        self.ag_blocks.min(self.data_blocks.saturating_sub(start))
    }

    /// Volume byte offset of block `agbno` of group `agno`.
    pub(crate) fn byte_of(&self, agno: u32, agbno: u64) -> u64 {
        (u64::from(agno) * self.ag_blocks + agbno) * self.block_size
    }

    /// Whether this is a version 5 (CRC) file system.
    pub(crate) fn has_crc(&self) -> bool {
        self.version == 5
    }

    /// First block of every group not holding the group's headers (superblock copy, AGF, AGI,
    /// AGFL: the first four sectors).
    pub(crate) fn first_data_block(&self) -> u64 {
        (4 * self.sector_size).div_ceil(self.block_size)
    }
}

/// What the first sector says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SbVerdict {
    /// No XFS signature.
    NotXfs,
    /// XFS signature, but the file system cannot be trusted (the reason says why).
    Untrusted(String),
    /// A usable superblock.
    Xfs(Box<Geometry>),
}

impl Superblock {
    /// Parses and validates the primary superblock. `sector` holds at least [`SB_LEN`] bytes
    /// from volume offset 0; `read_sector(len)` reads the first `len` bytes of the volume, for
    /// the CRC over a sector larger than `sector`.
    pub(crate) fn inspect(
        sector: &[u8],
        volume_size: u64,
        read_sector: impl FnOnce(usize) -> Option<Vec<u8>>,
    ) -> SbVerdict {
        let Ok((sb, _)) = Superblock::read_from_prefix(sector) else {
            return SbVerdict::NotXfs;
        };
        if sb.magicnum != MAGIC {
            return SbVerdict::NotXfs;
        }
        match sb.geometry(volume_size, read_sector) {
            Ok(g) => SbVerdict::Xfs(Box::new(g)),
            Err(reason) => SbVerdict::Untrusted(reason),
        }
    }

    fn geometry(
        &self,
        volume_size: u64,
        read_sector: impl FnOnce(usize) -> Option<Vec<u8>>,
    ) -> Result<Geometry, String> {
        let version = u8::try_from(self.versionnum.get() & 0xf).unwrap_or(0);
        if version != 4 && version != 5 {
            return Err(format!(
                "the superblock gives xfs version {version} (4 or 5 expected)"
            ));
        }
        let block_size = u64::from(self.blocksize.get());
        if !BLOCK_SIZES.contains(&block_size)
            || !block_size.is_power_of_two()
            || u32::from(self.blocklog) != block_size.trailing_zeros()
        {
            return Err(format!(
                "the superblock gives a block size of {block_size} bytes (log {}): 512 to \
                 65536 expected",
                self.blocklog
            ));
        }
        let sector_size = u64::from(self.sectsize.get());
        if !SECTOR_SIZES.contains(&sector_size)
            || !sector_size.is_power_of_two()
            || u32::from(self.sectlog) != sector_size.trailing_zeros()
            || sector_size > block_size
        {
            return Err(format!(
                "the superblock gives a sector size of {sector_size} bytes for {block_size}-byte \
                 blocks"
            ));
        }
        if version == 5 {
            let len = usize::try_from(sector_size).unwrap_or(usize::MAX);
            let bytes = read_sector(len).ok_or("the superblock sector cannot be read")?;
            if !checksum::verify(&bytes, CRC_OFFSET) {
                return Err("the superblock's checksum does not match: run xfs_repair".into());
            }
        }
        if self.inprogress != 0 {
            return Err("mkfs.xfs did not finish writing this file system".into());
        }
        self.check_features(version)?;
        let ag_blocks = u64::from(self.agblocks.get());
        let ag_count = self.agcount.get();
        let data_blocks = self.dblocks.get();
        if ag_blocks < MIN_AG_BLOCKS || ag_blocks * block_size > MAX_AG_BYTES {
            return Err(format!(
                "the superblock gives allocation groups of {ag_blocks} blocks"
            ));
        }
        let ag_block_log = ag_blocks.next_power_of_two().trailing_zeros();
        if u32::from(self.agblklog) != ag_block_log {
            return Err(format!(
                "the superblock's agblklog {} does not match {ag_blocks} blocks per group",
                self.agblklog
            ));
        }
        if ag_count == 0 || data_blocks.div_ceil(ag_blocks) != u64::from(ag_count) {
            return Err(format!(
                "the superblock gives {ag_count} allocation groups of {ag_blocks} blocks for \
                 {data_blocks} blocks"
            ));
        }
        let fs_bytes = data_blocks.checked_mul(block_size);
        if fs_bytes.is_none_or(|b| b > volume_size) {
            return Err(format!(
                "the file system has {data_blocks} blocks of {block_size} bytes, but the volume \
                 holds only {volume_size} bytes (truncated partition?)"
            ));
        }
        let geometry = Geometry {
            version,
            block_size,
            sector_size,
            data_blocks,
            ag_blocks,
            ag_count,
            ag_block_log,
            log: LogPlacement::External,
            realtime_blocks: self.rblocks.get(),
            meta_uuid: if version == 5 && self.features_incompat.get() & INCOMPAT_META_UUID != 0 {
                self.meta_uuid
            } else {
                self.uuid
            },
            uuid: self.uuid,
            label: label(&self.fname),
            incompat: if version == 5 {
                self.features_incompat.get()
            } else {
                0
            },
        };
        let log = self.log_placement(&geometry)?;
        Ok(Geometry { log, ..geometry })
    }

    /// Refuses feature bits this reader does not know: they may change where data lives.
    fn check_features(&self, version: u8) -> Result<(), String> {
        let versionnum = self.versionnum.get();
        let features2 = self.features2.get();
        if versionnum & 0xfff0 & !V4_OK_BITS != 0 {
            return Err(format!(
                "the superblock has unknown version feature bits {versionnum:#06x}"
            ));
        }
        // Bit 0x8000 (MOREBITS) says whether features2 is in use.
        if versionnum & 0x8000 != 0 && features2 & !FEATURES2_KNOWN != 0 {
            return Err(format!(
                "the superblock has unknown features2 bits {features2:#x}"
            ));
        }
        if version == 4 {
            return Ok(());
        }
        let incompat = self.features_incompat.get();
        if incompat & INCOMPAT_NEEDSREPAIR != 0 {
            return Err("the file system is marked as needing xfs_repair: run xfs_repair".into());
        }
        let checks = [
            (incompat, INCOMPAT_KNOWN, "incompatible"),
            (
                self.features_ro_compat.get(),
                RO_COMPAT_KNOWN,
                "read-only compatible",
            ),
            (
                self.features_log_incompat.get(),
                LOG_INCOMPAT_KNOWN,
                "incompatible log",
            ),
        ];
        for (bits, known, what) in checks {
            if bits & !known != 0 {
                return Err(format!(
                    "the file system uses {what} features unknown to vdisk ({:#x})",
                    bits & !known
                ));
            }
        }
        Ok(())
    }

    fn log_placement(&self, g: &Geometry) -> Result<LogPlacement, String> {
        let logstart = self.logstart.get();
        let blocks = self.logblocks.get();
        if logstart == 0 {
            return Ok(LogPlacement::External);
        }
        let agno = logstart >> g.ag_block_log;
        let agbno = logstart & ((1u64 << g.ag_block_log) - 1);
        let fits = u32::try_from(agno)
            .ok()
            .filter(|&a| a < g.ag_count)
            .filter(|&a| {
                agbno >= g.first_data_block()
                    && blocks > 0
                    && agbno + u64::from(blocks) <= g.ag_len(a)
            });
        match (fits, u32::try_from(agbno)) {
            (Some(agno), Ok(agbno)) => Ok(LogPlacement::Internal {
                agno,
                agbno,
                blocks,
            }),
            _ => Err(format!(
                "the superblock puts the {blocks}-block log at block {logstart:#x}, outside \
                 its allocation group"
            )),
        }
    }
}

/// The label: bytes up to the first NUL, lossy UTF-8.
fn label(fname: &[u8; 12]) -> String {
    let end = fname.iter().position(|&b| b == 0).unwrap_or(fname.len());
    String::from_utf8_lossy(&fname[..end]).into_owned()
}
