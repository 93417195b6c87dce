//! A `Read + Seek` view of a [`BlockDevice`], for parser crates that want a stream (the `ntfs`
//! crate does).
//!
//! The cursor lives only in this adapter, which one analysis owns alone; every read below it is
//! positional (`BlockDevice::read_at`). Reads past the end of the volume are short reads (EOF),
//! which the crate reports as damaged metadata; a failing device read is remembered so the
//! analyser can return it as the device error it is rather than as damage.

use std::io::{self, Read, Seek, SeekFrom};

use crate::block::BlockDevice;
use crate::error::Error;

/// Largest single read passed to the device (the crate asks for whole data runs at once).
const MAX_READ: usize = 4 << 20;

/// `Read + Seek` over a volume; see the module docs.
#[derive(Debug)]
pub struct StreamReader<'a> {
    device: &'a dyn BlockDevice,
    size: u64,
    pos: u64,
    failure: Option<Error>,
    bytes_read: u64,
    budget: u64,
    exhausted: bool,
}

impl<'a> StreamReader<'a> {
    /// A reader at offset 0 of `device` that reads at most `budget` bytes in all: metadata
    /// whose links form a loop then ends in an error instead of a hang.
    pub fn new(device: &'a dyn BlockDevice, budget: u64) -> Self {
        StreamReader {
            device,
            size: device.size(),
            pos: 0,
            failure: None,
            bytes_read: 0,
            budget,
            exhausted: false,
        }
    }

    /// The device's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the read budget ran out.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Takes the first device error seen, if any.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("the volume failed an earlier read"));
        }
        let left = self.size.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = n.min(MAX_READ);
        if n == 0 {
            return Ok(0);
        }
        if self.bytes_read.saturating_add(n as u64) > self.budget {
            self.exhausted = true;
            return Err(io::Error::other("metadata read budget exhausted"));
        }
        match self.device.read_at(&mut buf[..n], self.pos) {
            Ok(()) => {
                self.pos += n as u64;
                self.bytes_read += n as u64;
                Ok(n)
            }
            Err(e) => {
                let at = self.pos;
                self.failure = Some(e.with_offset(at));
                Err(io::Error::other(format!(
                    "reading the volume failed at offset {at:#x}"
                )))
            }
        }
    }
}

impl Seek for StreamReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the volume start")
        })?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::fs::MemDevice;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "tests the adapter's own Seek implementation"
    )]
    fn reads_past_the_end_are_short_and_seek_keeps_position() {
        let dev = MemDevice::new((0u8..10).collect());
        let mut r = StreamReader::new(&dev, 100);
        let mut buf = [0u8; 4];
        r.seek(SeekFrom::Start(8)).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[8, 9]);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        r.seek(SeekFrom::Start(u64::MAX)).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(i64::MAX)).is_err());
        assert!(r.take_failure().is_none());
        assert_eq!(r.bytes_read, 2);
    }

    #[test]
    fn device_errors_are_kept_for_the_caller() {
        let dev = MemDevice::new(vec![0; 10]).failing(0..10);
        let mut r = StreamReader::new(&dev, 100);
        assert!(r.read(&mut [0u8; 4]).is_err());
        let e = r.take_failure().unwrap();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Io, Some(0)));
    }

    #[test]
    fn reads_beyond_the_budget_fail_without_touching_the_device() {
        let dev = MemDevice::new(vec![0; 10]);
        let mut r = StreamReader::new(&dev, 6);
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 4);
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert!(r.exhausted() && r.take_failure().is_none());
    }
}
