//! A raw volume or disk file on the host as a read-only block device, for analysers' examples,
//! tests and tools that look at a file system in a file (no image format around it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::block::{BlockDevice, check_range};
use crate::error::{Error, ErrorKind, Result};

/// A read-only [`BlockDevice`] over a raw file: byte `i` of the device is byte `i` of the file.
///
/// Contract:
/// - The size is the file's length when it was opened; a file that shrinks afterwards makes
///   reads past its new end fail with [`ErrorKind::OutOfRange`], never return short data.
/// - Reads are positional (no shared cursor is moved on unix), so the device may be read from
///   several threads at once; a request outside `0..size` fails with
///   [`ErrorKind::OutOfRange`] and reads nothing, as [`BlockDevice`] requires.
/// - Writes fail with [`ErrorKind::ReadOnly`]: the file is opened read-only.
/// - [`FileDevice::bytes_read`] counts the bytes of every successful read, so a test or a tool
///   can tell how much of a volume an analyser read.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    sector_size: u32,
    read: AtomicU64,
}

impl FileDevice {
    /// Opens `path` read-only, with 512-byte sectors.
    pub fn open(path: &Path) -> Result<FileDevice> {
        let file = File::open(path).map_err(|e| Error::io(e, "cannot open").with_path(path))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(e, "cannot read file metadata").with_path(path))?
            .len();
        Ok(FileDevice {
            file,
            path: path.to_path_buf(),
            size,
            sector_size: 512,
            read: AtomicU64::new(0),
        })
    }

    /// This device, reporting `sector_size` as its logical sector size.
    #[must_use]
    pub fn with_sector_size(mut self, sector_size: u32) -> FileDevice {
        self.sector_size = sector_size;
        self
    }

    /// Bytes read successfully so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        read_exact_at(&self.file, buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(ErrorKind::OutOfRange, "read past the end of the file")
            } else {
                Error::io(e, "read failed")
            }
            .with_path(&self.path)
            .with_offset(offset)
        })?;
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// `seek_read` moves the handle's cursor, but every read names its offset, so reads stay
/// independent of one another.
#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_positionally_counts_bytes_and_refuses_writes_and_reads_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume.raw");
        std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let dev = FileDevice::open(&path).unwrap().with_sector_size(4096);
        assert_eq!((dev.size(), dev.sector_size()), (256, 4096));
        let mut b = [0u8; 4];
        dev.read_at(&mut b, 250).unwrap();
        assert_eq!(b, [250, 251, 252, 253]);
        dev.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [0, 1, 2, 3]);
        assert_eq!(dev.bytes_read(), 8);
        let e = dev.read_at(&mut b, 253).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
        assert_eq!(dev.bytes_read(), 8, "a refused read counts nothing");
        assert_eq!(dev.write_at(&b, 0).unwrap_err().kind(), ErrorKind::ReadOnly);
        assert_eq!(std::fs::read(&path).unwrap()[..4], [0, 1, 2, 3]);
    }

    #[test]
    fn a_file_that_shrank_after_opening_fails_with_out_of_range_not_short_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume.raw");
        std::fs::write(&path, vec![7u8; 1024]).unwrap();
        let dev = FileDevice::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let mut b = [0u8; 64];
        let e = dev.read_at(&mut b, 512).unwrap_err();
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::OutOfRange, Some(512)),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.raw");
        let e = FileDevice::open(&path).unwrap_err();
        assert!(e.to_string().contains("absent.raw"), "{e}");
    }
}
