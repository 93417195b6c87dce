//! Which host bytes belong to whom: the proof the compactor asks for before it punches, frees or
//! reuses a host range, and the one place host space is given back.
//!
//! A range may be punched out only if it is one block's host space and nothing else's: not a
//! byte of the format's metadata, not a byte of any other block (live or trimmed), and inside
//! the file. Formats validate this at open; the compactor checks it again over the whole
//! host space map and the allocation map (defence in depth), so one format's oversight cannot
//! make it destroy data.

use std::ops::Range;

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::image::DiskImage;
use crate::space::{HostSpaceMap, block_ranges};
use crate::units::BlockIndex;

/// Every block that holds host space, with its host range (the footprint, or a fixed image's
/// visible bytes), from the allocation map; refused unless the format's host space map
/// ([`DiskImage::host_space`], whose construction proved its blocks exclusive and inside the
/// file) names exactly these ranges. The map is the format's word, the allocation map the
/// engine's own reading of it: a format whose two answers disagree is not trusted.
pub(crate) fn owned_ranges(
    image: &dyn DiskImage,
    footprint: Option<u64>,
    space: &HostSpaceMap,
) -> Result<Vec<(BlockIndex, Range<u64>)>> {
    let owned = block_ranges(image, footprint.unwrap_or_else(|| image.block_size()))?;
    if space.blocks() != owned {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "the {} driver's host space map does not place the blocks where its allocation \
                 map does; nothing was changed",
                image.format()
            ),
        ));
    }
    Ok(owned)
}

/// Gives host space back: punches each range out of `file`. Only for ranges that
/// [`owned_ranges`] proved belong to one block and that the tables durably no longer point
/// at. A host that cannot punch ([`ErrorKind::Unsupported`], or a policy that keeps files
/// non-sparse) keeps the bytes: the file is still valid, and the final truncation frees what
/// lies past the new end. Returns the bytes punched.
pub(crate) fn give_back(file: &dyn HostFile, ranges: &[Range<u64>]) -> Result<u64> {
    if !file.punches_holes() {
        // Windows: never asked, so the file never gains the sparse attribute.
        return Ok(0);
    }
    // Adjacent ranges (neighbouring blocks freed together) are given back in one call each: a
    // disk of small blocks would otherwise cost one system call per block. Only the union of
    // the ranges given is punched.
    let mut merged = ranges.to_vec();
    crate::fs::coalesce(&mut merged);
    let mut punched = 0;
    for r in &merged {
        match file.punch_hole(r.start, r.end - r.start) {
            Ok(()) => punched += r.end - r.start,
            Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(punched),
            Err(e) => return Err(e),
        }
    }
    Ok(punched)
}
