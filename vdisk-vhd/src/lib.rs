//! # vdisk-vhd
//!
//! The VHD 1.0 backend of vdisk: fixed, dynamic and differencing images (with their parent
//! chains).
//!
//! ```text
//!   DRIVER.probe   "conectix" at 0 (dynamic: Yes); a fixed footer at EOF-512 proving itself
//!                  (checksum, size = file length - 512: Likely), else Maybe (probe)
//!   DRIVER.open ─► check::inspect (footer, dynamic header, whole BAT, block placement; reads
//!        │         only) ─► VhdImage
//!        ▼
//!   DRIVER.open (differencing) ─► locators (W2ru, W2ku, Wi2r, Wi2k, MacX, parent name) ─►
//!        core find_parent (folder policy, depth, cycles) ─► parent VhdImage, unique id checked
//!   VhdImage: BlockDevice   read_at  → block data area (sector bitmap not consulted, as qemu)
//!                                      differencing: bitmap bit set → child, clear → parent
//!                           write_at → in place, or a new block where the footer was:
//!                                      footer at new EOF, sync; block, sync; BAT sector, sync
//!                                      differencing: widened to whole sectors first (parent's
//!                                      bytes at the edges), bits set only for written sectors
//!             DiskImage     block_state from the BAT loaded at open (no I/O)
//!             Compactable   deallocate (BAT sectors, sync) · relocate (copy, sync, BAT, sync)
//!                           · truncate (footer at the new end, sync, shorten, sync)
//!   DRIVER.create  footer copy at 0, header at 512, [W2ru, W2ku locator data], BAT, footer
//!   DRIVER.check   every structural problem, not only the first
//! ```
//!
//! Sizes: the virtual size is the footer's current size (the Hyper-V and Disk2VHD
//! convention) unless the table cannot cover it and the CHS size fits (old Virtual PC images).
//! Blocks are counted by the table, which may have more entries than the size needs (qemu
//! wrote one extra); such blocks are kept but never read.
//!
//! Compaction never changes the footer or header bytes (the unique id children point at in
//! particular); it only rewrites BAT sectors, moves blocks and rewrites the footer at the new
//! end of the file. Parent locator data is metadata: blocks are never moved over it. A
//! differencing block is freed only to read the parent again (VHD has no zero state), which
//! the planner asks for only where the child reads the same as its parent.
#![forbid(unsafe_code)]

mod bat;
mod chain;
mod check;
mod compact;
mod create;
mod footer;
mod format;
mod image;
mod locator;
mod probe;

use vdisk_core::{
    CheckReport, Confidence, CreateSpec, DiskImage, ErrorKind, FormatDriver, HostFile, OpenOptions,
    ParentReference, Problem, Result,
};

pub use image::VhdImage;

/// The VHD format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdDriver;

/// The driver to register: `Registry::new(&[&vdisk_vhd::DRIVER, ...])`.
pub static DRIVER: VhdDriver = VhdDriver;

impl FormatDriver for VhdDriver {
    fn id(&self) -> &'static str {
        "vhd"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["vhd"]
    }

    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        probe::probe(file)
    }

    fn check_spec(&self, spec: &CreateSpec) -> Result<()> {
        create::check_spec(spec)
    }

    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(VhdImage::open_with(file, opts)?))
    }

    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(create::create(file, spec)?))
    }

    fn parent_reference(&self, file: Box<dyn HostFile>) -> Result<Option<ParentReference>> {
        Ok(VhdImage::parent_locators(file)?.map(ParentReference::new))
    }

    fn check_with(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<CheckReport> {
        let mut problems = Vec::new();
        let mut opts = opts.clone();
        opts.writable = false;
        match check::inspect(&*file, &mut problems) {
            Ok(_) => {
                if vdisk_core::first_error(&problems).is_none() {
                    match VhdImage::open_with(file, &opts) {
                        Ok(image) => problems = image.check()?,
                        // The structure is sound; the parent is missing, foreign or wrong.
                        Err(e) => problems.push(Problem::error(
                            match e.path() {
                                Some(p) => format!("{}: {}", p.display(), e.message()),
                                None => e.message().to_string(),
                            },
                            e.offset(),
                        )),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::InvalidImage => {
                problems.push(Problem::error(e.message(), e.offset()));
            }
            Err(e) => return Err(e),
        }
        Ok(CheckReport { problems })
    }
}
