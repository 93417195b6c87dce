//! Which host bytes belong to whom: the proof the compactor asks for before it punches, frees or
//! reuses a host range, and the one place host space is given back.
//!
//! A range may be punched out only if it is one block's host space and nothing else's: not a
//! byte of the format's metadata, not a byte of any other block (live or trimmed), and inside
//! the file. Formats validate this at open; the compactor checks it again over the whole
//! allocation map (defence in depth), so one format's oversight cannot make it destroy data.

use std::ops::Range;

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::image::{DiskImage, ImageKind};
use crate::units::BlockIndex;

/// Every block that holds host space, with its host range: the footprint for images with a
/// block layout, the visible part of the block for fixed images.
pub(crate) fn owned_ranges(
    image: &dyn DiskImage,
    footprint: Option<u64>,
) -> Result<Vec<(BlockIndex, Range<u64>)>> {
    let (bs, size) = (image.block_size(), image.size());
    let fixed = image.kind() == ImageKind::Fixed;
    let mut owned = Vec::new();
    for i in 0..image.block_count() {
        let block = BlockIndex(i);
        let Some(host) = image.block_state(block)?.host() else {
            continue;
        };
        let len = match footprint {
            Some(f) if !fixed => f,
            _ => bs.min(size.saturating_sub(i.saturating_mul(bs))),
        };
        let end = host.0.checked_add(len).ok_or_else(|| {
            Error::invalid(
                format!("block {block} lies past any possible file end"),
                host.0,
            )
        })?;
        owned.push((block, host.0..end));
    }
    Ok(owned)
}

/// Refuses (nothing written: it runs while planning and again before applying) unless every
/// range in `owned` lies inside the `file_len`-byte file, clear of `metadata` and of every
/// other block's range. The format's open should already have refused such an image; this is
/// the compactor's own proof that a range it punches or reuses belongs to that block alone.
pub(crate) fn check_exclusive(
    metadata: &[Range<u64>],
    owned: &[(BlockIndex, Range<u64>)],
    file_len: u64,
) -> Result<()> {
    let mut all: Vec<(&Range<u64>, Option<BlockIndex>)> = metadata
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| (r, None))
        .chain(owned.iter().map(|(b, r)| (r, Some(*b))))
        .collect();
    all.sort_unstable_by_key(|(r, _)| (r.start, r.end));
    let what = |b: Option<BlockIndex>| b.map_or("metadata".to_string(), |b| format!("block {b}"));
    // The furthest-reaching range so far: a long range may overlap several later ones.
    let mut reach: Option<(&Range<u64>, Option<BlockIndex>)> = None;
    for &(r, owner) in &all {
        if let Some((prev, prev_owner)) = reach
            && r.start < prev.end
            && (owner.is_some() || prev_owner.is_some())
        {
            return Err(Error::invalid(
                format!(
                    "the host space of {} ({:#x}..{:#x}) overlaps {} ({:#x}..{:#x}); the \
                     image is inconsistent and nothing was changed",
                    what(owner),
                    r.start,
                    r.end,
                    what(prev_owner),
                    prev.start,
                    prev.end
                ),
                r.start,
            ));
        }
        if reach.is_none_or(|(p, _)| r.end > p.end) {
            reach = Some((r, owner));
        }
    }
    if let Some((b, r)) = owned.iter().find(|(_, r)| r.end > file_len) {
        return Err(Error::invalid(
            format!(
                "block {b} at {:#x} ends past the end of the {file_len}-byte file; nothing was \
                 changed",
                r.start
            ),
            r.start,
        ));
    }
    Ok(())
}

/// Gives host space back: punches each range out of `file`. Only for ranges that
/// [`check_exclusive`] proved belong to one block and that the tables durably no longer point
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

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[(u64, Range<u64>)]) -> Vec<(BlockIndex, Range<u64>)> {
        v.iter().map(|(b, r)| (BlockIndex(*b), r.clone())).collect()
    }

    #[test]
    fn disjoint_blocks_clear_of_metadata_are_exclusive() {
        let meta = vec![0..100, 100..200];
        check_exclusive(&meta, &owned(&[(0, 200..300), (1, 300..400)]), 400).unwrap();
    }

    #[test]
    fn a_block_over_metadata_or_another_block_or_past_the_end_is_refused() {
        let meta = vec![0..100, 500..600];
        for (blocks, len) in [
            (owned(&[(0, 50..150)]), 1000),
            (owned(&[(0, 450..550)]), 1000),
            (owned(&[(0, 200..300), (1, 250..350)]), 1000),
            // A long range reaching over a later, shorter one.
            (owned(&[(0, 100..450), (1, 300..320)]), 1000),
            (owned(&[(0, 900..1100)]), 1000),
        ] {
            let err = check_exclusive(&meta, &blocks, len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidImage, "{blocks:?}: {err}");
            assert!(err.to_string().contains("nothing was changed"), "{err}");
        }
    }

    #[test]
    fn overlapping_metadata_ranges_alone_are_not_the_blocks_concern() {
        check_exclusive(&[0..100, 50..150], &owned(&[(0, 150..250)]), 250).unwrap();
    }
}
