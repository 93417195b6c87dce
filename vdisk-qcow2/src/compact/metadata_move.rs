//! Moving qcow2's movable metadata down: the active L1 table, the refcount table, a refcount
//! block, an active L2 table. Each move, in qcow2's crash order:
//!
//! ```text
//!  target refcounts -> 1, sync · copy, sync · repoint, sync · old refcounts -> 0, sync
//!  repoint: L1 table        header sector (l1_table_offset)
//!           refcount table  header sector (refcount_table_offset)
//!           refcount block  its 8-byte refcount table entry
//!           L2 table        its 8-byte L1 entry (with COPIED)
//! ```
//!
//! A refcount block may count its own new place: its target's refcount is raised in whichever
//! block covers it (possibly itself, at its old place) before the copy, so the copy carries
//! the raise; the old place is lowered through the table as repointed.

use std::ops::Range;

use vdisk_core::{DiskImage, Error, ErrorKind, Result};

use super::refcount_update::RefcountUpdate;
use super::relocate::not_exclusive;
use crate::format::OFLAG_COPIED;
use crate::image::Qcow2Image;

/// Offset of `l1_table_offset` in the header.
const L1_OFFSET_FIELD: usize = 40;
/// Offset of `refcount_table_offset` in the header.
const REFTABLE_OFFSET_FIELD: usize = 48;

/// What a movable range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Structure {
    L1Table,
    RefcountTable,
    /// The refcount block at this refcount table index.
    RefcountBlock(usize),
    /// The L2 table of this active L1 index.
    L2Table(usize),
}

fn internal(msg: String) -> Error {
    Error::new(ErrorKind::Internal, msg)
}

/// Which structure lies exactly at `from`, named by exactly one reference.
fn identify(img: &Qcow2Image, rc: &RefcountUpdate, from: &Range<u64>) -> Option<Structure> {
    let l = &img.layout;
    let cs = l.cluster_size;
    if *from == (l.l1_offset..l.l1_offset + l.cluster_align(l.l1_bytes())) && l.l1_size > 0 {
        return Some(Structure::L1Table);
    }
    if *from == (l.reftable_offset..l.reftable_offset + l.reftable_bytes()) {
        return Some(Structure::RefcountTable);
    }
    if from.end.checked_sub(from.start) != Some(cs) {
        return None;
    }
    let one = |mut it: Box<dyn Iterator<Item = usize> + '_>| match (it.next(), it.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    };
    let blocks = rc.table().iter().enumerate();
    let tables = img.l1.iter().enumerate();
    match (
        one(Box::new(
            blocks.filter(|(_, b)| **b == from.start).map(|(i, _)| i),
        )),
        one(Box::new(
            tables.filter(|(_, e)| e.l2 == from.start).map(|(i, _)| i),
        )),
    ) {
        (Some(ti), None) => Some(Structure::RefcountBlock(ti)),
        (None, Some(i)) => Some(Structure::L2Table(i)),
        _ => None,
    }
}

/// Writes `value` into the header field at `field` with one write of the header's first
/// sector, and syncs.
fn write_header_field(img: &mut Qcow2Image, field: usize, value: u64) -> Result<()> {
    let mut sector = [0u8; 512];
    img.file.read_at(&mut sector, 0)?;
    sector[field..field + 8].copy_from_slice(&value.to_be_bytes());
    img.file.write_at(&sector, 0)?;
    img.file.sync()
}

/// [`vdisk_core::Compactable::move_metadata`] for qcow2.
pub(super) fn move_metadata(img: &mut Qcow2Image, from: Range<u64>, to: u64) -> Result<()> {
    let cs = img.layout.cluster_size;
    let mut rc = RefcountUpdate::load(&*img.file, &img.layout)?;
    let what = identify(img, &rc, &from);
    let len = from.end.saturating_sub(from.start);
    let target = to..to.saturating_add(len);
    let space = img.host_space()?;
    let fits =
        to.is_multiple_of(cs) && to >= cs && target.end > to && space.is_free(target.clone());
    let Some(what) = what.filter(|_| fits) else {
        return Err(internal(format!(
            "cannot move {from:?} to {to:#x}: not one movable qcow2 structure moving into free \
             host clusters; nothing was changed"
        )));
    };
    let old: Vec<u64> = (from.start / cs..from.end / cs).collect();
    for &c in &old {
        let r = rc.get(&*img.file, c)?;
        if r != 1 {
            return Err(not_exclusive("a metadata cluster", c * cs, r));
        }
    }
    let new: Vec<(u64, u64)> = (to / cs..target.end / cs).map(|c| (c, 1)).collect();
    rc.set(&*img.file, &new)?;
    img.file.copy_within(from.start, to, len)?;
    img.file.sync()?;
    match what {
        Structure::L1Table => {
            write_header_field(img, L1_OFFSET_FIELD, to)?;
            img.layout.l1_offset = to;
            img.header.l1_table_offset.set(to);
        }
        Structure::RefcountTable => {
            write_header_field(img, REFTABLE_OFFSET_FIELD, to)?;
            img.layout.reftable_offset = to;
            img.header.refcount_table_offset.set(to);
        }
        Structure::RefcountBlock(ti) => {
            rc.repoint(&*img.file, ti as u64, to)?;
            img.reftable[ti] = to;
        }
        Structure::L2Table(i) => {
            let at = img.layout.l1_offset + i as u64 * 8;
            img.file.write_at(&(to | OFLAG_COPIED).to_be_bytes(), at)?;
            img.file.sync()?;
            img.l1[i].l2 = to;
            img.l1[i].copied = true;
        }
    }
    let lower: Vec<(u64, u64)> = old.iter().map(|&c| (c, 0)).collect();
    rc.set(&*img.file, &lower)
}
