//! # vdisk-exfat
//!
//! The exFAT implementation of [`vdisk_core::FsAnalyzer`]: which bytes of an exFAT volume hold
//! nothing the file system will read back, and whether its free map can be trusted.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     boot_region  name "EXFAT   " at byte 3 ─ absent ───────────────────────► NotMine
//!                  every field bounded (sector and cluster shifts, volume length,
//!                  FAT offset/length, heap, cluster count, root cluster); boot
//!                  checksum over sectors 0-10 must match sector 11 ───────────► Untrusted
//!                  VolumeFlags: VolumeDirty, MediaFailure, ActiveFat; two FATs ► Untrusted
//!     directory    root directory (a FAT chain): one allocation bitmap (0x81),
//!                  the up-case table (0x82), the label (0x83) ─ missing ──────► Untrusted
//!     fat          the bitmap and up-case table lie in consecutive clusters ──► Untrusted
//!     bitmap       bit i = cluster i + 2, 0 = free → FreeMap, run by run; the
//!                  bitmap's own clusters, the up-case table's and the root
//!                  directory's must be marked used ───────────────────────────► Untrusted
//!     ─────────────────────────────────────────────────────────────────────────► Analysed
//! ```
//!
//! Only clusters of the heap can be free: the boot regions, the FAT and anything after the
//! last cluster never are. The FAT is not used for free space: contiguous files
//! ("NoFatChain") have no FAT entries, only bits in the bitmap.
//!
//! No crate is used: the exFAT crates on crates.io read files and directories but expose
//! neither the allocation bitmap nor the boot region's flags and checksum.
//!
//! [`vdisk_core::FsUsage::details`] keys: `label`, `version` ("1.00"), `cluster_size`,
//! `clusters`, `used_clusters`, `free_clusters`.
#![forbid(unsafe_code)]

mod bitmap;
mod boot_region;
mod directory;
mod fat;

use vdisk_core::fs::{Examined, MetaReader, damaged, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Result};

use crate::boot_region::{
    BOOT_SECTOR_LEN, BootVerdict, FLAG_ACTIVE_FAT, FLAG_MEDIA_FAILURE, FLAG_VOLUME_DIRTY, Geometry,
};

/// The analyser id.
const ID: &str = "exfat";
/// Metadata bytes read besides the bitmap: boot region, FAT entries, root directory, cache.
const METADATA_BUDGET: u64 = 16 << 20;

/// The exFAT free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExfatAnalyzer;

/// The analyser to register: `&[&vdisk_exfat::ANALYZER, ...]`.
pub static ANALYZER: ExfatAnalyzer = ExfatAnalyzer;

impl FsAnalyzer for ExfatAnalyzer {
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
        let g = match boot_region::inspect(&first, size) {
            BootVerdict::NotExfat => return Ok(FsVerdict::NotMine),
            BootVerdict::Damaged(reason) => return Ok(FsVerdict::Untrusted { fs: ID, reason }),
            BootVerdict::Exfat(g) => g,
        };
        examine_guarded(ID, || examine(volume, &g))
    }
}

fn examine(volume: &dyn BlockDevice, g: &Geometry) -> Examined<FsVerdict> {
    let budget = METADATA_BUDGET.saturating_add(g.cluster_count.div_ceil(8) * 2);
    let r = MetaReader::new(volume, budget);
    boot_region::verify_checksum(&r, g)?;
    let flags = g.volume_flags;
    if flags & FLAG_VOLUME_DIRTY != 0 {
        return damaged("the volume was not unmounted cleanly; run fsck.exfat or chkdsk");
    }
    if flags & FLAG_MEDIA_FAILURE != 0 {
        return damaged("the volume recorded media failures; run chkdsk");
    }
    if flags & FLAG_ACTIVE_FAT != 0 || g.number_of_fats != 1 {
        return damaged(
            "the volume keeps a second fat and bitmap (TexFAT), which this analyser does not read",
        );
    }
    let root = directory::read_root(&r, g)?;
    let bitmap_clusters = fat::contiguous(
        &r,
        g,
        u64::from(root.bitmap.first_cluster),
        root.bitmap.length,
        "the allocation bitmap",
    )?;
    let up_case_clusters = fat::contiguous(
        &r,
        g,
        u64::from(root.up_case.first_cluster),
        root.up_case.length,
        "the up-case table",
    )?;
    let free = bitmap::read(&r, g, &bitmap_clusters, root.bitmap.length, volume.size())?;
    let bitmap_start = g.cluster_bytes(bitmap_clusters.start).start;
    let known = [
        ("the allocation bitmap", bitmap_clusters.collect::<Vec<_>>()),
        ("the up-case table", up_case_clusters.collect()),
        ("the root directory", root.clusters.clone()),
    ];
    for (what, clusters) in known {
        for n in clusters {
            if bitmap::is_free(&r, bitmap_start, n)? {
                return damaged(format!(
                    "the allocation bitmap marks cluster {n} of {what} free: the bitmap does not \
                     match the volume; run fsck.exfat"
                ));
            }
        }
    }
    let details = vec![
        ("label".to_owned(), root.label),
        ("version".to_owned(), g.revision.clone()),
        ("cluster_size".to_owned(), g.cluster_size.to_string()),
        ("clusters".to_owned(), g.cluster_count.to_string()),
        (
            "used_clusters".to_owned(),
            (g.cluster_count - free.clusters).to_string(),
        ),
        ("free_clusters".to_owned(), free.clusters.to_string()),
    ];
    Ok(FsVerdict::Analysed(FsUsage {
        fs: ID,
        cluster_size: g.cluster_size,
        free: free.map,
        details,
    }))
}
