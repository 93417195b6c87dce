//! # vdisk-lvm
//!
//! The LVM2 implementation of [`vdisk_core::FsAnalyzer`]: an LVM physical volume is a
//! container. Its linear logical volumes become inner volumes that the other analysers look
//! into (an ext4 or NTFS inside an LV), and the extents no logical volume uses are free.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the PV's first byte
//!     label       "LABELONE" in sectors 0..4 ── absent ──────────────────► NotMine
//!                 sector number, "LVM2 001", crc, pv header (uuid, size,
//!                 area lists) ── damaged, or device larger than volume ──► Untrusted
//!     mda         each metadata area: header magic + crc, current raw
//!                 location (circular buffer, may wrap), text crc ── bad ──► Untrusted
//!                 no area / all ignored / empty ─────────────────────────► Untrusted
//!     text, vg    the newest text parsed (sections, key = value, arrays;
//!                 bounded) into the volume group: extent size, pvs, lvs
//!     allocation  this PV in the group, its extents inside the volume and
//!                 clear of label and metadata; each LV's runs of this PV's
//!                 extents (exact ones must not overlap) ──────────────────► Untrusted
//!                 ─► Container { free: extents no LV uses,
//!                                volumes: visible LVs, linear ones with their extents,
//!                                         thin/snapshot/raid/mirror/cache/vdo/striped/
//!                                         multi-PV ones untrusted with the reason }
//! ```
//!
//! The core then runs every analyser on each trusted inner volume through a segmented
//! [`vdisk_core::VolumeView`], and maps their free space back to the disk.
//!
//! Everything before the first extent (label, metadata area, alignment) and after the last
//! (a second metadata area) is used; so are the extents of hidden LVs and of untrusted ones.
//! No crate reads LVM metadata for Rust (the `lvm2` crates drive the command-line tools), so
//! the label, metadata area and text format readers are here, each bounded: the text is at
//! most [`text::MAX_TEXT`] bytes and the whole analysis reads at most [`BUDGET`].
//!
//! [`vdisk_core::FsUsage::details`] keys: `volume_group`, `extent_size` (bytes), `pe_start`
//! (bytes), `extents`, `free_extents`, `logical_volumes`, `seqno`.
#![forbid(unsafe_code)]
// Test images are small and tests run on 64-bit hosts; the library itself is checked without.
#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

mod allocation;
mod crc;
mod label;
mod mda;
pub mod text;
mod vg;

use vdisk_core::fs::{ContainerUsage, Doubt, Examined, MetaReader, damaged, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict, Result};

use crate::mda::Content;
use crate::vg::VolumeGroup;

/// The analyser id.
pub const ID: &str = "lvm2";
/// Most bytes one analysis reads: the label sectors and two metadata texts, with room.
pub const BUDGET: u64 = 3 * (text::MAX_TEXT as u64) + (1 << 20);

/// The LVM2 physical volume analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct LvmAnalyzer;

/// The analyser to register: `&[&vdisk_lvm::ANALYZER, ...]`.
pub static ANALYZER: LvmAnalyzer = LvmAnalyzer;

impl FsAnalyzer for LvmAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs.
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        examine_guarded(ID, || examine(volume))
    }
}

fn examine(volume: &dyn BlockDevice) -> Examined<FsVerdict> {
    let reader = MetaReader::new(volume, BUDGET);
    let Some(label) = label::find(&reader)? else {
        return Ok(FsVerdict::NotMine);
    };
    let vg = newest_group(&reader, &label)?;
    match allocation::container(&vg, &label.uuid, volume.size(), &label.metadata_areas) {
        Ok(c) => Ok(FsVerdict::Container(c)),
        Err(reason) => damaged(reason),
    }
}

/// The volume group of the newest metadata among the PV's areas. Any damaged area is a
/// reason not to trust the PV: its copy might have been the newest.
fn newest_group(reader: &MetaReader<'_>, label: &label::Label) -> Examined<VolumeGroup> {
    if label.metadata_areas.is_empty() {
        return damaged(
            "this lvm physical volume keeps no copy of its volume group metadata \
             (it lives on other disks only)",
        );
    }
    let mut newest: Option<VolumeGroup> = None;
    let mut empty = false;
    for &area in &label.metadata_areas {
        let text = match mda::read(reader, area)? {
            Content::Text(t) => t,
            Content::Empty => {
                empty = true;
                continue;
            }
            Content::Ignored => continue,
        };
        let parsed = text::parse(&text)
            .map_err(|e| Doubt::Damaged(format!("the lvm metadata text cannot be read ({e})")))?;
        let vg = vg::from_text(&parsed).map_err(Doubt::Damaged)?;
        if newest.as_ref().is_none_or(|n| vg.seqno > n.seqno) {
            newest = Some(vg);
        }
    }
    match newest {
        Some(vg) => Ok(vg),
        None if empty => damaged("this lvm physical volume belongs to no volume group"),
        None => damaged(
            "this lvm physical volume's metadata copies are all marked ignored \
             (the current metadata lives on other disks only)",
        ),
    }
}

/// What the analyser makes of the metadata text `text` for a physical volume of `size` bytes
/// without metadata areas, once for each physical volume the text lists (as if it were this
/// one): the path from text to extents without a label, for fuzz targets. `Err` is the reason
/// the text or that volume cannot be trusted.
pub fn examine_text(
    text: &[u8],
    size: u64,
) -> std::result::Result<Vec<std::result::Result<ContainerUsage, String>>, String> {
    let parsed = text::parse(text).map_err(|e| e.to_string())?;
    let vg = vg::from_text(&parsed)?;
    Ok(vg
        .pvs
        .iter()
        .map(|pv| allocation::container(&vg, &pv.uuid, size, &[]))
        .collect())
}

#[cfg(test)]
mod tests;
