//! The host file as the image sees it after log replay: the file's bytes, with the pages and
//! zero ranges of the replayed log laid over them, in memory only.
//!
//! A read-only open never writes the file, yet must never return data the log has superseded;
//! every metadata and payload read therefore goes through [`HostView::read_at`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vdisk_core::{Error, ErrorKind, HostFile, Result};

/// What the log put at a range of the file.
#[derive(Debug, Clone)]
enum Patch {
    /// Zeros up to `end`.
    Zero {
        /// Exclusive end offset.
        end: u64,
    },
    /// These bytes (their length gives the end).
    Data(Vec<u8>),
}

impl Patch {
    fn end(&self, start: u64) -> u64 {
        match self {
            Patch::Zero { end } => *end,
            Patch::Data(d) => start + d.len() as u64,
        }
    }

    /// The part of the patch covering `from..to` (which lies inside it).
    fn slice(&self, start: u64, from: u64, to: u64) -> Patch {
        match self {
            Patch::Zero { .. } => Patch::Zero { end: to },
            Patch::Data(d) => {
                let a = usize::try_from(from - start).unwrap_or(0);
                let b = usize::try_from(to - start).unwrap_or(0);
                Patch::Data(d.get(a..b).unwrap_or(&[]).to_vec())
            }
        }
    }
}

/// Disjoint patches keyed by start offset; later writes replace earlier ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    patches: BTreeMap<u64, Patch>,
}

impl Overlay {
    /// An overlay with nothing in it.
    pub(crate) fn new() -> Overlay {
        Overlay::default()
    }

    /// Whether nothing was replayed.
    pub(crate) fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// The end of the last patch, or 0.
    pub(crate) fn end(&self) -> u64 {
        self.patches
            .iter()
            .next_back()
            .map_or(0, |(&s, p)| p.end(s))
    }

    /// Lays `bytes` at `offset` over everything before.
    pub(crate) fn write(&mut self, offset: u64, bytes: Vec<u8>) {
        let end = offset.saturating_add(bytes.len() as u64);
        self.insert(offset, end, Patch::Data(bytes));
    }

    /// Lays zeros over `offset..end`.
    pub(crate) fn zero(&mut self, offset: u64, end: u64) {
        self.insert(offset, end, Patch::Zero { end });
    }

    fn insert(&mut self, start: u64, end: u64, patch: Patch) {
        if start >= end {
            return;
        }
        let overlapping: Vec<u64> = self
            .patches
            .range(..end)
            .rev()
            .take_while(|(s, p)| p.end(**s) > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let Some(old) = self.patches.remove(&s) else {
                continue;
            };
            let old_end = old.end(s);
            if s < start {
                self.patches.insert(s, old.slice(s, s, start));
            }
            if old_end > end {
                self.patches.insert(end, old.slice(s, end, old_end));
            }
        }
        self.patches.insert(start, patch);
    }

    /// Applies the patches to `buf`, which holds the file's bytes at `offset`.
    fn apply(&self, buf: &mut [u8], offset: u64) {
        let end = offset + buf.len() as u64;
        let first = self
            .patches
            .range(..=offset)
            .next_back()
            .map_or(offset, |(s, _)| *s);
        for (&s, patch) in self.patches.range(first..end) {
            let pe = patch.end(s);
            if pe <= offset {
                continue;
            }
            let from = s.max(offset);
            let to = pe.min(end);
            let dst = &mut buf[index(from - offset)..index(to - offset)];
            match patch {
                Patch::Zero { .. } => dst.fill(0),
                Patch::Data(d) => {
                    let a = index(from - s);
                    dst.copy_from_slice(&d[a..a + dst.len()]);
                }
            }
        }
    }
}

/// A distance already bounded by a buffer length, as an index.
fn index(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The host file plus the replayed log.
#[derive(Debug)]
pub(crate) struct HostView {
    file: Box<dyn HostFile>,
    overlay: Overlay,
    /// The overlay is still laid over the file (false once the log was replayed onto it).
    overlay_live: AtomicBool,
    /// Length of the file on the host (atomic: guest writes grow the file through `&self`).
    file_len: AtomicU64,
    /// Length the file has once the log is applied (at least `file_len`).
    len: AtomicU64,
}

impl HostView {
    /// The file as it is, with no log applied.
    pub(crate) fn new(file: Box<dyn HostFile>) -> Result<HostView> {
        let file_len = file.len()?;
        Ok(HostView {
            file,
            overlay: Overlay::new(),
            overlay_live: AtomicBool::new(false),
            file_len: AtomicU64::new(file_len),
            len: AtomicU64::new(file_len),
        })
    }

    /// Lays a replayed log over the file; `min_len` is the file size the log asks for.
    pub(crate) fn set_overlay(&mut self, overlay: Overlay, min_len: u64) {
        let len = self.file_len().max(min_len).max(overlay.end());
        self.len.store(len, Ordering::SeqCst);
        self.overlay = overlay;
        self.overlay_live.store(true, Ordering::SeqCst);
    }

    /// Whether a replayed log is laid over the file.
    pub(crate) fn has_overlay(&self) -> bool {
        self.overlay_live.load(Ordering::SeqCst)
    }

    /// Stops laying the overlay over the file, once the log was replayed onto it and the file
    /// (now `file_len` bytes) reads what the overlay showed. Later writes to the file are then
    /// read back as written.
    pub(crate) fn drop_overlay(&self, file_len: u64) {
        self.file_len.store(file_len, Ordering::SeqCst);
        self.len.store(file_len, Ordering::SeqCst);
        self.overlay_live.store(false, Ordering::SeqCst);
    }

    /// The underlying host file.
    pub(crate) fn file(&self) -> &dyn HostFile {
        &*self.file
    }

    /// Records that the host file is now `len` bytes long (writable opens, once their log was
    /// replayed, after shrinking or growing the file).
    pub(crate) fn set_file_len(&self, len: u64) {
        self.file_len.store(len, Ordering::SeqCst);
        let overlay_end = if self.has_overlay() {
            self.overlay.end()
        } else {
            0
        };
        self.len.store(len.max(overlay_end), Ordering::SeqCst);
    }

    /// Length of the file with the log applied.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    /// Length of the file on the host.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::SeqCst)
    }

    /// Reads `buf.len()` bytes at `offset` as the file reads once the log is applied. Fails
    /// with [`ErrorKind::OutOfRange`] past that length.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::OutOfRange,
                    format!("read of {} bytes past the end of the file", buf.len()),
                )
                .with_offset(offset)
            })?;
        let on_disk = end.min(self.file_len()).saturating_sub(offset);
        let on_disk = usize::try_from(on_disk).unwrap_or(buf.len()).min(buf.len());
        let (head, tail) = buf.split_at_mut(on_disk);
        if !head.is_empty() {
            self.file.read_at(head, offset)?;
        }
        tail.fill(0);
        if self.has_overlay() && !self.overlay.is_empty() {
            self.overlay.apply(buf, offset);
        }
        Ok(())
    }
}

/// The host file as the image sees it, for the engine ([`vdisk_core::DiskImage::host_file`]):
/// reads, length and the hole map include a replayed log still held in memory, so that
/// nothing (the zero scan's hole skipping above all) takes a page the log writes for a hole.
/// Writes go to the file, and only once the log is on it: a write before that would be read
/// back wrongly, so it is refused as a bug.
impl HostFile for HostView {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        HostView::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.settled()?;
        self.file.write_at(buf, offset)
    }

    fn len(&self) -> Result<u64> {
        Ok(HostView::len(self))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.settled()?;
        self.file.set_len(len)?;
        self.set_file_len(len);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.settled()?;
        self.file.punch_hole(offset, len)
    }

    fn punches_holes(&self) -> bool {
        self.file.punches_holes()
    }

    fn copy_within(&self, from: u64, to: u64, len: u64) -> Result<()> {
        self.settled()?;
        self.file.copy_within(from, to, len)
    }

    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        if self.has_overlay() && !self.overlay.is_empty() {
            // Conservative: with a log laid over the file, every byte may hold data.
            return Ok((offset < HostView::len(self)).then_some(offset));
        }
        self.file.next_data(offset)
    }

    fn next_hole(&self, offset: u64) -> Result<u64> {
        if self.has_overlay() && !self.overlay.is_empty() {
            return Ok(HostView::len(self).max(offset));
        }
        self.file.next_hole(offset)
    }

    fn path(&self) -> Option<&std::path::Path> {
        self.file.path()
    }

    fn is_writable(&self) -> bool {
        self.file.is_writable()
    }
}

impl HostView {
    /// Fails unless the file reads what the image sees (no log held in memory only).
    fn settled(&self) -> Result<()> {
        if self.has_overlay() {
            return Err(Error::new(
                ErrorKind::Internal,
                "a write to the file before its pending log was replayed onto it",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemFile;

    #[test]
    fn later_patches_replace_earlier_ones_and_split_them() {
        let mut o = Overlay::new();
        o.write(0, vec![1; 16]);
        o.zero(4, 8);
        o.write(6, vec![2; 4]);
        let view = {
            let mut v = HostView::new(Box::new(MemFile::from_bytes(vec![9; 32]))).unwrap();
            v.set_overlay(o, 0);
            v
        };
        let mut buf = [0u8; 20];
        view.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            buf,
            [1, 1, 1, 1, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9]
        );
        let mut b = [0u8; 3];
        view.read_at(&mut b, 5).unwrap();
        assert_eq!(b, [0, 2, 2]);
    }

    #[test]
    fn overlay_past_the_file_end_extends_the_view_with_zeros_in_between() {
        let mut o = Overlay::new();
        o.write(40, vec![7; 4]);
        let mut v = HostView::new(Box::new(MemFile::from_bytes(vec![9; 32]))).unwrap();
        v.set_overlay(o, 64);
        assert_eq!(v.len(), 64);
        let mut buf = [1u8; 16];
        v.read_at(&mut buf, 30).unwrap();
        assert_eq!(buf, [9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 0, 0]);
        assert_eq!(
            v.read_at(&mut buf, 60).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }
}
