//! # vdisk-qcow2
//!
//! qemu's qcow2 format (versions 2 and 3) for vdisk: any cluster size from 512 bytes to
//! 2 MiB, refcount widths of 1 to 64 bits, zero clusters, compressed clusters (zlib),
//! internal snapshots and backing files of any registered format, written against
//! vdisk-core's contract alone.
//!
//! ```text
//!   DRIVER.probe   "QFI\xfb", version 2 or 3, cluster and refcount sizes in range (Yes);
//!                  the magic alone (Maybe)
//!   DRIVER.open ─► header::inspect (fields bounded; unhandled features refused)
//!        │         ─► l1 ─► every allocated l2 table (entries decoded and bounded)
//!        │         ─► refcount table ─► snapshot table
//!        ▼         ─► backing file through core's parent gate (chain)
//!   Qcow2Image: BlockDevice  read_at → standard: host data · zero: zeros · compressed:
//!                                      inflate · unallocated: zeros or the backing image
//!               DiskImage    block_state from the tables loaded at open (no I/O)
//!                            guest_extents: compressed and snapshot-shared clusters opaque
//!                            check: every refcount rebuilt from every reference
//!               host_map     what every host cluster holds (space; compressed and
//!                            snapshot-shared clusters fixed)
//!   DRIVER.create  header, refcount table and blocks, l1 table (like qemu-img create)
//!   DRIVER.check   open (every active table checked), then check::check
//! ```
//!
//! Memory is bounded: the active L2 tables are loaded whole at open, at most 2^25 entries
//! (256 MiB); `check` rebuilds refcounts for at most 2^25 host clusters (192 MiB); every
//! table read is bounded by the format's limits (L1 32 MiB, refcount table 8 MiB, snapshot
//! table 64 MiB) and by the file's length.
//! Refused with their reason, the file untouched: encryption, external data files,
//! extended L2 entries, zstd compression, unknown incompatible features, and images whose
//! dirty or corrupt bit is set (`qemu-img check -r all` repairs them first).
//!
//! Compaction ([`vdisk_core::Compactable`], in `compact`): data clusters freed and moved,
//! the L1 table, refcount table, refcount blocks and L2 tables moved down, in qcow2's crash
//! order (refcounts raised before use, lowered after); compressed and snapshot-shared
//! clusters pinned where they are; refused while persistent dirty bitmaps exist.
#![forbid(unsafe_code)]

mod bitmap;
mod chain;
mod check;
mod compact;
mod compressed;
mod create;
mod extension;
mod format;
mod header;
mod image;
mod info;
mod l1;
mod l2;
mod refcount;
mod snapshot;
mod space;

use vdisk_core::{
    CheckReport, Confidence, CreateSpec, DiskImage, ErrorKind, FormatDriver, HostFile, OpenOptions,
    ParentReference, Problem, Result,
};

pub use image::Qcow2Image;

/// The qcow2 format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Qcow2Driver;

/// The driver to register: `Registry::new(&[&vdisk_qcow2::DRIVER, ...])`.
pub static DRIVER: Qcow2Driver = Qcow2Driver;

impl FormatDriver for Qcow2Driver {
    fn id(&self) -> &'static str {
        "qcow2"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["qcow2", "qcow"]
    }

    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        header::probe(file)
    }

    fn check_spec(&self, spec: &CreateSpec) -> Result<()> {
        create::check_spec(spec)
    }

    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(create::create(file, spec)?))
    }

    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        Ok(Box::new(Qcow2Image::open_with(file, opts)?))
    }

    fn parent_reference(&self, file: Box<dyn HostFile>) -> Result<Option<ParentReference>> {
        chain::parent_reference(&*file)
    }

    /// Opens the image (which checks the header and every active table), then rebuilds the
    /// refcounts; an open that fails on damage is reported as a problem.
    fn check_with(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<CheckReport> {
        let mut opts = opts.clone();
        opts.writable = false;
        let problems = match Qcow2Image::open_with(file, &opts) {
            Ok(image) => image.check()?,
            Err(e) if e.kind() == ErrorKind::Io => return Err(e),
            Err(e) => vec![Problem::error(
                match e.path() {
                    Some(p) => format!("{}: {}", p.display(), e.message()),
                    None => e.message().to_string(),
                },
                e.offset(),
            )],
        };
        Ok(CheckReport { problems })
    }
}
