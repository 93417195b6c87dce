//! A volume: a window onto one or more byte ranges of a disk, seen as a device of its own.
//!
//! A partition is one range of the disk. A volume inside a container (an LVM logical volume
//! inside a physical volume) is a list of segments: the volume's bytes `0..len` are the
//! segments' disk ranges one after the other.
//!
//! ```text
//!  volume   0 ─────────── a ───────────────── b ──── len
//!           │ segment 0   │ segment 1         │ seg 2 │
//!  disk     ..[d0 .. d0+a)....[d1 .. d1+b-a)..[d2 ..)..   (any order, never overlapping)
//! ```

use std::ops::Range;

use crate::block::{BlockDevice, check_range};
use crate::error::{Error, ErrorKind, Result};

/// Most segments a volume may have (an LVM logical volume of 65,536 separate extents).
pub const MAX_SEGMENTS: usize = 1 << 16;

/// One piece of a segmented volume: volume bytes `volume_offset..volume_offset + disk.len()`
/// are the disk bytes `disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Where the segment starts in the volume.
    pub volume_offset: u64,
    /// The disk bytes it holds (non-empty).
    pub disk: Range<u64>,
}

/// A read-only [`BlockDevice`] over segments of another device: offset 0 is the first
/// segment's first byte. File-system analysers read partitions and inner volumes through it.
///
/// Reads outside `0..size()` fail with [`ErrorKind::OutOfRange`] and never reach the bytes of
/// the disk around the volume; a read that spans segments is split between them; writes fail
/// with [`ErrorKind::ReadOnly`].
#[derive(Debug, Clone)]
pub struct VolumeView<'a> {
    disk: &'a dyn BlockDevice,
    /// Sorted by `volume_offset`, contiguous from 0.
    segments: Vec<Segment>,
    len: u64,
}

impl<'a> VolumeView<'a> {
    /// The volume at `range` of `disk`. Fails with [`ErrorKind::OutOfRange`] if the range is
    /// empty, reversed or not within the disk.
    pub fn new(disk: &'a dyn BlockDevice, range: Range<u64>) -> Result<VolumeView<'a>> {
        VolumeView::segmented(disk, std::slice::from_ref(&range))
    }

    /// The volume made of `extents` of `disk`, in volume order: its byte 0 is the first
    /// extent's first byte, the second extent follows the first, and so on. Fails with
    /// [`ErrorKind::OutOfRange`] if there is no extent, one is empty, reversed or not within
    /// the disk, two overlap on the disk (a byte must belong to one place of the volume, or
    /// free space found at one place could destroy data at the other), or there are more than
    /// [`MAX_SEGMENTS`].
    pub fn segmented(disk: &'a dyn BlockDevice, extents: &[Range<u64>]) -> Result<VolumeView<'a>> {
        let bad =
            |what: String, at: u64| Err(Error::new(ErrorKind::OutOfRange, what).with_offset(at));
        if extents.is_empty() || extents.len() > MAX_SEGMENTS {
            return bad(
                format!(
                    "a volume needs 1 to {MAX_SEGMENTS} segments, not {}",
                    extents.len()
                ),
                0,
            );
        }
        let mut segments = Vec::with_capacity(extents.len());
        let mut len = 0u64;
        for r in extents {
            if r.start >= r.end || r.end > disk.size() {
                return bad(
                    format!(
                        "volume {:#x}..{:#x} is not within the {}-byte disk",
                        r.start,
                        r.end,
                        disk.size()
                    ),
                    r.start,
                );
            }
            segments.push(Segment {
                volume_offset: len,
                disk: r.clone(),
            });
            // Cannot overflow: disjoint ranges of a u64-sized disk.
            len += r.end - r.start;
        }
        let mut sorted: Vec<&Range<u64>> = extents.iter().collect();
        sorted.sort_unstable_by_key(|r| r.start);
        if let Some(w) = sorted.windows(2).find(|w| w[1].start < w[0].end) {
            return bad(
                format!(
                    "volume segments {:#x}..{:#x} and {:#x}..{:#x} overlap on the disk",
                    w[0].start, w[0].end, w[1].start, w[1].end
                ),
                w[1].start,
            );
        }
        Ok(VolumeView {
            disk,
            segments,
            len,
        })
    }

    /// Where the volume starts on the disk (its first segment's first byte).
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.disk.start)
    }

    /// The segments, in volume order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The disk ranges holding the volume bytes `r` (clamped to the volume), in volume order;
    /// a range spanning segments gives one piece per segment. Maps a free range found by a
    /// file system in the volume back to the disk.
    pub fn to_disk(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let end = r.end.min(self.len);
        let first = self.segment_at(r.start);
        self.segments[first..]
            .iter()
            .take_while(move |s| s.volume_offset < end)
            .filter_map(move |s| {
                let seg_end = s.volume_offset + (s.disk.end - s.disk.start);
                let a = r.start.max(s.volume_offset);
                let b = end.min(seg_end);
                (a < b).then(|| {
                    s.disk.start + (a - s.volume_offset)..s.disk.start + (b - s.volume_offset)
                })
            })
    }

    /// The index of the segment holding volume offset `at` (the last one if `at` is past the
    /// end).
    fn segment_at(&self, at: u64) -> usize {
        self.segments
            .partition_point(|s| s.volume_offset <= at)
            .saturating_sub(1)
    }
}

impl BlockDevice for VolumeView<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn sector_size(&self) -> u32 {
        self.disk.sector_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.len, offset, buf.len())?;
        let mut done = 0usize;
        for piece in self.to_disk(offset..offset + buf.len() as u64) {
            // Pieces are in volume order and cover the request exactly.
            let n = usize::try_from(piece.end - piece.start).unwrap_or(usize::MAX);
            let Some(chunk) = buf.get_mut(done..done.saturating_add(n)) else {
                break;
            };
            self.disk.read_at(chunk, piece.start)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test disks are small and tests run on 64-bit hosts"
)]
mod tests {
    use super::*;
    use crate::fs::MemDevice;
    use proptest::prelude::*;

    #[test]
    fn a_view_reads_its_range_only_and_never_writes() {
        let disk = MemDevice::new((0..=255u8).collect());
        let v = VolumeView::new(&disk, 10..20).unwrap();
        assert_eq!(v.size(), 10);
        let mut b = [0u8; 3];
        v.read_at(&mut b, 7).unwrap();
        assert_eq!(b, [17, 18, 19]);
        assert_eq!(
            v.read_at(&mut b, 8).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            v.read_at(&mut b, u64::MAX).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(v.write_at(&b, 0).unwrap_err().kind(), ErrorKind::ReadOnly);
        assert!(VolumeView::new(&disk, 250..257).is_err());
        assert!(VolumeView::new(&disk, 5..5).is_err());
    }

    #[test]
    fn segments_that_overlap_on_the_disk_or_leave_it_are_refused() {
        let disk = MemDevice::new(vec![0; 256]);
        let refused = |e: &[Range<u64>]| {
            VolumeView::segmented(&disk, e)
                .map(|_| ())
                .unwrap_err()
                .kind()
                == ErrorKind::OutOfRange
        };
        assert!(refused(&[]));
        assert!(refused(&[0..10, 5..20]));
        assert!(refused(&[100..110, 0..101]));
        assert!(refused(&[0..10, 10..10]));
        assert!(refused(&[0..10, 250..257]));
        assert!(refused(&vec![0..1; MAX_SEGMENTS + 1]));
        assert!(VolumeView::segmented(&disk, &[100..110, 0..100]).is_ok());
    }

    #[test]
    fn a_read_spanning_segments_is_split_and_the_tail_fails_as_out_of_range() {
        let disk = MemDevice::new((0..=255u8).collect());
        let v = VolumeView::segmented(&disk, &[200..204, 10..12, 100..103]).unwrap();
        assert_eq!(v.size(), 9);
        assert_eq!(v.start(), 200);
        let mut b = [0u8; 9];
        v.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [200, 201, 202, 203, 10, 11, 100, 101, 102]);
        let mut b = [0u8; 4];
        v.read_at(&mut b, 3).unwrap();
        assert_eq!(b, [203, 10, 11, 100]);
        assert_eq!(
            v.read_at(&mut b, 6).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        v.read_at(&mut [], 9).unwrap();
        assert_eq!(
            v.to_disk(3..100).collect::<Vec<_>>(),
            vec![203..204, 10..12, 100..103]
        );
        assert_eq!(v.to_disk(5..6).collect::<Vec<_>>(), vec![11..12]);
        assert_eq!(v.to_disk(9..20).count(), 0);
    }

    proptest! {
        /// Any read of a segmented view returns exactly the concatenation of its segments'
        /// bytes at that offset, and `to_disk` maps each volume byte to the disk byte read.
        #[test]
        fn a_segmented_view_reads_the_concatenation_of_its_segments(
            cuts in proptest::collection::btree_set(0u64..4096, 2..16),
            order in proptest::collection::vec(any::<u16>(), 16),
            offset in 0u64..4096,
            len in 0usize..600,
        ) {
            let disk = MemDevice::new((0..4096u32).map(|i| (i * 7 % 251) as u8).collect());
            let cuts: Vec<u64> = cuts.into_iter().collect();
            let mut extents: Vec<Range<u64>> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
            // Shuffle deterministically from `order`.
            let n = extents.len();
            for (i, k) in order.iter().enumerate().take(n) {
                extents.swap(i, usize::from(*k) % n);
            }
            let v = VolumeView::segmented(&disk, &extents).unwrap();
            let model: Vec<u8> = extents
                .iter()
                .flat_map(|r| (r.start..r.end).map(|i| (i * 7 % 251) as u8))
                .collect();
            prop_assert_eq!(v.size(), model.len() as u64);
            let mut buf = vec![0u8; len];
            let got = v.read_at(&mut buf, offset);
            if offset + len as u64 <= v.size() {
                prop_assert!(got.is_ok());
                prop_assert_eq!(&buf[..], &model[offset as usize..offset as usize + len]);
                let mapped: Vec<u8> = v
                    .to_disk(offset..offset + len as u64)
                    .flat_map(|r| (r.start..r.end).map(|i| (i * 7 % 251) as u8))
                    .collect();
                prop_assert_eq!(mapped, buf);
            } else {
                prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::OutOfRange);
            }
        }
    }
}
