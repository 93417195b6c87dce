//! The format-independent compaction engine: plan (reads only), then apply (crash-safe writes).
//!
//! ```text
//!  plan:  allocation map ──► trimmed blocks ─┐
//!         FS free ranges ──► FS-free blocks ─┼─► reclaim set ──► move plan (fill holes from
//!         zero scan (rayon) ► zero blocks ───┘                    the end) ──► predicted size
//!  apply: deallocate (batched, durable) ─► relocate (copy, sync, retarget, sync) ─► truncate
//! ```

mod layout;
mod ownership;
mod scan;
#[cfg(test)]
mod space_tests;
#[cfg(test)]
mod toy;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use layout::{MovePlan, plan_moves};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::image::{BlockState, DiskImage, FreeAs, ImageKind, Relocation};
use crate::progress::{CancelToken, Phase, Progress};
use crate::units::{BlockIndex, HostOffset};

/// Blocks freed per `deallocate` call; cancellation is checked between calls.
const DEALLOCATE_BATCH: usize = 4096;
/// Most blocks per `relocate` call. Each call costs a data sync plus the table update's own
/// syncs (five for VHDX, through the log), so small blocks are batched by the thousand.
const RELOCATE_BATCH_BLOCKS: usize = 4096;
/// Most new host space one `relocate` call may need: the bytes its copies write into host-file
/// holes (a batch's copies are written before its sources are given back). This bounds the
/// extra host space a compaction needs, whatever the image.
pub const RELOCATE_BATCH_BYTES: u64 = 64 << 20;
/// Most bytes one `relocate` call moves in all (into holes or into space the file already
/// holds): bounds the work an interruption throws away (copies not yet pointed at) and the
/// time between cancellation checks, while keeping the syncs per GiB moved few.
const RELOCATE_BATCH_MOVED: u64 = 1 << 30;

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

/// The refusal of `retrim` on a host file that cannot punch holes (Windows, where vdisk never
/// makes a file sparse because Windows refuses to attach a sparse VHD or VHDX; macOS, not
/// implemented): retrim gives space back only by punching, so it would change the tables and
/// free nothing. Given before anything is read or written, dry runs included.
fn retrim_cannot_punch() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "retrim gives space back only by punching holes, which this host does not do (on \
         windows a punched file becomes sparse, and windows refuses to attach a sparse vhd or \
         vhdx); dynamic and differencing images: use full, quick, prezeroed or pretrimmed, \
         which move blocks and truncate; nothing was changed",
    )
}

/// Where a block's guest bytes start in its footprint, from `layout`
/// ([`crate::HostLayout::data_offset`]); refused, before anything is read or written, when the
/// format places them past the footprint's end (the zero scan would skip holes that are not the
/// block's data, and could free live data as zeros).
fn data_within(layout: &crate::HostLayout, block_size: u64) -> Result<Option<u64>> {
    match layout.data_offset {
        None => Ok(None),
        Some(d)
            if d.checked_add(block_size)
                .is_some_and(|e| e <= layout.block_footprint) =>
        {
            Ok(Some(d))
        }
        Some(d) => Err(Error::new(
            ErrorKind::Internal,
            format!(
                "the format places a block's {block_size} data bytes at offset {d} of its \
                 {}-byte host footprint, past its end; nothing was changed",
                layout.block_footprint
            ),
        )),
    }
}

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
        image: &dyn DiskImage,
        opts: &CompactOptions,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<CompactPlan> {
        image.compaction_allowed()?;
        let mode = opts.mode;
        let fixed = image.kind() == ImageKind::Fixed;
        // The primitives' read-only view and their layout, asked for once. A fixed image's
        // retrim needs neither (each block is its data, in place); its moving modes are
        // refused by the view ([`crate::ErrorKind::WrongType`]).
        let view = match fixed && !mode.moves_blocks() {
            true => None,
            false => Some(image.as_compactable_ref()?),
        };
        let host_layout = view.map(|v| v.host_layout()).transpose()?;
        if let (Mode::Retrim, Some(view)) = (mode, view)
            && !view.holes_allowed()
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "retrim would leave holes inside this {} image's block area, which its \
                     format does not allow; use --mode full or quick, which move blocks and \
                     shrink the file",
                    image.format()
                ),
            ));
        }
        if !mode.moves_blocks() && !image.host_file().punches_holes() {
            return Err(retrim_cannot_punch());
        }
        let layout = host_layout.clone().filter(|_| mode.moves_blocks());
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
        let zero_ok = !differencing || view.is_some_and(|v| v.can_free_as_zero());
        // Where a block's data starts within its host footprint, as the format says, so the
        // zero scan can skip host-file holes; a fixed image's block is its data.
        let (footprint, data_within) = match host_layout.as_ref().filter(|_| !fixed) {
            None => (None, Some(0)),
            Some(l) => (Some(l.block_footprint), data_within(l, block_size)?),
        };
        // Nothing is punched or reused unless the layout proves whose it is.
        let owned = ownership::owned_ranges(image, footprint)?;
        ownership::check_exclusive(&image.host_metadata()?, &owned, bytes_before)?;
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
                // A trimmed block of a differencing image is kept as it is: its content is
                // undefined (MS-VHDX 2.5.1.1), and readers disagree on it (vdisk reads zeros,
                // libvhdi reads through to the parent), so turning it into a zero or a
                // not-present block would change what one of them reads.
                BlockState::Trimmed { .. } if zero_ok && !differencing => {
                    reclaim.push((block, Reason::Trimmed))
                }
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
        let mut blocks_from_holes = 0;
        match image.parent().filter(|_| differencing) {
            Some(parent) => {
                let blocks: Vec<BlockIndex> = scan.iter().map(|&(b, _)| b).collect();
                reclaim.extend(scan::child_blocks(
                    image, parent, zero_ok, &blocks, progress, cancel,
                )?);
            }
            None if differencing => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "differencing image opened without its parent cannot be compacted",
                ));
            }
            None => {
                let found = scan::zero_blocks(image, &scan, progress, cancel)?;
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
            // Retrim: punch each reclaimed block's host space (proven its own above). Fixed
            // images keep their data in place (the visible part of the block); others use
            // their footprint.
            plan.punch = reclaimed_ranges(&plan.reclaim, &owned);
            if image.kind() == ImageKind::Fixed {
                // A fixed image's block whose host space is all holes already (punched by an
                // earlier retrim) gives nothing back: it is not reclaimed again, so a second
                // run reports nothing to reclaim. Host file systems free whole pages only, so
                // the partial pages at a range's ends (the last block before a VHD footer)
                // stay allocated after a punch and do not count.
                let file = image.host_file();
                let mut keep = Vec::with_capacity(plan.reclaim.len());
                for r in &plan.punch {
                    let pages = r.start.next_multiple_of(HOST_PAGE)..r.end / HOST_PAGE * HOST_PAGE;
                    let gives_back = pages.start < pages.end
                        && hole_bytes(file, pages.clone())? < pages.end - pages.start;
                    keep.push(r.is_empty() || gives_back);
                }
                let mut k = keep.iter();
                let mut dropped_zero = 0;
                plan.reclaim.retain(|&(_, reason)| {
                    let kept = k.next().copied().unwrap_or(true);
                    dropped_zero += u64::from(!kept && reason == Reason::Zero);
                    kept
                });
                plan.blocks_zero_from_holes =
                    plan.blocks_zero_from_holes.saturating_sub(dropped_zero);
                let mut k = keep.iter();
                plan.punch.retain(|_| k.next().copied().unwrap_or(true));
            }
            plan.punch.retain(|r| !r.is_empty());
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
        let footprint = match fixed {
            true => None,
            false => Some(image.as_compactable()?.host_layout()?.block_footprint),
        };
        // Proven again on the image as it is now: the plan may be applied to another open.
        let owned = ownership::owned_ranges(image, footprint)?;
        ownership::check_exclusive(&image.host_metadata()?, &owned, image.host_file().len()?)?;
        let reclaimed = reclaimed_ranges(&plan.reclaim, &owned);
        let own: std::collections::HashSet<(u64, u64)> =
            reclaimed.iter().map(|r| (r.start, r.end)).collect();
        if !plan.punch.is_empty() && !image.host_file().punches_holes() {
            return Err(retrim_cannot_punch());
        }
        if plan.punch.iter().any(|r| !own.contains(&(r.start, r.end))) {
            return Err(Error::new(
                ErrorKind::Internal,
                "the plan punches host space that is not a reclaimed block's own; it was made \
                 for another image (nothing was changed)",
            ));
        }
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
            if plan.mode.moves_blocks() {
                // The tables no longer point at them (durably): give their space back now, so
                // the moves below need no more free host space than one batch.
                let mut freed = Vec::with_capacity(reclaimed.len());
                for (&(block, _), range) in plan.reclaim.iter().zip(&reclaimed) {
                    if image.block_state(block)?.host().is_none() {
                        freed.push(range.clone());
                    }
                }
                // Space the moves will copy into is kept: punching it only for the copies to
                // allocate it again costs time and gives nothing back.
                let targets: Vec<Range<u64>> = match footprint {
                    Some(f) => plan
                        .moves
                        .iter()
                        .map(|m| m.to.0..m.to.0.saturating_add(f))
                        .collect(),
                    None => Vec::new(),
                };
                ownership::give_back(image.host_file(), &subtract(freed, targets))?;
            }
        }
        if let (false, Some(footprint)) = (plan.moves.is_empty(), footprint) {
            relocate_giving_back(image, plan, &owned, footprint, progress, cancel)?;
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

/// The parts of `ranges` outside every range of `minus`.
fn subtract(mut ranges: Vec<Range<u64>>, mut minus: Vec<Range<u64>>) -> Vec<Range<u64>> {
    crate::fs::coalesce(&mut ranges);
    crate::fs::coalesce(&mut minus);
    let mut out = Vec::with_capacity(ranges.len());
    let mut m = 0;
    for r in ranges {
        let mut start = r.start;
        while m < minus.len() && minus[m].end <= start {
            m += 1;
        }
        let mut k = m;
        while start < r.end {
            match minus.get(k) {
                Some(x) if x.start < r.end => {
                    if x.start > start {
                        out.push(start..x.start);
                    }
                    start = start.max(x.end);
                    k += 1;
                }
                _ => {
                    out.push(start..r.end);
                    break;
                }
            }
        }
    }
    out
}

/// The host range of each reclaimed block, from `owned` (sorted by block); empty for blocks
/// that hold no host space.
fn reclaimed_ranges(
    reclaim: &[(BlockIndex, Reason)],
    owned: &[(BlockIndex, Range<u64>)],
) -> Vec<Range<u64>> {
    reclaim
        .iter()
        .map(|&(block, _)| {
            owned
                .binary_search_by_key(&block, |(b, _)| *b)
                .map_or(0..0, |i| owned[i].1.clone())
        })
        .collect()
}

/// Applies the plan's moves in batches that need at most [`RELOCATE_BATCH_BYTES`] of new host
/// space (copies into host-file holes) and move at most `RELOCATE_BATCH_MOVED`. After each batch,
/// whose table update is durable when `relocate` returns, the sources it vacated are given back
/// to the host: the extra host space a compaction needs (copies into host-file holes) is one
/// batch, whatever the image. A source is given back only if it was the block's own range
/// (`owned`, proven exclusive) and the table now points at the copy. Targets were free at plan
/// time and never overlap a source, so no later move writes into a given-back range.
///
/// If a batch fails, its copies may keep up to one batch of host space: whether the table
/// points at them cannot be proven from here (a log entry written before the failure may
/// still be replayed at the next open), so they are left for the next run to reclaim.
fn relocate_giving_back(
    image: &mut dyn DiskImage,
    plan: &CompactPlan,
    owned: &[(BlockIndex, Range<u64>)],
    footprint: u64,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<()> {
    progress.phase(Phase::Relocate, plan.moves.len() as u64);
    let mut rest = &plan.moves[..];
    while !rest.is_empty() {
        let len = next_batch_len(image.host_file(), rest, footprint)?;
        let (batch, after) = rest.split_at(len);
        rest = after;
        cancel.check()?;
        // Progress and Ctrl-C per block, inside the batch: a cancel stops before the batch's
        // table update, so the copies made so far only sit in free space.
        let copied = || {
            cancel.check()?;
            progress.advance(1);
            Ok(())
        };
        image.as_compactable()?.relocate(batch, &copied)?;
        let mut vacated = Vec::with_capacity(batch.len());
        for m in batch {
            let own = owned
                .binary_search_by_key(&m.block, |(b, _)| *b)
                .ok()
                .map(|i| &owned[i].1);
            let source = m.from.0..m.from.0.saturating_add(footprint);
            if own == Some(&source) && image.block_state(m.block)?.host() == Some(m.to) {
                vacated.push(source);
            }
        }
        ownership::give_back(image.host_file(), &vacated)?;
    }
    Ok(())
}

/// How many of `moves` (at least one) make the next batch: as many as fit in
/// [`RELOCATE_BATCH_BYTES`] of copies into host-file holes (new host space), in
/// `RELOCATE_BATCH_MOVED` bytes moved and in `RELOCATE_BATCH_BLOCKS` blocks. A file that cannot
/// tell its holes (the default [`HostFile::next_data`]) reports every target as held space.
fn next_batch_len(file: &dyn HostFile, moves: &[Relocation], footprint: u64) -> Result<usize> {
    let (mut new_space, mut moved) = (0u64, 0u64);
    for (i, m) in moves.iter().enumerate() {
        let target = m.to.0..m.to.0.saturating_add(footprint);
        let needs = hole_bytes(file, target)?;
        let full = i == RELOCATE_BATCH_BLOCKS
            || new_space.saturating_add(needs) > RELOCATE_BATCH_BYTES
            || moved.saturating_add(footprint) > RELOCATE_BATCH_MOVED;
        if full && i > 0 {
            return Ok(i);
        }
        new_space = new_space.saturating_add(needs);
        moved = moved.saturating_add(footprint);
    }
    Ok(moves.len())
}

/// The allocation unit host file systems punch in: a range's partial pages stay allocated.
const HOST_PAGE: u64 = 4096;

/// Bytes of `range` that lie in holes of `file` (`SEEK_DATA`/`SEEK_HOLE`): what writing the
/// whole range would newly allocate.
fn hole_bytes(file: &dyn HostFile, range: Range<u64>) -> Result<u64> {
    let mut holes = 0;
    let mut pos = range.start;
    while pos < range.end {
        let data = match file.next_data(pos)? {
            Some(d) if d < range.end => d.max(pos),
            _ => return Ok(holes + (range.end - pos)),
        };
        holes += data - pos;
        let hole = file.next_hole(data)?;
        // A hole at `data` itself (the file changed in between): count the rest as data.
        pos = if hole <= data {
            range.end
        } else {
            hole.min(range.end)
        };
    }
    Ok(holes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(
        clippy::single_range_in_vec_init,
        reason = "lists of one range are cases under test"
    )]
    fn subtract_keeps_only_what_lies_outside_every_range_taken_away() {
        assert_eq!(
            subtract(vec![0..10, 20..30, 40..50], vec![5..22, 25..26, 45..60]),
            vec![0..5, 22..25, 26..30, 40..45]
        );
        assert_eq!(subtract(vec![0..10], vec![]), vec![0..10]);
        assert_eq!(subtract(vec![0..10], vec![0..10]), Vec::<Range<u64>>::new());
    }

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
