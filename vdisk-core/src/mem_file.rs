//! An in-memory [`HostFile`], for tests, examples and building images before writing them out.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;

/// Largest length an in-memory file may grow to (guards tests against runaway writes).
pub const MEM_FILE_MAX_LEN: u64 = 1 << 34;

/// A growable in-memory file. Clones share the same bytes, so a test can keep a handle and
/// inspect the contents after handing the file to an image.
#[derive(Debug, Clone, Default)]
pub struct MemFile {
    data: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
}

impl MemFile {
    /// An empty, writable file.
    pub fn new() -> MemFile {
        MemFile::default()
    }

    /// A writable file holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> MemFile {
        MemFile {
            data: Arc::new(Mutex::new(bytes)),
            read_only: false,
        }
    }

    /// A handle to the same bytes on which every write fails with [`ErrorKind::ReadOnly`].
    pub fn read_only(&self) -> MemFile {
        MemFile {
            data: Arc::clone(&self.data),
            read_only: true,
        }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves plain bytes behind: still usable.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(ErrorKind::ReadOnly, "file is read-only"));
        }
        Ok(())
    }

    fn end(offset: u64, len: usize) -> Result<usize> {
        offset
            .checked_add(len as u64)
            .filter(|&end| end <= MEM_FILE_MAX_LEN)
            .and_then(|end| usize::try_from(end).ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::NoSpace, "in-memory file limit reached").with_offset(offset)
            })
    }
}

impl HostFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.lock();
        let end = Self::end(offset, buf.len())
            .ok()
            .filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(
                Error::new(ErrorKind::OutOfRange, "read past the end of the file")
                    .with_offset(offset),
            );
        };
        buf.copy_from_slice(&data[end - buf.len()..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        let end = Self::end(offset, buf.len())?;
        let mut data = self.lock();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[end - buf.len()..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.lock().len() as u64)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.check_writable()?;
        let len = Self::end(len, 0)?;
        self.lock().resize(len, 0);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        let mut data = self.lock();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = usize::try_from(offset.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(data.len());
        data[start..end].fill(0);
        Ok(())
    }

    fn is_writable(&self) -> bool {
        !self.read_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_end_fail_without_panicking() {
        let f = MemFile::from_bytes(vec![1, 2, 3]);
        let mut buf = [0u8; 2];
        assert_eq!(
            f.read_at(&mut buf, 2).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            f.read_at(&mut buf, u64::MAX).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        f.read_at(&mut buf, 1).unwrap();
        assert_eq!(buf, [2, 3]);
    }

    #[test]
    fn writes_grow_and_clones_share() {
        let f = MemFile::new();
        let g = f.clone();
        f.write_at(&[9], 4).unwrap();
        assert_eq!(g.to_vec(), vec![0, 0, 0, 0, 9]);
        assert_eq!(
            f.read_only().write_at(&[1], 0).unwrap_err().kind(),
            ErrorKind::ReadOnly
        );
        assert_eq!(
            f.write_at(&[1], u64::MAX).unwrap_err().kind(),
            ErrorKind::NoSpace
        );
    }

    #[test]
    fn copy_within_moves_bytes_and_rejects_overlap() {
        let f = MemFile::from_bytes((0u8..16).collect());
        f.copy_within(0, 8, 4).unwrap();
        assert_eq!(&f.to_vec()[8..12], &[0, 1, 2, 3]);
        assert_eq!(
            f.copy_within(0, 2, 4).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
}
