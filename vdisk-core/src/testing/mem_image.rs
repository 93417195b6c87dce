//! Images held in memory for format crates' tests: opened through a driver, and compacted with
//! the generic compactor as `vdisk compact` does.

use std::ops::Range;

use crate::compact::{CompactOptions, CompactReport, Compactor, GenericCompactor, Mode};
use crate::error::Result;
use crate::format::{FormatDriver, OpenOptions};
use crate::image::DiskImage;
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
