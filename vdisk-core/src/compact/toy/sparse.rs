//! An in-memory host file that reports every all-zero sector as a hole, as a host file system
//! that stores no zero sectors would (`SEEK_DATA`/`SEEK_HOLE` at sector granularity): it lets
//! the zero scan skip holes inside a toy block.

use crate::error::Result;
use crate::host_file::HostFile;
use crate::mem_file::MemFile;
use crate::units::SECTOR;
use crate::zero::is_zero;

/// A [`MemFile`] whose zero sectors are holes. Clones share the bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SparseFile(pub MemFile);

impl SparseFile {
    /// Whether the sector holding `offset` is all zeros (past the end: a hole).
    fn zero_sector(&self, offset: u64, len: u64) -> Result<bool> {
        let start = offset / SECTOR * SECTOR;
        let end = (start + SECTOR).min(len);
        if start >= end {
            return Ok(true);
        }
        let mut buf = vec![0u8; (end - start) as usize];
        self.0.read_at(&mut buf, start)?;
        Ok(is_zero(&buf))
    }
}

impl HostFile for SparseFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.0.write_at(buf, offset)
    }
    fn len(&self) -> Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.0.set_len(len)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.0.punch_hole(offset, len)
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        let len = self.0.len()?;
        let mut at = offset;
        while at < len {
            if !self.zero_sector(at, len)? {
                return Ok(Some(at));
            }
            at = (at / SECTOR + 1) * SECTOR;
        }
        Ok(None)
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        let len = self.0.len()?;
        let mut at = offset;
        while at < len && !self.zero_sector(at, len)? {
            at = (at / SECTOR + 1) * SECTOR;
        }
        Ok(at.min(len).max(offset))
    }
    fn is_writable(&self) -> bool {
        true
    }
}
