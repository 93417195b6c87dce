//! Planning a compaction (reads only): the allocation map and the host space map, asked for
//! once, then the reclaim set (trimmed, file-system-free, zero or same-as-parent blocks) and
//! the moves that pack what survives.

use std::ops::Range;

use super::apply::{HOST_PAGE, hole_bytes, reclaimed_ranges};
use super::layout::plan_moves;
use super::{CompactOptions, CompactPlan, Mode, Reason, ownership, scan};
use crate::error::{Error, ErrorKind, Result};
use crate::extent::GuestExtent;
use crate::image::{BlockState, DiskImage, ImageKind};
use crate::progress::{CancelToken, Phase, Progress};
use crate::units::BlockIndex;

/// The refusal of `retrim` on a host file that cannot punch holes (Windows, where vdisk never
/// makes a file sparse because Windows refuses to attach a sparse VHD or VHDX; macOS, not
/// implemented): retrim gives space back only by punching, so it would change the tables and
/// free nothing. Given before anything is read or written, dry runs included.
pub(super) fn retrim_cannot_punch() -> Error {
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

/// The blocks (sorted) that an opaque extent of `image`'s guest extent map touches: never
/// freed, never scanned for zeros, moved only whole (with their footprint).
fn opaque_blocks(image: &dyn DiskImage, block_size: u64) -> Result<Vec<u64>> {
    let bs = block_size.max(1);
    let mut out = Vec::new();
    for (r, kind) in image.guest_extents(0..image.size())? {
        if matches!(kind, GuestExtent::Opaque { .. }) && r.start < r.end {
            out.extend(r.start / bs..=(r.end - 1) / bs);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// True if `ranges` (sorted, disjoint) cover all of `r`.
fn covered(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges
        .get(i)
        .is_some_and(|x| x.start <= r.start && r.end <= x.end)
}

/// Works out what to reclaim and move: see [`Compactor::plan`].
pub(super) fn plan(
    image: &dyn DiskImage,
    opts: &CompactOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<CompactPlan> {
    image.compaction_allowed()?;
    let mode = opts.mode;
    if !mode.moves_blocks() && !image.host_file().punches_holes() {
        return Err(retrim_cannot_punch());
    }
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
    // Blocks an opaque extent touches (compressed, shared) are kept whole, as they are.
    let opaque = opaque_blocks(image, block_size)?;
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
    // Nothing is punched or reused unless the host space map proves whose it is.
    let space = image.host_space()?;
    let owned = ownership::owned_ranges(image, footprint, &space)?;
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
        if opaque.binary_search(&block.0).is_ok() {
            continue;
        }
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
            // Kept exactly where it is, in every mode, whatever the file system says: its
            // bytes are the format's fixed metadata (compressed, shared).
            BlockState::Pinned { .. } => {}
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

    let blocks_allocated = states.iter().filter(|s| s.stored()).count() as u64;
    let mut plan = CompactPlan {
        mode,
        block_size,
        blocks_total,
        blocks_allocated,
        reclaim,
        blocks_zero_from_holes: blocks_from_holes,
        moves: Vec::new(),
        metadata_moves: Vec::new(),
        punch: Vec::new(),
        truncate_to: None,
        bytes_before,
        bytes_after: bytes_before,
    };
    let freed = |b: BlockIndex, reclaim: &[(BlockIndex, Reason)]| {
        reclaim.binary_search_by_key(&b, |&(x, _)| x).is_ok()
    };
    if let Some(layout) = layout {
        let moves = plan_moves(&layout, &space, &|b| !freed(b, &plan.reclaim))?;
        let new_len = layout.file_len_for(moves.data_end).ok_or_else(|| {
            Error::invalid(
                "block area ends past any possible file length",
                moves.data_end,
            )
        })?;
        plan.moves = moves.moves;
        plan.metadata_moves = moves.metadata_moves;
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
            plan.blocks_zero_from_holes = plan.blocks_zero_from_holes.saturating_sub(dropped_zero);
            let mut k = keep.iter();
            plan.punch.retain(|_| k.next().copied().unwrap_or(true));
        }
        plan.punch.retain(|r| !r.is_empty());
    }
    Ok(plan)
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
}
