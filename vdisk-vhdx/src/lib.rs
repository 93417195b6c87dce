//! # vdisk-vhdx
//!
//! The VHDX backend of vdisk ([MS-VHDX] v1.0): fixed, dynamic and differencing images;
//! creating, reading, guest writes, checking and compacting.
//!
//! ```text
//!   DRIVER.probe   "vhdxfile" at 0
//!   DRIVER.open ─► header   file identifier; both headers (CRC-32C); current = valid one with
//!        │                  the higher sequence number (identical equal copies accepted)
//!        │      ─► log      LogGuid != 0: find the active sequence, replay it into an
//!        │                  in-memory Overlay; file shorter than the FlushedFileOffset →
//!        │                  refused as truncated
//!        │      ─► region   both region tables through the overlay; BAT + metadata regions
//!        │      ─► metadata file parameters, sizes, disk id; unknown required item → refused;
//!        │                  HasParent: the parent locator (locator)
//!        │      ─► bat      the whole table in one read; every entry checked against the file
//!        │                  (differencing: sector bitmap blocks and PARTIALLY_PRESENT too)
//!        │   writable only, once all of that passed:
//!        │      ─► replay   the log's entries onto the file, sync; header update (new
//!        │                  FileWriteGuid, LogGuid zero); parse again from the file
//!        │   differencing:
//!        │      ─► chain    parent found by vdisk_core::parent::find_parent, opened read-only
//!        │                  (recursively), DataWriteGuid = parent_linkage, same size
//!        ▼
//!   VhdxImage: BlockDevice  read_at → per block: FULLY_PRESENT reads host bytes through the
//!                                     HostView (file + overlay); NOT_PRESENT in a child reads
//!                                     the parent; PARTIALLY_PRESENT per sector (bitmap);
//!                                     other states read zeros
//!              DiskImage    block_state from the BAT loaded at open (no I/O)
//!              Compactable  (dynamic, differencing) BAT changes through the log (log_write,
//!                           session):
//!                           entry, sync, header LogGuid set, sync, pages in place, sync,
//!                           LogGuid zero, sync; payload moves are copied and synced before
//!                           the BAT points at them; truncation logs the new size first
//!              write_at     (writable) FULLY_PRESENT in place; other states get a new block at
//!                           the 1 MiB-aligned end, synced, then the BAT entry through the log
//!   DRIVER.create  header section, 1 MiB log, metadata, BAT (fixed: every block present;
//!                  differencing: parent locator, a sector bitmap per chunk)
//!   DRIVER.check   every problem found by a lenient pass, not only the first
//! ```
//!
//! Every metadata and payload read goes through the host view (file + overlay) so a read-only
//! open of an image with a pending log never returns data the log superseded, and never
//! writes. Header updates follow the two-header protocol (the non-current copy is written with
//! the sequence number plus one, and synced). The FileWriteGuid changes once per writing
//! session, before its first write; the DataWriteGuid changes once per session before the
//! first guest write, and when a compaction is about to drop content that may not read the
//! same afterwards (`begin_content_change`); block moves and zero or same-as-parent reclaim
//! keep it, so children stay valid.
#![forbid(unsafe_code)]

mod bat;
mod chain;
mod compact;
// The image comes from qemu-img and qemu-io, which run on the Linux side only: under Wine a
// Windows test cannot start them. The cuts themselves run on an in-memory file (no host I/O),
// so the Linux run covers them for every host.
#[cfg(all(test, unix))]
mod crash_tests;
mod create;
mod format;
mod header;
mod image;
mod locator;
mod log;
mod log_bounds;
mod log_write;
mod metadata;
mod overlay;
mod region;
mod session;
mod write;

use vdisk_core::{
    CheckReport, Confidence, CreateSpec, DiskImage, ErrorKind, FormatDriver, HostFile, OpenOptions,
    ParentReference, Problem, Result, Severity,
};

pub use image::VhdxImage;

use crate::format::FILE_SIGNATURE;
use crate::image::inspect;

/// The VHDX format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdxDriver;

/// The driver to register: `Registry::new(&[&vdisk_vhdx::DRIVER, ...])`.
pub static DRIVER: VhdxDriver = VhdxDriver;

impl FormatDriver for VhdxDriver {
    fn id(&self) -> &'static str {
        "vhdx"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["vhdx", "avhdx"]
    }

    /// "vhdxfile" at offset 0, the start of the header section the format owns (MS-VHDX
    /// 2.2.1): [`Confidence::Yes`]. Nothing past it is looked at: the rest of the file, its end
    /// in particular, may be guest data.
    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        let mut sig = [0u8; 8];
        if file.len()? < 8 {
            return Ok(Confidence::No);
        }
        file.read_at(&mut sig, 0)?;
        Ok(if sig == FILE_SIGNATURE {
            Confidence::Yes
        } else {
            Confidence::No
        })
    }

    fn check_spec(&self, spec: &CreateSpec) -> Result<()> {
        create::check_spec(spec)
    }

    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(VhdxImage::open_with(file, opts)?))
    }

    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(create::create(file, spec)?))
    }

    fn parent_reference(&self, file: Box<dyn HostFile>) -> Result<Option<ParentReference>> {
        Ok(VhdxImage::parent_locators(file)?.map(ParentReference::new))
    }

    /// The image's own structure only: its parent is not opened (`opts` is not needed).
    fn check_with(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<CheckReport> {
        let _ = opts;
        let mut problems = Vec::new();
        match inspect(file, &mut problems) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::InvalidImage => {
                // Errors already listed (the parse stops at them) are not repeated.
                let listed = problems
                    .iter()
                    .any(|p| p.severity == Severity::Error && p.offset == e.offset());
                if !listed {
                    problems.push(Problem::error(e.message(), e.offset()));
                }
            }
            Err(e) => return Err(e),
        }
        Ok(CheckReport { problems })
    }
}
