//! # vdisk-fat
//!
//! The FAT12/16/32 implementation of [`vdisk_core::FsAnalyzer`]: which bytes of a FAT volume
//! hold nothing the file system will read back, and whether its free map can be trusted.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     boot_sector  jump, 0x55aa, basic BPB fields in range, not NTFS/exFAT ─ else ─► NotMine
//!                  every field bounded (sectors within the volume, fats, root directory,
//!                  fat size vs cluster count); type by cluster count (Microsoft's rule),
//!                  the BPB's shape must agree ──────────────────────────────────► Untrusted
//!     foreign      another file system's signature on the volume ──────────────► Untrusted
//!                  state byte: dirty or surface scan pending ──────────────────► Untrusted
//!     table        every FAT copy read in chunks: mirrored copies differ, or an
//!                  entry links to a cluster that does not exist ───────────────► Untrusted
//!                  free = clusters whose entry is 0 in every copy → FreeMap
//!                  entry 0 ≠ media byte; entry 1 clean-shutdown bit clear or
//!                  hard-error bit clear (FAT16/32); FAT32 root cluster free ──► Untrusted
//!     fs_info      FAT32 free-count hint, reported only (never trusted)
//!     ─────────────────────────────────────────────────────────────────────────► Analysed
//! ```
//!
//! Cluster `n` (2 ≤ n < clusters + 2) is the bytes `data_start + (n - 2) * cluster_size`;
//! the boot sector, the reserved sectors, the FATs, the fixed root directory (FAT12/16), and
//! the sectors after the last cluster are never free. Memory is the free map's whatever the
//! volume size; reads are the boot sector, FSInfo and the FATs, within a budget.
//!
//! No crate is used for the FAT itself: `fatfs` (the well-kept one) counts free clusters but
//! exposes neither which clusters are free nor the FAT copies, the dirty bits or the BPB's
//! layout, and it would have to be wrapped in the same bounds anyway. The FAT is a flat array;
//! reading it is short.
//!
//! [`vdisk_core::FsUsage::details`] keys: `type` (FAT12/FAT16/FAT32), `label`, `oem_id`,
//! `cluster_size`, `clusters`, `used_clusters`, `free_clusters`, `fats`, and for FAT32
//! `fsinfo_free_clusters` and `fsinfo` (a note when the hint is far off or invalid).
#![forbid(unsafe_code)]

mod boot_sector;
mod foreign;
mod fs_info;
mod table;

use vdisk_core::fs::{Examined, MetaReader, damaged, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Result};

use crate::boot_sector::{BOOT_SECTOR_LEN, BootVerdict, Geometry};

/// The analyser id.
const ID: &str = "fat";
/// Metadata bytes read besides the FATs: boot sector, FSInfo, the reader's chunk cache.
const METADATA_BUDGET: u64 = 4 << 20;
/// The reason for every "not unmounted cleanly" state.
const UNCLEAN: &str = "the volume was not unmounted cleanly; run fsck.fat or chkdsk";

/// The FAT12/16/32 free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct FatAnalyzer;

/// The analyser to register: `&[&vdisk_fat::ANALYZER, ...]`.
pub static ANALYZER: FatAnalyzer = FatAnalyzer;

impl FsAnalyzer for FatAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs. Reasons for [`FsVerdict::Untrusted`] name the problem in the
    /// user's terms.
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let size = volume.size();
        if size < BOOT_SECTOR_LEN as u64 {
            return Ok(FsVerdict::NotMine);
        }
        let mut first = [0u8; BOOT_SECTOR_LEN];
        volume.read_at(&mut first, 0)?;
        let g = match boot_sector::inspect(&first, size) {
            BootVerdict::NotFat => return Ok(FsVerdict::NotMine),
            BootVerdict::Damaged(reason) => {
                return Ok(FsVerdict::Untrusted { fs: ID, reason });
            }
            BootVerdict::Fat(g) => g,
        };
        if let Some(other) = foreign::find(volume)? {
            return Ok(FsVerdict::Untrusted {
                fs: ID,
                reason: format!(
                    "the volume has both a fat boot sector and a {other} signature, so which \
                     file system is live is unclear"
                ),
            });
        }
        examine_guarded(ID, || examine(volume, &g))
    }
}

/// The trust checks and the FAT scan of a volume whose boot sector passed.
fn examine(volume: &dyn BlockDevice, g: &Geometry) -> Examined<FsVerdict> {
    if g.dirty {
        return damaged(UNCLEAN);
    }
    let fats = g.fat_bytes.saturating_mul(u64::from(g.num_fats));
    let reader = MetaReader::new(volume, fats.saturating_add(METADATA_BUDGET));
    let scan = table::scan(&reader, g, volume.size())?;
    if scan.entry0 & 0xFF != u32::from(g.media) {
        return damaged(format!(
            "the fat does not start with the media byte {:#04x} (it reads {:#x}): the fat is not \
             where the boot sector says; run fsck.fat or chkdsk",
            g.media, scan.entry0
        ));
    }
    if let Some(bit) = g.fat_type.clean_shutdown_bit()
        && scan.entry1 & bit == 0
    {
        return damaged(UNCLEAN);
    }
    if let Some(bit) = g.fat_type.no_hard_error_bit()
        && scan.entry1 & bit == 0
    {
        return damaged("disk errors were recorded on the volume; run chkdsk");
    }
    if let Some(root) = g.root_cluster
        && scan.root_free
    {
        return damaged(format!(
            "the fat marks the root directory's cluster {root} free; run fsck.fat or chkdsk"
        ));
    }
    let mut details = vec![
        ("type".to_owned(), g.fat_type.name().to_owned()),
        ("label".to_owned(), g.label.clone()),
        ("oem_id".to_owned(), g.oem_id.clone()),
        ("cluster_size".to_owned(), g.cluster_size.to_string()),
        ("clusters".to_owned(), g.cluster_count.to_string()),
        (
            "used_clusters".to_owned(),
            (g.cluster_count - scan.free_clusters).to_string(),
        ),
        ("free_clusters".to_owned(), scan.free_clusters.to_string()),
        ("fats".to_owned(), g.num_fats.to_string()),
    ];
    if let Some(sector) = g.fs_info_sector {
        details.extend(fs_info::details(
            &reader,
            sector * g.sector_size,
            scan.free_clusters,
            g.cluster_count,
        )?);
    }
    Ok(FsVerdict::Analysed(FsUsage {
        fs: ID,
        cluster_size: g.cluster_size,
        free: scan.free,
        details,
    }))
}
