//! The superblock: 1024 bytes at byte 1024 of the volume, magic 0xEF53 at its byte 56. Every
//! field the analysis later computes an offset or a length from is bounded here, once, into a
//! [`Geometry`]; nothing downstream reads the raw struct.

use std::mem::offset_of;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum;
use crate::features::{Features, RoCompat};

/// Byte offset of the superblock in the volume.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock.
pub(crate) const SUPERBLOCK_LEN: usize = 1024;
/// `s_magic`.
const MAGIC: u16 = 0xEF53;
/// `s_state`: cleanly unmounted (for file systems without a journal: not mounted now).
pub(crate) const STATE_VALID: u16 = 0x1;
/// `s_state`: errors detected.
pub(crate) const STATE_ERROR: u16 = 0x2;
/// Largest block size (`s_log_block_size` up to 6: 64 KiB).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Largest bigalloc cluster, as log2 of blocks per cluster.
const MAX_LOG_CLUSTER_RATIO: u32 = 16;
/// Fewest blocks per group mke2fs makes: also bounds the number of groups to walk.
const MIN_BLOCKS_PER_GROUP: u64 = 256;
/// Smallest and largest group descriptor sizes with `64bit` (a power of two).
const DESC_SIZES_64: std::ops::RangeInclusive<u16> = 64..=1024;
/// `s_checksum_type` for crc32c, the only one defined.
const CHECKSUM_CRC32C: u8 = 1;

/// The ext2/3/4 superblock (all little-endian). Fields the analyser does not use are kept as
/// named byte arrays so the layout stays exact.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Superblock {
    /// Inodes in the file system.
    inodes_count: U32,
    /// Blocks in the file system, low 32 bits.
    blocks_count_lo: U32,
    /// Blocks reserved for the superuser, low 32 bits.
    r_blocks_count_lo: U32,
    /// Free blocks (blocks, also with bigalloc), low 32 bits; updated lazily by the kernel.
    free_blocks_count_lo: U32,
    /// Free inodes.
    free_inodes_count: U32,
    /// First block of group 0: 1 for 1 KiB blocks, else 0.
    first_data_block: U32,
    /// Block size is 2^(10 + this).
    log_block_size: U32,
    /// Cluster size is 2^(10 + this) with bigalloc, else equal to `log_block_size`.
    log_cluster_size: U32,
    /// Blocks per group.
    blocks_per_group: U32,
    /// Clusters per group (bits of one block bitmap).
    clusters_per_group: U32,
    /// Inodes per group.
    inodes_per_group: U32,
    /// Mount time, write time.
    times: [u8; 8],
    /// Mount count, maximum mount count.
    mount_counts: [u8; 4],
    /// 0xEF53.
    magic: U16,
    /// `STATE_VALID`, `STATE_ERROR`, orphans being recovered (4).
    state: U16,
    /// What to do on errors (continue, remount read-only, panic).
    errors: U16,
    /// Minor revision.
    minor_rev_level: U16,
    /// Last check time, check interval, creator OS.
    check_and_os: [u8; 12],
    /// 0 = original format (fixed inode size), 1 = dynamic (features, variable inodes).
    rev_level: U32,
    /// Default uid and gid of reserved blocks.
    def_res_ids: [u8; 4],
    /// First non-reserved inode.
    first_ino: U32,
    /// Inode size in bytes (revision 1).
    inode_size: U16,
    /// Group of this superblock copy.
    block_group_nr: U16,
    /// Compatible features.
    feature_compat: U32,
    /// Incompatible features: a reader that does not know one must not mount.
    feature_incompat: U32,
    /// Read-only compatible features: a writer that does not know one must not write.
    feature_ro_compat: U32,
    /// Volume UUID.
    uuid: [u8; 16],
    /// Volume label, NUL padded.
    volume_name: [u8; 16],
    /// Directory where last mounted.
    last_mounted: [u8; 64],
    /// Compression (unused), preallocation hints.
    algorithm_and_prealloc: [u8; 6],
    /// Blocks reserved after the group descriptor table for online growth.
    reserved_gdt_blocks: U16,
    /// UUID of the external journal.
    journal_uuid: [u8; 16],
    /// Inode of the internal journal (8), or 0.
    journal_inum: U32,
    /// Device number of the external journal.
    journal_dev: U32,
    /// Head of the list of orphaned inodes awaiting cleanup.
    last_orphan: U32,
    /// Directory hash seed, default hash version, journal backup type.
    hash: [u8; 18],
    /// Group descriptor size with `64bit`.
    desc_size: U16,
    /// Default mount options.
    default_mount_opts: U32,
    /// First meta block group with `meta_bg`.
    first_meta_bg: U32,
    /// Creation time, journal inode backup.
    mkfs_and_jnl_blocks: [u8; 72],
    /// Blocks in the file system, high 32 bits (`64bit`).
    blocks_count_hi: U32,
    /// Reserved blocks, high 32 bits.
    r_blocks_count_hi: U32,
    /// Free blocks, high 32 bits.
    free_blocks_count_hi: U32,
    /// Inode extra sizes, flags, RAID hints, MMP interval.
    misc: [u8; 12],
    /// Block of the multi-mount protection structure.
    mmp_block: U64,
    /// RAID stripe width.
    raid_stripe_width: U32,
    /// Flex group size is 2^this.
    log_groups_per_flex: u8,
    /// Metadata checksum algorithm (1 = crc32c).
    checksum_type: u8,
    /// Encryption level, padding, kilobytes written, snapshot fields.
    misc2: [u8; 30],
    /// Errors seen since the last check.
    error_count: U32,
    /// First and last error records, mount options, quota inodes, overhead.
    error_records_to_overhead: [u8; 180],
    /// Groups holding superblock backups with `sparse_super2` (0 = none).
    backup_bgs: [U32; 2],
    /// Encryption algorithms, salt, lost+found inode, project quota inode.
    encryption_to_prj_quota: [u8; 28],
    /// crc32c of the UUID, when `INCOMPAT_CSUM_SEED` is set.
    checksum_seed: U32,
    /// Time high bytes, error codes, encoding.
    time_hi_to_encoding: [u8; 12],
    /// Inode of the orphan file.
    orphan_file_inum: U32,
    /// Padding.
    reserved: [u8; 376],
    /// crc32c of the superblock up to this field (`metadata_csum`).
    checksum: U32,
}

const _: () = assert!(size_of::<Superblock>() == SUPERBLOCK_LEN);
const _: () = assert!(offset_of!(Superblock, magic) == 0x38);
const _: () = assert!(offset_of!(Superblock, feature_compat) == 0x5C);
const _: () = assert!(offset_of!(Superblock, reserved_gdt_blocks) == 0xCE);
const _: () = assert!(offset_of!(Superblock, journal_inum) == 0xE0);
const _: () = assert!(offset_of!(Superblock, desc_size) == 0xFE);
const _: () = assert!(offset_of!(Superblock, blocks_count_hi) == 0x150);
const _: () = assert!(offset_of!(Superblock, mmp_block) == 0x168);
const _: () = assert!(offset_of!(Superblock, log_groups_per_flex) == 0x174);
const _: () = assert!(offset_of!(Superblock, error_count) == 0x194);
const _: () = assert!(offset_of!(Superblock, backup_bgs) == 0x24C);
const _: () = assert!(offset_of!(Superblock, checksum_seed) == 0x270);
const _: () = assert!(offset_of!(Superblock, orphan_file_inum) == 0x280);
const _: () = assert!(offset_of!(Superblock, checksum) == 0x3FC);

/// The bounded facts of a superblock that passed [`Superblock::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per block, 1 KiB to 64 KiB.
    pub block_size: u64,
    /// Blocks per cluster (bigalloc), a power of two; 1 without bigalloc.
    pub cluster_ratio: u64,
    /// Blocks in the file system; `blocks_count * block_size` fits in the volume.
    pub blocks_count: u64,
    /// First block of group 0 (0 or 1).
    pub first_data_block: u64,
    /// Blocks per group, `clusters_per_group * cluster_ratio`.
    pub blocks_per_group: u64,
    /// Clusters per group: bits of one block bitmap, at most `8 * block_size`.
    pub clusters_per_group: u64,
    /// Inodes per group (non-zero).
    pub inodes_per_group: u64,
    /// Bytes per inode record, 128 to `block_size`, a power of two.
    pub inode_size: u64,
    /// Number of groups.
    pub groups: u64,
    /// Bytes per group descriptor: 32, or 64 to 1024 with `64bit`.
    pub desc_size: u64,
    /// Reserved GDT blocks after the descriptor table in groups with a superblock copy.
    pub reserved_gdt_blocks: u64,
    /// First meta block group (`meta_bg`).
    pub first_meta_bg: u64,
    /// Groups holding superblock backups with `sparse_super2`.
    pub backup_bgs: [u64; 2],
    /// Feature flags.
    pub features: Features,
    /// The seed of every metadata checksum (`metadata_csum`).
    pub csum_seed: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label.
    pub label: String,
    /// `s_state`.
    pub state: u16,
    /// Errors recorded since the last check.
    pub error_count: u32,
    /// Internal journal inode (0: none or external).
    pub journal_inum: u32,
    /// External journal UUID (when the journal is external).
    pub journal_uuid: [u8; 16],
    /// Head of the orphan inode list.
    pub last_orphan: u32,
    /// Inode of the orphan file (`orphan_file`).
    pub orphan_file_inum: u32,
    /// Multi-mount protection block (`mmp`).
    pub mmp_block: u64,
    /// Free blocks (blocks, also with bigalloc) as the superblock says: the kernel updates it
    /// lazily.
    pub free_blocks_count: u64,
}

impl Geometry {
    /// Bytes per cluster (the allocation unit the bitmaps count).
    pub(crate) fn cluster_size(&self) -> u64 {
        self.block_size * self.cluster_ratio
    }

    /// Group descriptors per block.
    pub(crate) fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }

    /// The first block of group `g`.
    pub(crate) fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    /// Blocks of group `g` that exist (the last group may be short).
    pub(crate) fn group_blocks(&self, g: u64) -> u64 {
        let first = self.group_first_block(g);
        self.blocks_per_group.min(self.blocks_count - first)
    }

    /// Clusters of group `g` that exist: the meaningful bits of its bitmap.
    pub(crate) fn group_clusters(&self, g: u64) -> u64 {
        self.group_blocks(g).div_ceil(self.cluster_ratio)
    }
}

/// What the superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SuperVerdict {
    /// No ext2/3/4 magic.
    NotExt,
    /// The magic, but a field is out of range or the checksum fails (the reason says which).
    Damaged(String),
    /// A usable superblock.
    Ext(Box<Geometry>),
}

impl Superblock {
    /// Parses and validates `bytes` (the 1024 bytes at [`SUPERBLOCK_OFFSET`]) for a volume of
    /// `volume_size` bytes.
    pub(crate) fn inspect(bytes: &[u8], volume_size: u64) -> SuperVerdict {
        let Ok((sb, _)) = Superblock::read_from_prefix(bytes) else {
            return SuperVerdict::NotExt;
        };
        if sb.magic.get() != MAGIC {
            return SuperVerdict::NotExt;
        }
        match sb.geometry(bytes, volume_size) {
            Ok(g) => SuperVerdict::Ext(Box::new(g)),
            Err(reason) => SuperVerdict::Damaged(reason),
        }
    }

    fn geometry(&self, bytes: &[u8], volume_size: u64) -> Result<Geometry, String> {
        let bad = |what: &str| Err(format!("ext4 superblock is damaged: {what}"));
        let features = Features {
            compat: self.feature_compat.get(),
            incompat: self.feature_incompat.get(),
            ro_compat: self.feature_ro_compat.get(),
        };
        let rev = self.rev_level.get();
        if rev > 1 {
            return Err(format!("unsupported ext revision {rev}"));
        }
        if rev == 0 && (features.compat | features.incompat | features.ro_compat) != 0 {
            return bad("feature flags on a revision 0 file system");
        }
        if let Some(unknown) = features.unknown() {
            return Err(unknown);
        }
        let csum_seed = if features.has_metadata_csum() {
            if self.checksum_type != CHECKSUM_CRC32C {
                return Err(format!(
                    "unknown metadata checksum type {}",
                    self.checksum_type
                ));
            }
            let want = checksum::ext4(!0, &bytes[..offset_of!(Superblock, checksum)]);
            if want != self.checksum.get() {
                return Err(
                    "ext4 superblock checksum does not match (metadata is damaged; run e2fsck)"
                        .into(),
                );
            }
            if features.has_csum_seed() {
                self.checksum_seed.get()
            } else {
                checksum::ext4(!0, &self.uuid)
            }
        } else {
            0
        };

        let log_block = self.log_block_size.get();
        if log_block > MAX_LOG_BLOCK_SIZE {
            return bad("block size above 64 KiB");
        }
        let block_size = 1024u64 << log_block;
        let log_cluster = self.log_cluster_size.get();
        let cluster_ratio = if features.ro_compat & RoCompat::BIGALLOC != 0 {
            if log_cluster < log_block || log_cluster - log_block > MAX_LOG_CLUSTER_RATIO {
                return bad("cluster size out of range");
            }
            1u64 << (log_cluster - log_block)
        } else {
            1
        };
        let is_64bit = features.is_64bit();
        let blocks_count = u64::from(self.blocks_count_lo.get())
            | if is_64bit {
                u64::from(self.blocks_count_hi.get()) << 32
            } else {
                0
            };
        let first_data_block = u64::from(self.first_data_block.get());
        let expected_first = u64::from(block_size == 1024 && cluster_ratio == 1);
        if first_data_block != expected_first {
            return bad("first data block is not where the block size puts it");
        }
        if blocks_count <= first_data_block {
            return bad("no blocks");
        }
        let fs_bytes = blocks_count.checked_mul(block_size);
        if fs_bytes.is_none_or(|b| b > volume_size) {
            return Err(format!(
                "ext4 file system ({blocks_count} blocks of {block_size} bytes) is larger than \
                 its {volume_size}-byte volume (truncated image or wrong partition size)"
            ));
        }
        let clusters_per_group = u64::from(self.clusters_per_group.get());
        let blocks_per_group = u64::from(self.blocks_per_group.get());
        if clusters_per_group == 0
            || clusters_per_group % 8 != 0
            || clusters_per_group > 8 * block_size
        {
            return bad("clusters per group out of range");
        }
        if blocks_per_group < MIN_BLOCKS_PER_GROUP {
            return bad("blocks per group out of range");
        }
        if blocks_per_group != clusters_per_group * cluster_ratio {
            return bad("blocks per group do not match clusters per group");
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(self.inode_size.get())
        };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return bad("inode size out of range");
        }
        let inodes_per_group = u64::from(self.inodes_per_group.get());
        if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
            return bad("inodes per group out of range");
        }
        let desc_size = if is_64bit {
            let d = self.desc_size.get();
            if !DESC_SIZES_64.contains(&d) || !d.is_power_of_two() || u64::from(d) > block_size {
                return bad("group descriptor size out of range");
            }
            u64::from(d)
        } else {
            32
        };
        let free_blocks_count = u64::from(self.free_blocks_count_lo.get())
            | if is_64bit {
                u64::from(self.free_blocks_count_hi.get()) << 32
            } else {
                0
            };
        let label_len = self.volume_name.iter().position(|&b| b == 0).unwrap_or(16);
        Ok(Geometry {
            block_size,
            cluster_ratio,
            blocks_count,
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size,
            groups,
            desc_size,
            reserved_gdt_blocks: u64::from(self.reserved_gdt_blocks.get()),
            first_meta_bg: u64::from(self.first_meta_bg.get()),
            backup_bgs: self.backup_bgs.map(|b| u64::from(b.get())),
            features,
            csum_seed,
            uuid: self.uuid,
            label: String::from_utf8_lossy(&self.volume_name[..label_len]).into_owned(),
            state: self.state.get(),
            error_count: self.error_count.get(),
            journal_inum: self.journal_inum.get(),
            journal_uuid: self.journal_uuid,
            last_orphan: self.last_orphan.get(),
            orphan_file_inum: self.orphan_file_inum.get(),
            mmp_block: self.mmp_block.get(),
            free_blocks_count,
        })
    }
}

/// The UUID in its usual text form.
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let hex: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..].concat()
    )
}
