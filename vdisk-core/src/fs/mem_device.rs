//! A disk or volume held in memory, for analysers' tests, fuzz targets and examples.

use std::ops::Range;

use crate::block::{BlockDevice, check_range};
use crate::error::{Error, ErrorKind, Result};

/// A read-only [`BlockDevice`] over bytes in memory. Reads inside [`MemDevice::failing`]
/// fail with [`ErrorKind::Io`], as a bad sector would; every other read inside the size
/// succeeds; reads outside it fail with [`ErrorKind::OutOfRange`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDevice {
    bytes: Vec<u8>,
    sector_size: u32,
    failing: Option<Range<u64>>,
}

impl MemDevice {
    /// A device holding `bytes`, with 512-byte sectors.
    pub fn new(bytes: Vec<u8>) -> MemDevice {
        MemDevice {
            bytes,
            sector_size: 512,
            failing: None,
        }
    }

    /// This device, reporting `sector_size` as its logical sector size.
    #[must_use]
    pub fn with_sector_size(mut self, sector_size: u32) -> MemDevice {
        self.sector_size = sector_size;
        self
    }

    /// This device, whose reads touching `range` fail with an I/O error.
    #[must_use]
    pub fn failing(mut self, range: Range<u64>) -> MemDevice {
        self.failing = Some(range);
        self
    }

    /// The bytes, for tests that change them.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len())?;
        let end = offset + buf.len() as u64;
        if let Some(bad) = &self.failing
            && bad.start < end
            && offset < bad.end
        {
            return Err(Error::new(ErrorKind::Io, "unreadable sector (simulated)")
                .with_offset(offset.max(bad.start)));
        }
        // `check_range` proved offset + len <= size, which is a usize.
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_succeed_outside_are_out_of_range_and_failing_sectors_are_io_errors() {
        let dev = MemDevice::new((0..=255u8).collect()).failing(100..101);
        let mut b = [0u8; 4];
        dev.read_at(&mut b, 10).unwrap();
        assert_eq!(b, [10, 11, 12, 13]);
        assert_eq!(
            dev.read_at(&mut b, 253).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        let e = dev.read_at(&mut b, 98).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Io, Some(100)));
        assert_eq!(dev.write_at(&b, 0).unwrap_err().kind(), ErrorKind::ReadOnly);
    }
}
