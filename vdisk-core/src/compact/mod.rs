//! The format-independent compaction engine: plan (reads only), then apply (crash-safe writes).
//!
//! ```text
//!  plan:  allocation map ──► trimmed blocks ─┐
//!         FS free ranges ──► FS-free blocks ─┼─► reclaim set ──► move plan (fill holes from
//!         zero scan (rayon) ► zero blocks ───┘                    the end) ──► predicted size
//!  apply: deallocate (batched, durable) ─► relocate (copy, sync, retarget, sync) ─► truncate
//! ```

mod layout;
mod scan;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use layout::{MovePlan, plan_moves};

use crate::error::{Error, ErrorKind, Result};
use crate::image::{BlockState, DiskImage, FreeAs, ImageKind, Relocation};
use crate::progress::{CancelToken, Phase, Progress};
use crate::units::{BlockIndex, HostOffset};

/// Blocks freed per `deallocate` call; cancellation is checked between calls.
const DEALLOCATE_BATCH: usize = 4096;
/// Most blocks per `relocate` call. Each call costs a data sync plus the table update's own
/// syncs (five for VHDX, through the log), so small blocks are batched by the thousand.
const RELOCATE_BATCH_BLOCKS: usize = 4096;
/// Most bytes per `relocate` call: bounds the work an interruption throws away (copies not yet
/// pointed at) and the time between cancellation checks.
const RELOCATE_BATCH_BYTES: u64 = 1 << 30;

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

/// Why a block is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// analyser; ignored by modes that do not use the file system).
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

/// Plans and applies compactions.
pub trait Compactor {
    /// Works out what to reclaim and move. Reads only: nothing is written. `image` is taken
    /// mutably only to reach its compaction primitives' layout.
    fn plan(
        &self,
        image: &mut dyn DiskImage,
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

/// The compactor for any format that implements [`crate::Compactable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GenericCompactor;

/// True if `ranges` (sorted, disjoint) cover all of `r`.
fn covered(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges
        .get(i)
        .is_some_and(|x| x.start <= r.start && r.end <= x.end)
}

impl Compactor for GenericCompactor {
    fn plan(
        &self,
        image: &mut dyn DiskImage,
        opts: &CompactOptions,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactPlan> {
        image.compaction_allowed()?;
        let mode = opts.mode;
        let layout = if mode.moves_blocks() {
            Some(image.as_compactable()?.host_layout()?)
        } else {
            None
        };
        let block_size = image.block_size();
        let size = image.size();
        let blocks_total = image.block_count();
        let bytes_before = image.host_file().len()?;
        let fs_free = opts.fs_free.as_deref().filter(|_| mode.uses_file_system());

        let mut states = Vec::with_capacity(usize::try_from(blocks_total).unwrap_or(0));
        for i in 0..blocks_total {
            states.push(image.block_state(BlockIndex(i))?);
        }
        // A differencing image can only free a block to "zero" if its format has a zero
        // state; otherwise the block would start showing the parent's data.
        let differencing = image.kind() == ImageKind::Differencing;
        let zero_ok = !differencing || image.as_compactable()?.can_free_as_zero();
        // Where a block's data starts within its host footprint, so the zero scan can skip
        // host-file holes: the footprint ends with the block's data (VHD: sector bitmap, then
        // data; VHDX: data only); a fixed image's block is its data.
        let data_within = match image.kind() {
            ImageKind::Fixed => Some(0),
            _ => {
                let footprint = match &layout {
                    Some(l) => l.block_footprint,
                    None => image.as_compactable()?.host_layout()?.block_footprint,
                };
                footprint.checked_sub(block_size)
            }
        };
        let mut reclaim = Vec::new();
        let mut scan: Vec<scan::Candidate> = Vec::new();
        for (i, state) in states.iter().enumerate() {
            let block = BlockIndex(i as u64);
            let start = block.0.saturating_mul(block_size);
            if start >= size {
                // A table entry past the virtual size (qemu's MaxTableEntries + 1, CHS-sized
                // images): no reader sees it, so it is kept as it is and never read.
                continue;
            }
            let virt = start..start.saturating_add(block_size).min(size);
            match state {
                BlockState::Trimmed { .. } if zero_ok => reclaim.push((block, Reason::Trimmed)),
                BlockState::Allocated { .. }
                    if zero_ok && fs_free.is_some_and(|f| covered(f, &virt)) =>
                {
                    reclaim.push((block, Reason::FsFree))
                }
                BlockState::Allocated { host } if mode.scans_for_zeros() => {
                    scan.push((block, data_within.and_then(|d| host.0.checked_add(d))));
                }
                _ => {}
            }
        }
        cancel.check()?;
        progress.phase(Phase::ZeroScan, scan.len() as u64);
        let image_ref: &dyn DiskImage = image;
        let mut blocks_from_holes = 0;
        match image_ref.parent().filter(|_| differencing) {
            Some(parent) => {
                let blocks: Vec<BlockIndex> = scan.iter().map(|&(b, _)| b).collect();
                reclaim.extend(scan::child_blocks(
                    image_ref, parent, zero_ok, &blocks, progress, cancel,
                )?);
            }
            None if differencing => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "differencing image opened without its parent cannot be compacted",
                ));
            }
            None => {
                let found = scan::zero_blocks(image_ref, &scan, progress, cancel)?;
                blocks_from_holes = found.from_holes;
                reclaim.extend(found.zero.into_iter().map(|b| (b, Reason::Zero)));
            }
        }
        reclaim.sort_unstable_by_key(|&(b, _)| b);

        let blocks_allocated = states.iter().filter(|s| s.host().is_some()).count() as u64;
        let mut plan = CompactPlan {
            mode,
            block_size,
            blocks_total,
            blocks_allocated,
            reclaim,
            blocks_zero_from_holes: blocks_from_holes,
            moves: Vec::new(),
            punch: Vec::new(),
            truncate_to: None,
            bytes_before,
            bytes_after: bytes_before,
        };
        let freed = |b: BlockIndex, reclaim: &[(BlockIndex, Reason)]| {
            reclaim.binary_search_by_key(&b, |&(x, _)| x).is_ok()
        };
        if let Some(layout) = layout {
            let survivors: Vec<(BlockIndex, HostOffset)> = states
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((BlockIndex(i as u64), s.host()?)))
                .filter(|&(b, _)| !freed(b, &plan.reclaim))
                .collect();
            let moves = plan_moves(&layout, &survivors)?;
            let new_len = layout.file_len_for(moves.data_end).ok_or_else(|| {
                Error::invalid(
                    "block area ends past any possible file length",
                    moves.data_end,
                )
            })?;
            plan.moves = moves.moves;
            if new_len < bytes_before {
                plan.truncate_to = Some(moves.data_end);
                plan.bytes_after = new_len;
            }
        } else {
            // Retrim: punch each reclaimed block's host space. Fixed images keep their data in
            // place (footprint = the visible part of the block); others use their footprint.
            let footprint = match image.kind() {
                ImageKind::Fixed => None,
                _ => Some(image.as_compactable()?.host_layout()?.block_footprint),
            };
            for &(block, _) in &plan.reclaim {
                if let Some(HostOffset(host)) =
                    states[usize::try_from(block.0).unwrap_or(usize::MAX)].host()
                {
                    let len =
                        footprint.unwrap_or_else(|| block_size.min(size - block.0 * block_size));
                    plan.punch.push(host..host + len);
                }
            }
        }
        Ok(plan)
    }

    fn apply(
        &self,
        image: &mut dyn DiskImage,
        plan: &CompactPlan,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactReport> {
        image.compaction_allowed()?;
        // Pending changes the open only showed in memory go to the file before anything else.
        image.prepare_write()?;
        let fixed = image.kind() == ImageKind::Fixed;
        if plan.reclaimed(Reason::FsFree) > 0 {
            // Before the first block that may read differently is freed or punched out.
            image.begin_content_change()?;
        }
        if !plan.reclaim.is_empty() && !fixed {
            let target = image.as_compactable()?;
            progress.phase(Phase::Deallocate, plan.reclaim.len() as u64);
            for to in [FreeAs::Parent, FreeAs::Zero] {
                let blocks: Vec<BlockIndex> = plan
                    .reclaim
                    .iter()
                    .filter(|(_, r)| r.free_as() == to)
                    .map(|&(b, _)| b)
                    .collect();
                for batch in blocks.chunks(DEALLOCATE_BATCH) {
                    cancel.check()?;
                    target.deallocate(batch, to)?;
                    progress.advance(batch.len() as u64);
                }
            }
        }
        if !plan.moves.is_empty() {
            let target = image.as_compactable()?;
            let footprint = target.host_layout()?.block_footprint.max(1);
            let per_batch = usize::try_from(RELOCATE_BATCH_BYTES / footprint)
                .unwrap_or(1)
                .clamp(1, RELOCATE_BATCH_BLOCKS);
            progress.phase(Phase::Relocate, plan.moves.len() as u64);
            for batch in plan.moves.chunks(per_batch) {
                cancel.check()?;
                target.relocate(batch)?;
                progress.advance(batch.len() as u64);
            }
        }
        if !plan.punch.is_empty() {
            progress.phase(Phase::Punch, plan.punch.len() as u64);
            let file = image.host_file();
            for r in &plan.punch {
                cancel.check()?;
                file.punch_hole(r.start, r.end - r.start)?;
                progress.advance(1);
            }
            file.sync()?;
        }
        if let Some(data_end) = plan.truncate_to {
            cancel.check()?;
            progress.phase(Phase::Truncate, 1);
            image.as_compactable()?.truncate(data_end)?;
            progress.advance(1);
        }
        let mut report = plan.report(false);
        report.bytes_after = image.host_file().len()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_needs_one_range_containing_all() {
        let f = vec![0..10, 10..20, 30..40];
        assert!(covered(&f, &(0..10)));
        assert!(covered(&f, &(32..40)));
        assert!(
            !covered(&f, &(5..15)),
            "ranges must be coalesced by the caller"
        );
        assert!(!covered(&f, &(25..31)));
        assert!(!covered(&f, &(40..41)));
    }

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
