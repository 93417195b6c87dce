//! # vdisk-xfs
//!
//! The XFS (version 4 and 5) implementation of [`vdisk_core::FsAnalyzer`]: which bytes of an
//! XFS data device hold nothing the file system will read back, and whether its free-space
//! map can be trusted at all.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     superblock  magic "XFSB" ─ absent ───────────────────────────────────► NotMine
//!                 version 4/5, block/sector/AG geometry bounded, data device within the
//!                 volume, v5 CRC32c, feature bits known, NEEDSREPAIR clear ──► Untrusted
//!     log         external ─────────────────────────────────────────────────► Untrusted
//!                 internal: head found from cycle numbers, last record an
//!                 unmount record ending at the head, else ──────────────────► Untrusted
//!     agf         per allocation group: "XAGF", v5 CRC32c and UUID, seqno/length match,
//!                 counters bounded ─────────────────────────────────────────► Untrusted
//!     bnobt       per group: free-space B+tree by block number ("ABTB"/"AB3B"), walked
//!                 depth-first with level and node budgets; records in order, inside the
//!                 group, past its headers, off the log; v5 CRC32c, owner, address;
//!                 sum == agf_freeblks and max == agf_longest, else ─────────► Untrusted
//!     ─────────────────────────────────────────────────────────────────────► Analysed(FsUsage)
//! ```
//!
//! Only the data device is described: a realtime device (`sb_rblocks > 0`) is another device,
//! whose free space is in its own bitmap and not reported (noted in the details). The free
//! list (AGFL) blocks are reserved for the btrees and appear in no free extent, so they stay
//! used; so do the group headers, the log and every byte past the data device.
//!
//! An external log lives on a device vdisk cannot see, so whether it is clean cannot be
//! known: such a file system is untrusted. So is one whose free-space trees disagree with
//! their AGF counters (`xfs_repair` would fix them).
//!
//! [`vdisk_core::FsUsage::details`] keys: `label`, `uuid`, `version` ("5"), `block_size`,
//! `ag_count`, `log` ("internal"), `free_extents`, and `realtime` when a realtime device exists.
//!
//! No crate reads XFS allocation state (the few XFS crates read files and directories), so the
//! structures here are read directly, each a `zerocopy` struct with its fields documented.
#![forbid(unsafe_code)]

mod agf;
mod bnobt;
mod checksum;
mod log;
mod superblock;

use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Result};

use crate::agf::{AGF_LEN, Agf};
use crate::log::{Log, LogState};
use crate::superblock::{BBSIZE, Geometry, LogPlacement, SB_LEN, SbVerdict, Superblock};

/// The analyser id.
const ID: &str = "xfs";
/// Metadata bytes an analysis may read besides the free-space trees: superblock, AGFs, the
/// log's head search and the window around it.
const METADATA_BUDGET: u64 = 64 << 20;

/// The XFS free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct XfsAnalyzer;

/// The analyser to register: `&[&vdisk_xfs::ANALYZER, ...]`.
pub static ANALYZER: XfsAnalyzer = XfsAnalyzer;

impl FsAnalyzer for XfsAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs.
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let size = volume.size();
        if size < SB_LEN as u64 {
            return Ok(FsVerdict::NotMine);
        }
        let mut first = [0u8; SB_LEN];
        volume.read_at(&mut first, 0)?;
        let mut sector_error = None;
        let verdict = Superblock::inspect(&first, size, |len| {
            let mut sector = vec![0u8; len];
            match volume.read_at(&mut sector, 0) {
                Ok(()) => Some(sector),
                Err(e) => {
                    sector_error = Some(e);
                    None
                }
            }
        });
        if let Some(e) = sector_error {
            return Err(e);
        }
        let geometry = match verdict {
            SbVerdict::NotXfs => return Ok(FsVerdict::NotMine),
            SbVerdict::Untrusted(reason) => {
                return Ok(FsVerdict::Untrusted { fs: ID, reason });
            }
            SbVerdict::Xfs(g) => g,
        };
        // The free-space trees hold at most one record per two blocks; reads go in 64 KiB
        // chunks. Far above what a sound file system needs, finite for a hostile one.
        let fs_bytes = geometry.data_blocks * geometry.block_size;
        let budget = METADATA_BUDGET.saturating_add(fs_bytes / 4);
        examine_guarded(ID, || examine(volume, &geometry, budget))
    }
}

/// Everything after the superblock; see the crate docs.
fn examine(volume: &dyn BlockDevice, g: &Geometry, budget: u64) -> Examined<FsVerdict> {
    let reader = MetaReader::new(volume, budget);
    let (log_agno, log_blocks) = match g.log {
        LogPlacement::External => {
            return damaged(
                "the XFS log is on a separate device that vdisk cannot see, so it cannot tell \
                 whether the file system was unmounted cleanly",
            );
        }
        LogPlacement::Internal {
            agno,
            agbno,
            blocks,
        } => {
            let start = g.byte_of(agno, u64::from(agbno));
            let bbs = u64::from(blocks) * g.block_size / BBSIZE;
            if let LogState::Dirty(reason) = Log::new(&reader, start, bbs).state()? {
                return damaged(reason);
            }
            (agno, u64::from(agbno)..u64::from(agbno) + u64::from(blocks))
        }
    };
    let mut free = FreeMap::new(volume.size(), g.block_size);
    let sector_len = usize::try_from(g.sector_size).unwrap_or(AGF_LEN);
    let mut extents = 0u64;
    for agno in 0..g.ag_count {
        let sector = reader.read(g.byte_of(agno, 0) + g.sector_size, sector_len, "an AGF")?;
        let agf = Agf::parse(&sector, agno, g).or_else(damaged)?;
        let mut overlaps_log = false;
        let totals = bnobt::walk(&reader, g, agno, &agf, |agbno, len| {
            if agno == log_agno && agbno < log_blocks.end && log_blocks.start < agbno + len {
                overlaps_log = true;
            }
            free.mark_free(g.byte_of(agno, agbno)..g.byte_of(agno, agbno + len));
        })?;
        if overlaps_log {
            return damaged(format!(
                "the free space of allocation group {agno} overlaps the log: run xfs_repair"
            ));
        }
        if totals.blocks != u64::from(agf.free_blocks) || totals.longest != u64::from(agf.longest) {
            return damaged(format!(
                "allocation group {agno}'s free-space tree holds {} free blocks (longest \
                 extent {}), but its header counts {} (longest {}): run xfs_repair",
                totals.blocks, totals.longest, agf.free_blocks, agf.longest
            ));
        }
        extents += totals.extents;
    }
    Ok(FsVerdict::Analysed(FsUsage {
        fs: ID,
        cluster_size: g.block_size,
        free,
        details: details(g, extents),
    }))
}

fn details(g: &Geometry, extents: u64) -> Vec<(String, String)> {
    let uuid = g
        .uuid
        .iter()
        .enumerate()
        .fold(String::new(), |mut s, (i, b)| {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push_str(&format!("{b:02x}"));
            s
        });
    let mut d = vec![
        ("label".to_owned(), g.label.clone()),
        ("uuid".to_owned(), uuid),
        ("version".to_owned(), g.version.to_string()),
        ("block_size".to_owned(), g.block_size.to_string()),
        ("ag_count".to_owned(), g.ag_count.to_string()),
        ("log".to_owned(), "internal".to_owned()),
        ("free_extents".to_owned(), extents.to_string()),
    ];
    if g.realtime_blocks > 0 {
        d.push((
            "realtime".to_owned(),
            format!(
                "a {}-block realtime device exists; its free space is not reported",
                g.realtime_blocks
            ),
        ));
    }
    d
}
