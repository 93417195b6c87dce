//! # vdisk-ntfs
//!
//! The NTFS implementation of [`vdisk_core::FsAnalyzer`]: which bytes of an NTFS volume hold
//! nothing the file system will read back, and whether its free map can be trusted at all.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     boot_sector   OEM id "NTFS    " ─ absent ──────────────────────────► NotMine
//!                   geometry bounded (sector, cluster 512 B..2 MiB incl. the 2^-n
//!                   encoding, total sectors within the device, $MFT/$MFTMirr LCNs)
//!     volume        through the `ntfs` crate over core's fs::StreamReader (Read + Seek over
//!                   positional BlockDevice reads, read budget, device errors kept):
//!                   $Volume flags ── dirty ────────────────────────────► Untrusted
//!                   $LogFile restart pages (logfile) ── unclean ───────► Untrusted
//!                   hiberfil.sys header (hiberfile) ── hibernated ─────► Untrusted
//!                   $Bitmap streamed in 1 MiB chunks (bitmap) → free cluster runs;
//!                   boot sector, $MFT, $MFTMirr, $LogFile, $Bitmap clusters must be used
//!     shadow_copies VSS header at 0x1e00, catalog lists shadow copies ──► Guarded
//!                   (hazard "shadow-copies", bytes to keep unknown)
//!     ─────────────────────────────────────────────────────────────────► Analysed(FsUsage)
//! ```
//!
//! Damage anywhere after the signature is a reason ([`vdisk_core::FsVerdict::Untrusted`]), not
//! an error; `Err` means the device failed a read. Only clusters below the volume's cluster
//! count can be free, so the backup boot sector after the last cluster never is. Memory is
//! O(free runs) whatever the volume size; the analyser reads only the boot sector, the MFT
//! records it needs, `$UpCase` (for the root directory lookup), the journal's restart pages,
//! the first 4 KiB of `hiberfil.sys` and `$Bitmap`.
//!
//! [`vdisk_core::FsUsage::details`] keys: `label`, `version` ("3.1"), `cluster_size` (bytes),
//! `clusters`, `used_clusters`, `free_clusters`.
//!
//! The `ntfs` crate parses MFT records, attributes, data runs and indexes. What it does not do
//! is here: the boot sector is validated first so the crate never sizes a buffer from an
//! unchecked field, the `$LogFile` restart area is not parsed by the crate, and the crate's
//! readers run under `catch_unwind` with a bounded read budget so that damaged metadata can
//! neither panic through nor loop forever.
#![forbid(unsafe_code)]

mod bitmap;
mod boot_sector;
mod hiberfile;
mod logfile;
mod shadow_copies;
mod volume;

use std::panic::{AssertUnwindSafe, catch_unwind};

use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Hazard, Result};

use crate::boot_sector::{BOOT_SECTOR_LEN, BootSector, BootVerdict};
use crate::shadow_copies::ShadowCopies;
use vdisk_core::fs::StreamReader;

/// The analyser id.
const ID: &str = "ntfs";
/// The hazard named when the volume has shadow copies: the id a user accepts to reclaim anyway.
pub const SHADOW_COPIES: &str = "shadow-copies";
/// Metadata bytes an analysis may read besides `$Bitmap`: MFT records, `$UpCase` (128 KiB),
/// the journal's restart pages, directory index records. Far above what a sound volume needs.
const METADATA_BUDGET: u64 = 256 << 20;

/// The NTFS free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct NtfsAnalyzer;

/// The analyser to register: `&[&vdisk_ntfs::ANALYZER, ...]`.
pub static ANALYZER: NtfsAnalyzer = NtfsAnalyzer;

impl FsAnalyzer for NtfsAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs. Reasons for [`FsVerdict::Untrusted`] name the problem in the
    /// user's terms ("volume is marked dirty (chkdsk pending)").
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let size = volume.size();
        if size < BOOT_SECTOR_LEN as u64 {
            return Ok(FsVerdict::NotMine);
        }
        let mut first = [0u8; BOOT_SECTOR_LEN];
        volume.read_at(&mut first, 0)?;
        let geometry = match BootSector::inspect(&first, size) {
            BootVerdict::NotNtfs => return Ok(FsVerdict::NotMine),
            BootVerdict::Damaged(reason) => return Ok(untrusted(reason)),
            BootVerdict::Ntfs(g) => g,
        };
        let budget = METADATA_BUDGET.saturating_add(geometry.cluster_count.div_ceil(8));
        let mut reader = StreamReader::new(volume, budget);
        let outcome = catch_unwind(AssertUnwindSafe(|| volume::examine(&mut reader, &geometry)));
        if let Some(device_error) = reader.take_failure() {
            return Err(device_error);
        }
        Ok(match outcome {
            Ok(Ok(usage)) => guard_shadow_copies(volume, usage)?,
            Ok(Err(_)) if reader.exhausted() => untrusted(
                "ntfs metadata is damaged: reading it did not finish within the expected size"
                    .into(),
            ),
            Ok(Err(volume::Doubt(reason))) => untrusted(reason),
            Err(_) => untrusted("ntfs metadata is damaged: the ntfs reader gave up on it".into()),
        })
    }
}

/// `Analysed(usage)`, or `Guarded` if the volume has shadow copies: see [`shadow_copies`].
fn guard_shadow_copies(volume: &dyn BlockDevice, mut usage: FsUsage) -> Result<FsVerdict> {
    let why = match shadow_copies::find(volume)? {
        ShadowCopies::None => return Ok(FsVerdict::Analysed(usage)),
        ShadowCopies::Present(n) => {
            usage
                .details
                .push(("shadow_copies".to_owned(), n.to_string()));
            String::new()
        }
        ShadowCopies::Unreadable(why) => format!(" (the shadow copy catalog is damaged: {why})"),
    };
    Ok(FsVerdict::Guarded {
        usage,
        hazard: Hazard {
            id: SHADOW_COPIES,
            reason: format!(
                "volume has shadow copies (restore points); their data would be lost{why}"
            ),
            keep: None,
        },
    })
}

fn untrusted(reason: String) -> FsVerdict {
    FsVerdict::Untrusted { fs: ID, reason }
}
