//! # vdisk-swap
//!
//! The Linux swap implementation of [`vdisk_core::FsAnalyzer`]. A swap area holds nothing
//! anyone reads back once its system is shut down: every page but the header page and the
//! pages listed bad is free. Unless the system hibernated into it: then the memory image
//! stored there is what the next boot resumes from.
//!
//! ```text
//!   ANALYZER.analyze(volume)
//!     signature at page_size - 10, page sizes 4, 8, 16, 64 KiB:
//!       none ───────────────────────────────────────────────────────────────► NotMine
//!       "S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "LINHIB0001", TuxOnIce ───────► Untrusted
//!       "SWAP-SPACE" (version 0, its own page bitmap) ───────────────────────► Untrusted
//!       "SWAPSPACE2": version 1 in this byte order, last page and bad-page
//!       list bounded; no FAT/NTFS/exFAT boot sector in the boot bits ─ else ─► Untrusted
//!     pages 1..=last_page minus the bad pages ───────────────────────────────► Analysed
//! ```
//!
//! [`vdisk_core::FsUsage::details`] keys: `version` ("1"), `page_size`, `pages`,
//! `bad_pages`, `label`, `uuid`.
#![forbid(unsafe_code)]

mod header;

use vdisk_core::fs::FreeMap;
use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Result};

use crate::header::{Header, Signature};

/// The analyser id.
const ID: &str = "swap";

/// The Linux swap analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwapAnalyzer;

/// The analyser to register: `&[&vdisk_swap::ANALYZER, ...]`.
pub static ANALYZER: SwapAnalyzer = SwapAnalyzer;

impl FsAnalyzer for SwapAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs.
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let Some((page_size, signature)) = header::find_signature(volume)? else {
            return Ok(FsVerdict::NotMine);
        };
        let untrusted = |reason: String| Ok(FsVerdict::Untrusted { fs: ID, reason });
        match signature {
            Signature::Hibernation => {
                return untrusted(
                    "a hibernated system's memory image is stored here; resume or boot the \
                     system and shut it down first"
                        .into(),
                );
            }
            Signature::Version0 => {
                return untrusted(
                    "an old version 0 swap area (\"SWAP-SPACE\"), which this analyser does not \
                     read; recreate it with mkswap"
                        .into(),
                );
            }
            Signature::Version1 => {}
        }
        let h = match Header::read(volume, page_size)? {
            Ok(h) => h,
            Err(why) => return untrusted(format!("the swap header is damaged: {why}")),
        };
        if let Some(other) = header::boot_sector_in_boot_bits(volume)? {
            return untrusted(format!(
                "the volume has both a swap signature and a {other} boot sector, so which is \
                 live is unclear"
            ));
        }
        let size = volume.size();
        let mut free = FreeMap::new(size, page_size);
        free.mark_free(page_size..(h.last_page + 1) * page_size);
        for &bad in &h.bad_pages {
            free.mark_used(bad * page_size..(bad + 1) * page_size);
        }
        let details = vec![
            ("version".to_owned(), "1".to_owned()),
            ("page_size".to_owned(), page_size.to_string()),
            ("pages".to_owned(), (h.last_page + 1).to_string()),
            ("bad_pages".to_owned(), h.bad_pages.len().to_string()),
            ("label".to_owned(), h.label),
            ("uuid".to_owned(), h.uuid),
        ];
        Ok(FsVerdict::Analysed(FsUsage {
            fs: ID,
            cluster_size: page_size,
            free,
            details,
        }))
    }
}
