//! Compaction of qcow2 images: core's [`Compactable`] primitives in qcow2's crash order (no
//! journal: a refcount too high is a harmless leak, one too low is corruption, so every step
//! raises the refcounts of new places before it uses them and lowers those of old places only
//! after nothing points there; see QCOW2-PLAN and each module).
//!
//! ```text
//!  block = one guest cluster; footprint = one host cluster; grid = clusters from cluster 1
//!  deallocate   relocate::deallocate     L2 entry -> 0 / zero flag · refcount -> 0
//!  relocate     relocate::relocate       refcount 1 · copy · L2 entry · old refcount 0
//!  move_metadata metadata_move           L1 table, refcount table, refcount block, L2 table
//!  truncate     here                     leaks past the end -> 0 · shorten
//! ```
//!
//! Compressed clusters and clusters shared with internal snapshots are
//! [`vdisk_core::BlockState::Pinned`]: never freed or moved. Every cluster freed or moved is
//! checked against the stored refcounts first (exactly one), whatever the COPIED flags say.
//! Refused: images with persistent dirty bitmaps (their bitmaps would describe the wrong
//! clusters after a move), and images whose check finds an error (structures overlapping
//! each other or guest data, refcounts lower than the references: the host map cannot be
//! trusted, and rewriting a refcount block could rewrite guest data).

mod metadata_move;
mod refcount_update;
mod relocate;

use std::ops::Range;

use vdisk_core::{
    BlockIndex, Compactable, DiskImage, Error, ErrorKind, FreeAs, HostLayout, HostUse, ImageKind,
    Relocation, Result, Severity,
};

use crate::format::EXT_BITMAPS;
use crate::header::Layout;
use crate::image::Qcow2Image;
use refcount_update::RefcountUpdate;

/// Why an image with this layout may not be compacted, if it may not.
pub(crate) fn refusal(layout: &Layout) -> Result<()> {
    if layout.extensions.iter().any(|e| e.kind == EXT_BITMAPS) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the image has persistent dirty bitmaps, which would describe the wrong clusters \
             once clusters move; remove them first (`qemu-img bitmap --remove`); nothing was \
             changed",
        ));
    }
    Ok(())
}

/// Refuses ([`ErrorKind::InvalidImage`]) an image whose deep check finds an error, as
/// [`vdisk_core::Severity::Error`] promises: naming the first, the file untouched. Leaks
/// (warnings) are harmless and compaction reclaims them. Compressed clusters are not inflated
/// here: compaction keeps them where they are and never reads them.
pub(crate) fn refuse_damaged(img: &Qcow2Image) -> Result<()> {
    let errors: Vec<_> = crate::check::check_with(img, false)?
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    let Some(first) = errors.first() else {
        return Ok(());
    };
    let more = match errors.len() {
        1 => String::new(),
        n => format!(" and {} more (`vdisk check` lists them)", n - 1),
    };
    Err(Error::new(
        ErrorKind::InvalidImage,
        format!(
            "the image is damaged: {}{more}; compaction refuses a damaged image (repair it \
             with `qemu-img check -r all`); nothing was changed",
            first.message
        ),
    ))
}

/// Proves, before planning and again before applying, that every cluster the compactor may
/// free or move (each block's host cluster, each movable structure's clusters) has a stored
/// refcount of exactly one: the COPIED flags that made them so in the host space map may lie
/// in a hostile or damaged image, and a cluster with another reference must never be freed,
/// moved or overwritten. Refused ([`ErrorKind::InvalidImage`]) with the file untouched.
pub(crate) fn verify_exclusive(img: &Qcow2Image) -> Result<()> {
    let cs = img.layout.cluster_size;
    // A structure named twice would be moved for one of its names only.
    let mut seen = std::collections::BTreeSet::new();
    let tables = img.l1.iter().map(|e| e.l2);
    for at in tables
        .chain(img.reftable.iter().copied())
        .filter(|&at| at != 0)
    {
        if !seen.insert(at) {
            return Err(Error::invalid(
                format!(
                    "the table cluster at {at:#x} is named by two l1 or refcount table entries \
                     (run `qemu-img check -r all`); nothing was changed"
                ),
                at,
            ));
        }
    }
    let space = img.host_map()?;
    let mut rc = RefcountUpdate::load(&*img.file, &img.layout)?;
    // Every cluster that may become a move's target (a free one below the last live cluster,
    // which lies under the last refcount block) must have a refcount block to raise its
    // refcount in: this version adds none, and finding that out halfway through would stop a
    // compaction that has already moved clusters.
    let per = img.layout.refblock_entries().max(1);
    let last_block = img.reftable.iter().rposition(|&b| b != 0).unwrap_or(0) as u64;
    for (r, u) in space.ranges() {
        let what = match u {
            HostUse::BlockData(_) => "a data cluster",
            HostUse::Metadata { movable: true } => "a metadata cluster",
            HostUse::Free if r.start < r.end => {
                let first = r.start.max(cs) / cs / per;
                let last = ((r.end - 1) / cs / per).min(last_block);
                let uncovered = (first..=last).find(|&ti| {
                    usize::try_from(ti)
                        .ok()
                        .and_then(|i| img.reftable.get(i))
                        .is_none_or(|&b| b == 0)
                });
                if let Some(ti) = uncovered.filter(|_| first <= last) {
                    return Err(Error::invalid(
                        format!(
                            "the refcount table has no block for host clusters {:#x}.. \
                             (entry {ti}) below clusters it does count, which qemu never \
                             writes: compaction would have no refcount to raise for a cluster \
                             moved there; nothing was changed (`qemu-img convert` writes a \
                             clean copy)",
                            ti * per * cs
                        ),
                        img.layout.reftable_offset + ti * 8,
                    ));
                }
                continue;
            }
            _ => continue,
        };
        for c in r.start / cs..r.end.div_ceil(cs) {
            let n = rc.get(&*img.file, c)?;
            if n != 1 {
                return Err(relocate::not_exclusive(what, c * cs, n));
            }
        }
    }
    Ok(())
}

impl Compactable for Qcow2Image {
    fn host_layout(&self) -> Result<HostLayout> {
        let cs = self.layout.cluster_size;
        Ok(HostLayout {
            data_start: cs,
            block_footprint: cs,
            data_offset: Some(0),
            alignment: cs,
            trailer_len: 0,
            end_alignment: cs,
        })
    }

    /// Base images free to unallocated (zeros); a child frees to unallocated (the backing
    /// file's data) or, in version 3, to a zero cluster.
    fn deallocate(&mut self, blocks: &[BlockIndex], to: FreeAs) -> Result<()> {
        relocate::deallocate(self, blocks, to)
    }

    /// Version 3 has zero clusters; a version 2 child has none.
    fn can_free_as_zero(&self) -> bool {
        self.layout.version >= 3 || self.kind() != ImageKind::Differencing
    }

    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        relocate::relocate(self, moves, copied)
    }

    fn move_metadata(&mut self, from: Range<u64>, to: u64) -> Result<()> {
        metadata_move::move_metadata(self, from, to)
    }

    /// Clusters past the new end that still count a reference a cut left behind (leaks: the
    /// host space map calls them free) get refcount 0 first, durably; then the file is cut.
    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        let cs = self.layout.cluster_size;
        let end = data_end.div_ceil(cs).saturating_mul(cs);
        let len = self.file.len()?;
        let space = self.host_space()?;
        let last = len.max(space.len());
        if end < cs || (end < last && !space.is_free(end..last)) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "cannot end the file at {end:#x}: metadata or data lies past it; nothing \
                     was changed"
                ),
            ));
        }
        let mut rc = RefcountUpdate::load(&*self.file, &self.layout)?;
        let mut leaks = Vec::new();
        for c in end / cs..len.div_ceil(cs) {
            if rc.get(&*self.file, c)? != 0 {
                leaks.push((c, 0));
            }
        }
        if !leaks.is_empty() {
            rc.set(&*self.file, &leaks)?;
        }
        if end != len {
            // Longer only when the last cluster's tail was never written (it reads zeros).
            self.file.set_len(end)?;
            self.file.sync()?;
            self.layout.file_len = end;
        }
        Ok(end)
    }
}
