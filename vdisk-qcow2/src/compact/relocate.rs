//! Freeing and moving data clusters, in qcow2's crash order.
//!
//! ```text
//!  deallocate: L2 entries -> 0 (or the v3 zero flag), sync · refcounts -> 0, sync
//!  relocate:   target refcounts -> 1, sync · copy, sync · L2 entries -> targets, sync
//!              · source refcounts -> 0, sync
//! ```
//!
//! A cut anywhere leaves at worst clusters whose refcount is higher than their references (a
//! leak, which `qemu-img check` reports as harmless and the next compaction reuses), never
//! one lower. Before any write every cluster freed or moved, and the L2 table pointing at it,
//! is checked to have a stored refcount of exactly one: the COPIED flag of a hostile or
//! damaged image may lie, and a cluster shared with a snapshot must never change.

use std::collections::{BTreeMap, BTreeSet};

use vdisk_core::{BlockIndex, DiskImage, Error, ErrorKind, FreeAs, ImageKind, Relocation, Result};

use super::refcount_update::{RefcountUpdate, write_changed_sectors};
use crate::format::{OFFSET_MASK, OFLAG_ZERO};
use crate::image::Qcow2Image;
use crate::l2::Entry;

fn internal(msg: String) -> Error {
    Error::new(ErrorKind::Internal, msg)
}

/// The refusal of a cluster whose stored refcount is not one.
pub(super) fn not_exclusive(what: &str, at: u64, refcount: u64) -> Error {
    Error::invalid(
        format!(
            "{what} at {at:#x} has refcount {refcount}, not 1 (shared with a snapshot, or the \
             refcounts are damaged: run `qemu-img check -r all`); compaction would change what \
             another reference reads, so nothing was changed"
        ),
        at,
    )
}

/// Where guest cluster `cluster`'s L2 entry lies: (L1 index, entry index, raw entry). Refused
/// when its L2 table is not in memory.
fn site(img: &Qcow2Image, cluster: u64) -> Result<(usize, usize, u64)> {
    let per = img.layout.l2_entries();
    let i = usize::try_from(cluster / per).unwrap_or(usize::MAX);
    let j = usize::try_from(cluster % per).unwrap_or(usize::MAX);
    match img.l2.get(i) {
        Some(Some(t)) if j < t.len() => Ok((i, j, t[j])),
        _ => Err(internal(format!("guest cluster {cluster} has no l2 table"))),
    }
}

/// Checks that the L2 table at L1 index `i` and host cluster `host` each have a stored
/// refcount of exactly one.
fn check_exclusive(img: &Qcow2Image, rc: &mut RefcountUpdate, i: usize, host: u64) -> Result<()> {
    let cs = img.layout.cluster_size;
    let table = img.l1[i].l2;
    let r = rc.get(&*img.file, table / cs)?;
    if r != 1 {
        return Err(not_exclusive("an l2 table", table, r));
    }
    let r = rc.get(&*img.file, host / cs)?;
    if r != 1 {
        return Err(not_exclusive("a data cluster", host, r));
    }
    Ok(())
}

/// Writes the new raw entries `changes` ((L1 index, entry index) -> raw) into the L2 tables,
/// only the sectors that change, syncs, and takes them into memory.
fn write_entries(img: &mut Qcow2Image, changes: &BTreeMap<(usize, usize), u64>) -> Result<()> {
    let tables: BTreeSet<usize> = changes.keys().map(|&(i, _)| i).collect();
    let mut next = Vec::with_capacity(tables.len());
    for &i in &tables {
        let old = img.l2[i].as_ref().expect("checked by site");
        let mut new = old.to_vec();
        for (&(_, j), &raw) in changes.range((i, 0)..(i + 1, 0)) {
            new[j] = raw;
        }
        let bytes = |t: &[u64]| -> Vec<u8> { t.iter().flat_map(|e| e.to_be_bytes()).collect() };
        write_changed_sectors(&*img.file, img.l1[i].l2, &bytes(old), &bytes(&new))?;
        next.push((i, new));
    }
    img.file.sync()?;
    for (i, new) in next {
        img.l2[i] = Some(new.into_boxed_slice());
    }
    Ok(())
}

/// [`vdisk_core::Compactable::deallocate`] for qcow2.
pub(super) fn deallocate(img: &mut Qcow2Image, blocks: &[BlockIndex], to: FreeAs) -> Result<()> {
    let child = img.kind() == ImageKind::Differencing;
    let zero_flag = to == FreeAs::Zero && child;
    if zero_flag && img.layout.version < 3 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "a version 2 qcow2 child has no zero clusters, so a cluster cannot be freed to read \
             zeros; nothing was changed",
        ));
    }
    let cs = img.layout.cluster_size;
    let mut rc = RefcountUpdate::load(&*img.file, &img.layout)?;
    let mut changes = BTreeMap::new();
    let mut freed = Vec::new();
    let count = img.block_count();
    for &b in blocks {
        if b.0 >= count {
            return Err(internal(format!("no block {b}; nothing was freed")));
        }
        let host = match img.entry(b.0) {
            Entry::Unallocated | Entry::Zero { host: None, .. } => continue,
            Entry::Standard { host, .. }
            | Entry::Zero {
                host: Some(host), ..
            } => host,
            Entry::Compressed { .. } => {
                return Err(internal(format!(
                    "block {b} is compressed, which compaction keeps where it is; nothing was \
                     freed"
                )));
            }
        };
        let (i, j, _) = site(img, b.0)?;
        check_exclusive(img, &mut rc, i, host)?;
        let new = if zero_flag { OFLAG_ZERO } else { 0 };
        if changes.insert((i, j), new).is_none() {
            freed.push((host / cs, 0));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    write_entries(img, &changes)?;
    rc.set(&*img.file, &freed)
}

/// [`vdisk_core::Compactable::relocate`] for qcow2.
pub(super) fn relocate(
    img: &mut Qcow2Image,
    moves: &[Relocation],
    copied: &dyn Fn() -> Result<()>,
) -> Result<()> {
    let cs = img.layout.cluster_size;
    let space = img.host_space()?;
    let mut rc = RefcountUpdate::load(&*img.file, &img.layout)?;
    let mut changes = BTreeMap::new();
    let mut targets = BTreeSet::new();
    let count = img.block_count();
    for m in moves {
        let host = match img.entry(m.block.0) {
            _ if m.block.0 >= count => None,
            Entry::Standard { host, .. }
            | Entry::Zero {
                host: Some(host), ..
            } => Some(host),
            _ => None,
        };
        if host != Some(m.from.0) {
            return Err(internal(format!(
                "block {} is not a data cluster at {}; nothing was moved",
                m.block, m.from
            )));
        }
        let to = m.to.0;
        let free = to.is_multiple_of(cs)
            && to >= cs
            && to.checked_add(cs).is_some_and(|e| space.is_free(to..e))
            && targets.insert(to);
        if !free {
            return Err(internal(format!(
                "cannot move block {} to {to:#x}: not a free host cluster; nothing was moved",
                m.block
            )));
        }
        let (i, j, raw) = site(img, m.block.0)?;
        check_exclusive(img, &mut rc, i, m.from.0)?;
        changes.insert((i, j), (raw & !OFFSET_MASK) | to);
    }
    // A target free in the host space map may still count a reference a cut left behind (a
    // leak): it is set to exactly one, whatever it was.
    let raise: Vec<(u64, u64)> = targets.iter().map(|&t| (t / cs, 1)).collect();
    rc.set(&*img.file, &raise)?;
    for m in moves {
        let step = img
            .file
            .copy_within(m.from.0, m.to.0, cs)
            .and_then(|()| copied());
        if let Err(e) = step {
            // Nothing points at the copies: give their refcounts back (best effort; a
            // failure leaves leaks, never corruption).
            let lower: Vec<(u64, u64)> = targets.iter().map(|&t| (t / cs, 0)).collect();
            let _ = rc.set(&*img.file, &lower);
            return Err(e);
        }
    }
    img.file.sync()?;
    write_entries(img, &changes)?;
    let lower: Vec<(u64, u64)> = moves.iter().map(|m| (m.from.0 / cs, 0)).collect();
    rc.set(&*img.file, &lower)
}
