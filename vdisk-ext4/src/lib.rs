//! # vdisk-ext4
//!
//! The ext2/ext3/ext4 implementation of [`vdisk_core::FsAnalyzer`]: which bytes of the volume
//! hold nothing the file system will read back, and whether its free map can be trusted. This
//! is the file system of WSL2's and Docker Desktop's `ext4.vhdx`: one bare ext4 over the whole
//! disk, no partition table.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     superblock    magic 0xEF53 at 1024+56 ── absent ─────────────────────► NotMine
//!                   every field bounded (block 1..64 KiB, clusters, groups, descriptor
//!                   size, file system within the volume); metadata_csum: crc32c checked
//!     features      unknown incompat / ro_compat bits, or refused ones ───► Untrusted
//!     volume        needs_recovery, errors, not cleanly unmounted ────────► Untrusted
//!                   per group: descriptor (classic table or meta_bg; crc32c or crc16
//!                   checked) → block bitmap (crc32c checked) or, for BLOCK_UNINIT, the
//!                   bitmap the kernel computes (bitmap) → free cluster runs → FreeMap;
//!                   free bits counted == descriptor's free count ─ else ──► Untrusted
//!                   every group's superblock copy, descriptor and reserved GDT blocks,
//!                   bitmaps and inode table marked used ─ else ───────────► Untrusted
//!     journal       internal journal's blocks marked used, journal empty and not aborted;
//!                   resize inode, MMP block (released cleanly) ─ else ─────► Untrusted
//!     ───────────────────────────────────────────────────────────────────► Analysed(FsUsage)
//! ```
//!
//! Damage anywhere after the magic is a reason ([`vdisk_core::FsVerdict::Untrusted`]), not an
//! error; `Err` means the device failed a read. Memory is the [`vdisk_core::fs::FreeMap`]
//! (bounded by the volume size) plus one block bitmap at a time: descriptors are read twice
//! instead of kept. Only clusters inside the file system can be free: the boot block, the
//! padding bits of the last group and any space after the file system never are.
//!
//! Orphaned inodes (deleted or truncated while open, cleaned up at the next mount) keep their
//! blocks marked used until that cleanup, so a volume with orphans is trusted (the free map is
//! conservative) and `orphans_pending` says so. An external journal is noted in `journal`.
//!
//! [`vdisk_core::FsUsage::details`] keys: `type` (ext2, ext3, ext4), `label`, `uuid`,
//! `block_size`, `cluster_size` (bytes; larger than the block with bigalloc), `blocks`,
//! `groups`, `uninit_groups`, `free_clusters`, `superblock_free_blocks` (the kernel updates it
//! lazily: informational), `journal`, `orphans_pending`, `features`.
//!
//! No crate reads ext4 allocation state: `ext4-view` and its peers read files, not bitmaps, so
//! this is a compact reader over core's [`vdisk_core::fs::MetaReader`].
#![forbid(unsafe_code)]

mod bitmap;
mod checksum;
mod features;
mod group;
mod group_desc;
mod inode;
mod journal;
mod superblock;
mod volume;

use vdisk_core::fs::{MetaReader, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict, Result};

use crate::superblock::{SUPERBLOCK_LEN, SUPERBLOCK_OFFSET, SuperVerdict, Superblock};

/// The analyser id.
const ID: &str = "ext4";
/// Metadata bytes an analysis may read besides one cached chunk per group for descriptors
/// and bitmaps: the journal's and resize inode's maps and superblocks. Far above what a sound
/// volume needs.
const METADATA_BUDGET: u64 = 64 << 20;
/// Bytes [`MetaReader`] reads per cache fill: the charge of one scattered small read.
const CHUNK: u64 = 64 << 10;

/// The ext2/ext3/ext4 free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ext4Analyzer;

/// The analyser to register: `&[&vdisk_ext4::ANALYZER, ...]`.
pub static ANALYZER: Ext4Analyzer = Ext4Analyzer;

impl FsAnalyzer for Ext4Analyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs. Reasons for [`FsVerdict::Untrusted`] name the problem in the
    /// user's terms and what to do ("shut WSL down cleanly with `wsl --shutdown` first").
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let size = volume.size();
        if size < SUPERBLOCK_OFFSET + SUPERBLOCK_LEN as u64 {
            return Ok(FsVerdict::NotMine);
        }
        let mut bytes = [0u8; SUPERBLOCK_LEN];
        volume.read_at(&mut bytes, SUPERBLOCK_OFFSET)?;
        let geo = match Superblock::inspect(&bytes, size) {
            SuperVerdict::NotExt => return Ok(FsVerdict::NotMine),
            SuperVerdict::Damaged(reason) => return Ok(FsVerdict::Untrusted { fs: ID, reason }),
            SuperVerdict::Ext(g) => g,
        };
        // Each group costs at most two descriptor reads and one bitmap read, each charged at
        // most one cache chunk.
        let budget = geo
            .groups
            .saturating_mul(3 * CHUNK)
            .saturating_add(METADATA_BUDGET);
        let reader = MetaReader::new(volume, budget);
        examine_guarded(ID, || {
            volume::examine(&reader, &geo).map(FsVerdict::Analysed)
        })
    }
}
