//! A volume: a window onto a byte range of a disk, seen as a device of its own.

use std::ops::Range;

use crate::block::{BlockDevice, check_range};
use crate::error::{Error, ErrorKind, Result};

/// A read-only [`BlockDevice`] over `range` of another device: offset 0 is the range's first
/// byte. File-system analysers read partitions through it.
///
/// Reads outside `0..range.len()` fail with [`ErrorKind::OutOfRange`] and never reach the
/// bytes of the disk around the volume; writes fail with [`ErrorKind::ReadOnly`].
#[derive(Debug, Clone, Copy)]
pub struct VolumeView<'a> {
    disk: &'a dyn BlockDevice,
    start: u64,
    len: u64,
}

impl<'a> VolumeView<'a> {
    /// The volume at `range` of `disk`. Fails with [`ErrorKind::OutOfRange`] if the range is
    /// empty, reversed or not within the disk.
    pub fn new(disk: &'a dyn BlockDevice, range: Range<u64>) -> Result<VolumeView<'a>> {
        if range.start >= range.end || range.end > disk.size() {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "volume {:#x}..{:#x} is not within the {}-byte disk",
                    range.start,
                    range.end,
                    disk.size()
                ),
            )
            .with_offset(range.start));
        }
        Ok(VolumeView {
            disk,
            start: range.start,
            len: range.end - range.start,
        })
    }

    /// Where the volume starts on the disk.
    pub fn start(&self) -> u64 {
        self.start
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
        self.disk.read_at(buf, self.start + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemDevice;

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
}
