//! The format-independent compaction engine: plan (reads only), then apply (crash-safe writes).
//!
//! ```text
//!  plan:  allocation map ──► trimmed blocks ─┐  (blocks an opaque guest extent touches: kept)
//!         FS free ranges ──► FS-free blocks ─┼─► reclaim set ──► move plan over the host
//!         zero scan (rayon) ► zero blocks ───┘    space map (blocks and movable metadata fill
//!                                                 holes from the end) ──► predicted size
//!  apply: deallocate (batched, durable) ─► move metadata ─► relocate (copy, sync, retarget,
//!         sync) ─► truncate
//! ```

mod apply;
mod layout;
mod ownership;
mod plan;
mod scan;
#[cfg(test)]
mod space_tests;
#[cfg(test)]
mod toy;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use layout::{MetadataMove, MovePlan, plan_moves};

use crate::error::{Error, ErrorKind, Result};
use crate::image::{DiskImage, FreeAs, Relocation};
use crate::progress::{CancelToken, Progress};
use crate::units::BlockIndex;

/// Most new host space one `relocate` call may need: the bytes its copies write into host-file
/// holes (a batch's copies are written before its sources are given back). This bounds the
/// extra host space a compaction needs, whatever the image.
pub const RELOCATE_BATCH_BYTES: u64 = 64 << 20;

/// What a compaction reclaims (names follow Hyper-V's `Optimize-VHD -Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// File-system-free space, all-zero blocks and trimmed blocks; then move and truncate.
    #[default]
    Full,
    /// File-system-free space and trimmed blocks, no zero scan; then move and truncate.
    Quick,
    /// All-zero and trimmed blocks (file-system agnostic, byte-exact); then move and truncate.
    Prezeroed,
    /// Only blocks the image already marks free or trimmed; then move and truncate.
    Pretrimmed,
    /// Free file-system-free, zero and trimmed blocks in place and punch them out of the host
    /// file; nothing moves, the file keeps its length. The only mode for fixed disks.
    Retrim,
}

impl Mode {
    /// Every mode, in documentation order.
    pub const ALL: [Mode; 5] = [
        Mode::Full,
        Mode::Quick,
        Mode::Prezeroed,
        Mode::Pretrimmed,
        Mode::Retrim,
    ];

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Prezeroed => "prezeroed",
            Mode::Pretrimmed => "pretrimmed",
            Mode::Retrim => "retrim",
        }
    }

    /// Whether allocated blocks are read to find all-zero ones.
    pub fn scans_for_zeros(self) -> bool {
        matches!(self, Mode::Full | Mode::Prezeroed | Mode::Retrim)
    }

    /// Whether file-system free space is used (when an analyser supplies it).
    pub fn uses_file_system(self) -> bool {
        matches!(self, Mode::Full | Mode::Quick | Mode::Retrim)
    }

    /// Whether blocks are moved and the file truncated.
    pub fn moves_blocks(self) -> bool {
        self != Mode::Retrim
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("unknown mode {s:?} (full, quick, prezeroed, pretrimmed, retrim)"),
                )
            })
    }
}

/// Why a block is reclaimed. Non-exhaustive: reasons may be added as formats bring states
/// (discarded extents, shared data), so a match needs an arm for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Its content is all zeros.
    Zero,
    /// The image marks it trimmed.
    Trimmed,
    /// The guest file system does not use any byte of it.
    FsFree,
    /// A differencing image's block that reads the same as its parent there: freed so that
    /// reads fall through to the parent.
    SameAsParent,
}

impl Reason {
    /// What the freed block reads afterwards.
    pub fn free_as(self) -> FreeAs {
        match self {
            Reason::SameAsParent => FreeAs::Parent,
            Reason::Zero | Reason::Trimmed | Reason::FsFree => FreeAs::Zero,
        }
    }
}

/// Inputs to planning beyond the image.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CompactOptions {
    /// What to reclaim.
    pub mode: Mode,
    /// Virtual byte ranges the guest file system reports unused, sorted and disjoint (from an
    /// analyser; ignored by modes that do not use the file system). The caller must make sure
    /// no differencing image reads through the image before setting it;
    /// [`crate::compact_path`] does.
    pub fs_free: Option<Vec<Range<u64>>>,
}

impl CompactOptions {
    /// Options for `mode` with no file-system knowledge.
    pub fn new(mode: Mode) -> CompactOptions {
        CompactOptions {
            mode,
            fs_free: None,
        }
    }
}

/// What a compaction will do. Computed by [`Compactor::plan`] without writing anything.
#[derive(Debug, Clone)]
pub struct CompactPlan {
    /// The mode planned for.
    pub mode: Mode,
    /// Allocation unit of the image.
    pub block_size: u64,
    /// Blocks of the virtual disk.
    pub blocks_total: u64,
    /// Blocks holding host space before.
    pub blocks_allocated: u64,
    /// Blocks to free, with the reason.
    pub reclaim: Vec<(BlockIndex, Reason)>,
    /// Of the [`Reason::Zero`] blocks, how many the zero scan took without reading any byte,
    /// because their data lies wholly in holes of the host file (`SEEK_DATA`/`SEEK_HOLE`).
    pub blocks_zero_from_holes: u64,
    /// Block moves, in the order to apply them.
    pub moves: Vec<Relocation>,
    /// Metadata moves (formats with movable metadata), applied before the block moves.
    pub metadata_moves: Vec<MetadataMove>,
    /// Host ranges to punch out (retrim).
    pub punch: Vec<Range<u64>>,
    /// Where the block area ends after the moves (`None`: the file is not shortened).
    pub truncate_to: Option<u64>,
    /// Host file length before.
    pub bytes_before: u64,
    /// Predicted host file length after.
    pub bytes_after: u64,
}

impl CompactPlan {
    /// Blocks reclaimed for `reason`.
    pub fn reclaimed(&self, reason: Reason) -> u64 {
        self.reclaim.iter().filter(|(_, r)| *r == reason).count() as u64
    }

    /// The report this plan would give if applied as planned.
    pub fn report(&self, dry_run: bool) -> CompactReport {
        CompactReport {
            mode: self.mode,
            dry_run,
            bytes_before: self.bytes_before,
            bytes_after: self.bytes_after,
            block_size: self.block_size,
            blocks_total: self.blocks_total,
            blocks_allocated_before: self.blocks_allocated,
            blocks_reclaimed: self.reclaim.len() as u64,
            blocks_reclaimed_zero: self.reclaimed(Reason::Zero),
            blocks_reclaimed_trimmed: self.reclaimed(Reason::Trimmed),
            blocks_reclaimed_fs: self.reclaimed(Reason::FsFree),
            blocks_reclaimed_parent: self.reclaimed(Reason::SameAsParent),
            blocks_moved: self.moves.len() as u64,
            bytes_punched: self.punch.iter().map(|r| r.end - r.start).sum(),
        }
    }
}

/// What a compaction did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// The mode used.
    pub mode: Mode,
    /// True if nothing was written.
    pub dry_run: bool,
    /// Host file length before.
    pub bytes_before: u64,
    /// Host file length after (predicted for a dry run).
    pub bytes_after: u64,
    /// Allocation unit.
    pub block_size: u64,
    /// Blocks of the virtual disk.
    pub blocks_total: u64,
    /// Blocks holding host space before.
    pub blocks_allocated_before: u64,
    /// Blocks freed, for any reason.
    pub blocks_reclaimed: u64,
    /// Of which all-zero.
    pub blocks_reclaimed_zero: u64,
    /// Of which trimmed.
    pub blocks_reclaimed_trimmed: u64,
    /// Of which free in the guest file system.
    pub blocks_reclaimed_fs: u64,
    /// Of which (differencing images) reading the same as the parent.
    pub blocks_reclaimed_parent: u64,
    /// Blocks moved.
    pub blocks_moved: u64,
    /// Host bytes punched out (retrim).
    pub bytes_punched: u64,
}

/// Plans and applies compactions: the low-level steps. They do not analyse the guest file
/// systems (without [`CompactOptions::fs_free`], [`Mode::Full`] and [`Mode::Quick`] reclaim
/// no file-system free space) and do not look for differencing images that read through the
/// image, whose content file-system-aware reclaim would change. Use [`crate::compact_path`]
/// (or [`crate::compact_image`]), which does both, unless you do them yourself.
pub trait Compactor {
    /// Works out what to reclaim and move. Reads only: nothing is written. The compaction
    /// primitives are reached through their read-only view
    /// ([`DiskImage::as_compactable_ref`]), asked for once, with the layout asked for once.
    fn plan(
        &self,
        image: &dyn DiskImage,
        opts: &CompactOptions,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactPlan>;

    /// Applies `plan` to the image it was made for. Cancellation is honoured between batches
    /// of blocks; the image is valid and reads the same (outside reclaimed blocks) at every
    /// step, whether the run finishes, fails, is cancelled or the process dies. The first
    /// thing it writes is what [`DiskImage::prepare_write`] writes.
    fn apply(
        &self,
        image: &mut dyn DiskImage,
        plan: &CompactPlan,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactReport>;
}

/// The compactor for any format that implements [`crate::Compactable`]. Low-level: see
/// [`Compactor`] for what it does not do, and [`crate::compact_path`] for the entry point.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenericCompactor;

impl Compactor for GenericCompactor {
    fn plan(
        &self,
        image: &dyn DiskImage,
        opts: &CompactOptions,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactPlan> {
        plan::plan(image, opts, progress, cancel)
    }

    fn apply(
        &self,
        image: &mut dyn DiskImage,
        plan: &CompactPlan,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactReport> {
        apply::apply(image, plan, progress, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_their_names() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
        assert_eq!(
            "fast".parse::<Mode>().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
