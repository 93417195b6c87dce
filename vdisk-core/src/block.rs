//! The guest's view of a disk: what file-system analysers read.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};

/// A random-access virtual disk.
///
/// # Range contract
/// Implementations never panic for any `(offset, len)`. A request not entirely within
/// `0..self.size()` fails with [`ErrorKind::OutOfRange`] and transfers nothing; use
/// [`check_range`] to enforce it. Offsets and lengths are byte-granular: implementations handle
/// requests that are not sector-aligned.
pub trait BlockDevice: Send + Sync + fmt::Debug {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Logical sector size in bytes (512 or 4096) as the guest sees it.
    fn sector_size(&self) -> u32 {
        512
    }

    /// Reads `buf.len()` bytes at virtual `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Writes `buf` at virtual `offset`. Devices opened read-only fail with
    /// [`ErrorKind::ReadOnly`] and change nothing.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let _ = (buf, offset);
        Err(Error::new(ErrorKind::ReadOnly, "device is read-only"))
    }

    /// Makes all completed writes durable.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Fails with [`ErrorKind::OutOfRange`] unless `offset..offset+len` lies within `0..size`.
pub fn check_range(size: u64, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::new(
            ErrorKind::OutOfRange,
            format!("request of {len} bytes is outside the {size}-byte virtual disk"),
        )
        .with_offset(offset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_check_rejects_overflow_and_past_end() {
        assert!(check_range(10, 0, 10).is_ok());
        assert!(check_range(10, 10, 0).is_ok());
        assert_eq!(
            check_range(10, 5, 6).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            check_range(10, u64::MAX, 1).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }
}
