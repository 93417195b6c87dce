//! Images held in memory for format crates' tests: opened through a driver, and compacted with
//! the generic compactor as `vdisk compact` does.

use std::ops::Range;

use crate::compact::{CompactOptions, CompactReport, Compactor, GenericCompactor, Mode};
use crate::error::Result;
use crate::format::{CreateSpec, FormatDriver, OpenOptions};
use crate::image::{DiskImage, ImageKind};
use crate::mem_file::MemFile;
use crate::progress::{CancelToken, NoProgress};

/// Opens in-memory `bytes` through `driver`, read-write if `writable`, else read-only.
pub fn open_bytes(
    driver: &dyn FormatDriver,
    bytes: Vec<u8>,
    writable: bool,
) -> Result<Box<dyn DiskImage>> {
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    driver.open(Box::new(MemFile::from_bytes(bytes)), &opts)
}

/// Creates an image of `kind` through `driver` in memory, `size` bytes in blocks of
/// `block_size`; returns the image and a handle to its bytes. Panics if it cannot be created.
pub fn create_in_memory(
    driver: &dyn FormatDriver,
    kind: ImageKind,
    size: u64,
    block_size: u64,
) -> (Box<dyn DiskImage>, MemFile) {
    let mem = MemFile::new();
    let image = driver
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(kind, size).block_size(block_size),
        )
        .expect("create");
    (image, mem)
}

/// Plans and applies a compaction of `image` in `mode` with the [`GenericCompactor`], with
/// `fs_free` as the file system's free space (`None`: none is known).
pub fn compact(
    image: &mut dyn DiskImage,
    mode: Mode,
    fs_free: Option<&[Range<u64>]>,
) -> Result<CompactReport> {
    let c = GenericCompactor;
    let mut opts = CompactOptions::new(mode);
    opts.fs_free = fs_free.map(<[_]>::to_vec);
    let plan = c.plan(image, &opts, &NoProgress, &CancelToken::new())?;
    c.apply(image, &plan, &NoProgress, &CancelToken::new())
}
