//! Applying a plan (crash-safe writes): deallocate in batches, give the freed space back,
//! move metadata, relocate blocks in batches bounded by the new host space they need, punch,
//! truncate.

use std::ops::Range;

use super::{CompactPlan, CompactReport, MetadataMove, RELOCATE_BATCH_BYTES, Reason, ownership};
use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::image::{BlockState, DiskImage, FreeAs, ImageKind, Relocation};
use crate::progress::{CancelToken, Phase, Progress};
use crate::space::HostUse;
use crate::units::BlockIndex;

/// Blocks freed per `deallocate` call; cancellation is checked between calls.
const DEALLOCATE_BATCH: usize = 4096;
/// Most blocks per `relocate` call. Each call costs a data sync plus the table update's own
/// syncs (five for VHDX, through the log), so small blocks are batched by the thousand.
const RELOCATE_BATCH_BLOCKS: usize = 4096;
/// Most bytes one `relocate` call moves in all (into holes or into space the file already
/// holds): bounds the work an interruption throws away (copies not yet pointed at) and the
/// time between cancellation checks, while keeping the syncs per GiB moved few.
const RELOCATE_BATCH_MOVED: u64 = 1 << 30;

/// Applies `plan` to `image`: see [`Compactor::apply`].
pub(super) fn apply(
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
    let owned = ownership::owned_ranges(image, footprint, &image.host_space()?)?;
    // A pinned block is never freed or moved: a plan made on another open, where it was not
    // pinned yet, is refused before anything is written.
    let planned = plan.reclaim.iter().map(|&(b, _)| b);
    for block in planned.chain(plan.moves.iter().map(|m| m.block)) {
        if matches!(image.block_state(block)?, BlockState::Pinned { .. }) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the plan frees or moves block {block}, which the image keeps where it is                      (pinned); it was made for another image (nothing was changed)"
                ),
            ));
        }
    }
    let reclaimed = reclaimed_ranges(&plan.reclaim, &owned);
    let own: std::collections::HashSet<(u64, u64)> =
        reclaimed.iter().map(|r| (r.start, r.end)).collect();
    if !plan.punch.is_empty() && !image.host_file().punches_holes() {
        return Err(super::plan::retrim_cannot_punch());
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
                if !image.block_state(block)?.stored() {
                    freed.push(range.clone());
                }
            }
            // Space the moves will copy into is kept: punching it only for the copies to
            // allocate it again costs time and gives nothing back.
            let mut targets: Vec<Range<u64>> = match footprint {
                Some(f) => plan
                    .moves
                    .iter()
                    .map(|m| m.to.0..m.to.0.saturating_add(f))
                    .collect(),
                None => Vec::new(),
            };
            targets.extend(
                plan.metadata_moves
                    .iter()
                    .map(|m| m.to..m.to + (m.from.end - m.from.start)),
            );
            ownership::give_back(image.host_file(), &subtract(freed, targets))?;
        }
    }
    for m in &plan.metadata_moves {
        cancel.check()?;
        move_metadata(image, m)?;
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

/// Moves one metadata structure, proven first on the image as it is now (the plan may have
/// been made for another open): the source must be one movable metadata range of the host
/// space map and the target free there. Once the map no longer claims the old range, it is
/// given back.
fn move_metadata(image: &mut dyn DiskImage, m: &MetadataMove) -> Result<()> {
    let target = m.to..m.to.saturating_add(m.from.end - m.from.start);
    let space = image.host_space()?;
    let movable = HostUse::Metadata { movable: true };
    let is_source = space
        .ranges()
        .iter()
        .any(|(r, u)| *r == m.from && *u == movable);
    if !is_source || !space.is_free(target.clone()) {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "the plan moves metadata from {:#x}..{:#x} to {:#x}, which is not a movable \
                 structure moving into free space; it was made for another image (nothing \
                 more was changed)",
                m.from.start, m.from.end, m.to
            ),
        ));
    }
    image
        .as_compactable()?
        .move_metadata(m.from.clone(), m.to)?;
    if image.host_space()?.is_free(m.from.clone()) {
        ownership::give_back(image.host_file(), std::slice::from_ref(&m.from))?;
    }
    Ok(())
}

/// The parts of `ranges` outside every range of `minus`.
pub(super) fn subtract(mut ranges: Vec<Range<u64>>, mut minus: Vec<Range<u64>>) -> Vec<Range<u64>> {
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
pub(super) fn reclaimed_ranges(
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
pub(super) const HOST_PAGE: u64 = 4096;

/// Bytes of `range` that lie in holes of `file` (`SEEK_DATA`/`SEEK_HOLE`): what writing the
/// whole range would newly allocate.
pub(super) fn hole_bytes(file: &dyn HostFile, range: Range<u64>) -> Result<u64> {
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
}
