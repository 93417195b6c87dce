//! # vdisk-vdi
//!
//! The VirtualBox VDI backend of vdisk: fixed, dynamic and differencing images (version 1.1,
//! the one VirtualBox and qemu write), written against vdisk-core's contract alone.
//!
//! ```text
//!   DRIVER.probe   "<<< ... >>>" text, signature 0xbeda107f at 0x40 and version 1.1 (Yes);
//!                  the signature alone (Maybe)
//!   DRIVER.open ─► header::inspect (every field bounded by the format and the file length)
//!        │         ─► bmap (whole map, one read; every entry checked) ─► VdiImage
//!        ▼
//!   DRIVER.open (differencing) ─► core find_parent_by_id (the .vdi in the child's folder
//!        │          whose UUID is the child's link; no link followed) ─► parent VdiImage
//!   VdiImage: BlockDevice   read_at  → slot data · zero entry: zeros · free entry: zeros, or
//!                                      the parent's data in a differencing image
//!                           write_at → in place, or a new block in slot blocks_allocated:
//!                                      block, sync; header count, sync; map page, sync
//!             DiskImage     block_state from the map loaded at open (no I/O)
//!             Compactable   deallocate (map pages, sync) · relocate (copy, sync, map, sync)
//!                           · truncate (header count, sync, shorten, sync)
//!   DRIVER.create  header, block map at 0x200, data area from the next 4 KiB
//!   DRIVER.check   every structural problem, not only the first
//! ```
//!
//! Compaction never changes the image's UUIDs (children name their parent by them); it only
//! rewrites block map pages, moves blocks between slots, and lowers the header's count of slots
//! in use once nothing points past it. A differencing image's blocks are freed to read the
//! parent again (the free entry) or to read zeros (the zero entry).
//!
//! `retrim` of a dynamic or differencing image is refused (`Compactable::holes_allowed` is
//! false): it would free blocks where they are, leaving the header's count of slots above the
//! slots in use, which `qemu-img check` counts as a mismatch. The moving modes pack instead.
#![forbid(unsafe_code)]

mod bmap;
mod chain;
mod compact;
mod create;
mod format;
mod header;
mod image;

use vdisk_core::{
    CheckReport, Confidence, CreateSpec, DiskImage, ErrorKind, FormatDriver, HostFile, OpenOptions,
    ParentReference, Problem, Result,
};

pub use image::VdiImage;

/// The VDI format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VdiDriver;

/// The driver to register: `Registry::new(&[&vdisk_vdi::DRIVER, ...])`.
pub static DRIVER: VdiDriver = VdiDriver;

impl FormatDriver for VdiDriver {
    fn id(&self) -> &'static str {
        "vdi"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["vdi"]
    }

    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        header::probe(file)
    }

    fn check_spec(&self, spec: &CreateSpec) -> Result<()> {
        create::check_spec(spec)
    }

    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(VdiImage::open_with(file, opts)?))
    }

    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(create::create(file, spec)?))
    }

    fn parent_reference(&self, file: Box<dyn HostFile>) -> Result<Option<ParentReference>> {
        VdiImage::reference(&*file)
    }

    /// The image UUID, which a differencing VDI names its parent by.
    fn image_id(&self, file: &dyn HostFile) -> Result<Option<Vec<u8>>> {
        chain::image_id(file)
    }

    /// Structure first (header, then every map entry, all reported); then, if that is sound,
    /// the parent link of a differencing image.
    fn check_with(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<CheckReport> {
        let mut problems = Vec::new();
        let mut opts = opts.clone();
        opts.writable = false;
        let structure = header::inspect(&*file).and_then(|(_, layout)| {
            let map = bmap::BlockMap::load(&*file, &layout)?;
            map.validate(&layout, file.len()?, &mut problems);
            Ok(())
        });
        match structure {
            Ok(()) if vdisk_core::first_error(&problems).is_none() => {
                match VdiImage::open_with(file, &opts) {
                    Ok(image) => problems = image.check()?,
                    Err(e) if e.kind() == ErrorKind::Io => return Err(e),
                    Err(e) => problems.push(Problem::error(
                        match e.path() {
                            Some(p) => format!("{}: {}", p.display(), e.message()),
                            None => e.message().to_string(),
                        },
                        e.offset(),
                    )),
                }
            }
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::InvalidImage | ErrorKind::Unsupported) => {
                problems.push(Problem::error(e.message(), e.offset()));
            }
            Err(e) => return Err(e),
        }
        Ok(CheckReport { problems })
    }
}
