//! Differencing disks: finding and verifying the parent (spec: "Parent Unique ID", "Parent
//! Time Stamp", parent locators), reading through the sector bitmap, and writing whole
//! sectors so a child never shows a mix it did not mean.
//!
//! ```text
//!   read of an allocated child block: bitmap bit set → child's data; clear → parent
//!   read of an unallocated child block: parent (zeros past the parent's end)
//!   write: widened to whole sectors (the parent's bytes fill the edges), then written to the
//!          child only; allocating sets the bits of the written sectors alone
//! ```

use std::path::{Path, PathBuf};

use vdisk_core::parent::{open_backing, own_format_only};
use vdisk_core::{
    Access, BlockDevice, ChainContext, DiskImage, Error, ErrorKind, FormatDriver, HostFile,
    Locator, OpenOptions, ParentReference, Problem, Result, StdFile,
};

use crate::check::DynamicLayout;
use crate::footer::DiskType;
use crate::format::SECTOR;
use crate::image::{VhdImage, hex};
use crate::locator::{self, parent_name};

impl VhdImage {
    /// Opens and validates the image in `file` as `opts` says. A differencing disk hands its
    /// locators (W2ru, W2ku, the deprecated Wi2r/Wi2k, MacX, then the parent name) to core's
    /// parent gate ([`open_backing`]), which applies `opts.parents` and opens the parent
    /// read-only with whichever registered driver recognises it, its own parents included, up
    /// to [`vdisk_core::parent::MAX_CHAIN_DEPTH`] levels. The parent must then be a VHD whose
    /// unique id is the one the child names ([`VhdImage::attach_parent`]); a parent time stamp
    /// that differs from the child's record is only a warning (in `check` and `details`).
    /// Missing parents fail with [`ErrorKind::NotFound`] naming the stored paths. Never
    /// writes.
    pub fn open_with(file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<VhdImage> {
        let child = file.path().map(Path::to_path_buf);
        let mut image = Self::open_unlinked(file, opts.writable)?;
        let Some(locators) = image.locators()? else {
            return Ok(image);
        };
        let reference = ParentReference::new(locators);
        let parent = open_backing(opts, child.as_deref(), &reference, &crate::DRIVER)?;
        image.attach_parent(parent.image, Some(parent.path))?;
        Ok(image)
    }

    /// The parent locators of the image in `file`, in resolution order (the parent name
    /// last), read without opening anything else; `None` for fixed and dynamic disks.
    pub(crate) fn parent_locators(file: Box<dyn HostFile>) -> Result<Option<Vec<Locator>>> {
        Self::open_unlinked(file, false)?.locators()
    }

    /// This image's parent locators in resolution order; `None` unless differencing.
    fn locators(&self) -> Result<Option<Vec<Locator>>> {
        if self.disk_type != DiskType::Differencing {
            return Ok(None);
        }
        let st = self
            .read_state()
            .ok_or_else(|| Error::invalid("differencing disk without a dynamic header", 0))?;
        Ok(Some(locator::resolution_order(
            &st.layout.locators,
            &parent_name(&st.layout.header.parent_name),
        )))
    }

    /// Opens the differencing disk in `file` over `parent`, already open (for images that do
    /// not live in files, or parents found by other means). Linkage is verified as in
    /// [`VhdImage::open_with`]. Base images refuse a parent with [`ErrorKind::InvalidInput`].
    pub fn open_with_parent(
        file: Box<dyn HostFile>,
        writable: bool,
        parent: VhdImage,
    ) -> Result<VhdImage> {
        let mut image = Self::open_unlinked(file, writable)?;
        let path = parent.file.path().map(Path::to_path_buf);
        image.attach_parent(Box::new(parent), path)?;
        Ok(image)
    }

    /// Makes `parent` this differencing disk's parent after checking that it is the image the
    /// child was made from (its footer unique id, [`DiskImage::identity`]); a time stamp
    /// mismatch becomes a warning.
    ///
    /// A parent of another format is refused, naming both formats: the VHD spec links a child
    /// to its parent by the parent's footer unique id and time stamp, fields only a VHD has,
    /// and Virtual PC, Hyper-V and qemu only ever base a VHD on a VHD; another format's
    /// identifiers happening to match would not make the chain one they can read.
    pub(crate) fn attach_parent(
        &mut self,
        parent: Box<dyn DiskImage>,
        path: Option<PathBuf>,
    ) -> Result<()> {
        let shown = path
            .as_ref()
            .map_or_else(|| "the parent".to_string(), |p| p.display().to_string());
        let Some(st) = self
            .read_state()
            .filter(|_| self.disk_type == DiskType::Differencing)
        else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "only differencing images have a parent",
            ));
        };
        let header = st.layout.header;
        let header_offset = st.layout.header_offset;
        drop(st);
        let link = "a vhd footer's unique id and time stamp";
        own_format_only(&*parent, &shown, crate::DRIVER.id(), link)?;
        let identity = parent.identity();
        let id = identity.id.unwrap_or_default();
        if id != header.parent_unique_id {
            return Err(Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "parent {shown} is not the image this differencing disk was made from: its unique id is {}, the child expects {}",
                    hex(&id),
                    hex(&header.parent_unique_id)
                ),
            ));
        }
        let want = header.parent_timestamp.get();
        let have = identity
            .version
            .as_deref()
            .map(|v| <[u8; 4]>::try_from(v).map_or(u32::MAX, u32::from_be_bytes));
        if let Some(have) = have.filter(|&h| h != want) {
            self.notes.push(Problem::warning(
                format!(
                    "parent {shown} has time stamp {have}, but the child recorded {want}: the parent may have been changed since the child was made"
                ),
                Some(header_offset + 0x38),
            ));
        }
        if parent.size() < self.size {
            self.notes.push(Problem::warning(
                format!(
                    "parent {shown} is {} bytes, smaller than the child's {}; the rest reads as zeros",
                    parent.size(), self.size
                ),
                None,
            ));
        }
        self.parent = Some(parent);
        self.parent_path = path;
        Ok(())
    }

    /// Reads `buf` at virtual `offset` from the parent; bytes past the parent's end read zero.
    pub(crate) fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(parent) = &self.parent else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "differencing image opened without its parent cannot read the parent's sectors",
            ));
        };
        let inside = parent.size().saturating_sub(offset);
        let n = usize::try_from(inside).map_or(buf.len(), |i| i.min(buf.len()));
        let (mine, past) = buf.split_at_mut(n);
        if !mine.is_empty() {
            parent.read_at(mine, offset)?;
        }
        past.fill(0);
        Ok(())
    }

    /// Reads `buf` from an allocated child block at `host`, `within` bytes into the block
    /// (virtual `offset`): runs of sectors whose bitmap bit is set come from the child, the
    /// others from the parent.
    pub(crate) fn read_through_bitmap(
        &self,
        layout: &DynamicLayout,
        host: u64,
        within: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len() as u64;
        let (first, last) = (within / SECTOR, (within + len - 1) / SECTOR);
        let byte_lo = first / 8;
        let mut bits = vec![0u8; usize::try_from(last / 8 - byte_lo + 1).unwrap_or(0)];
        self.file.read_at(&mut bits, host + byte_lo)?;
        let bit = |s: u64| {
            usize::try_from(s / 8 - byte_lo)
                .ok()
                .and_then(|i| bits.get(i))
                .is_some_and(|b| b & (0x80 >> (s % 8)) != 0)
        };
        let mut pos = within;
        let end = within + len;
        while pos < end {
            let set = bit(pos / SECTOR);
            let mut run_end = ((pos / SECTOR) + 1) * SECTOR;
            while run_end < end && bit(run_end / SECTOR) == set {
                run_end += SECTOR;
            }
            let run_end = run_end.min(end);
            let part = &mut buf[usize::try_from(pos - within).unwrap_or(0)
                ..usize::try_from(run_end - within).unwrap_or(0)];
            if set {
                self.file.read_at(part, host + layout.bitmap_len + pos)?;
            } else {
                self.read_parent(part, offset + (pos - within))?;
            }
            pos = run_end;
        }
        Ok(())
    }

    /// `buf` widened to whole sectors with the image's current content at the edges, and
    /// where it starts; `None` if it already is (or is empty).
    pub(crate) fn sector_aligned(&self, buf: &[u8], offset: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let end = offset + buf.len() as u64;
        let start = offset / SECTOR * SECTOR;
        let stop = end.next_multiple_of(SECTOR).min(self.size);
        if buf.is_empty() || (start == offset && stop == end) {
            return Ok(None);
        }
        let mut out = vec![0u8; usize::try_from(stop - start).unwrap_or(0)];
        let head = usize::try_from(offset - start).unwrap_or(0);
        if head > 0 {
            self.read_at(&mut out[..head], start)?;
        }
        let tail = head + buf.len();
        if tail < out.len() {
            self.read_at(&mut out[tail..], end)?;
        }
        out[head..tail].copy_from_slice(buf);
        Ok(Some((out, start)))
    }

    /// Facts about the parent link, for `details`.
    pub(crate) fn parent_details(&self) -> Vec<(String, String)> {
        let Some(st) = self
            .read_state()
            .filter(|_| self.disk_type == DiskType::Differencing)
        else {
            return Vec::new();
        };
        let h = &st.layout.header;
        let mut d = vec![
            ("parent unique id".to_string(), hex(&h.parent_unique_id)),
            (
                "parent timestamp".to_string(),
                h.parent_timestamp.get().to_string(),
            ),
            ("parent name".to_string(), parent_name(&h.parent_name)),
        ];
        for l in &st.layout.locators {
            if let Some(loc) = l.locator() {
                d.push((format!("parent locator {}", loc.label), loc.path));
            }
        }
        if let Some(p) = &self.parent_path {
            d.push(("parent path".to_string(), p.display().to_string()));
        }
        for n in self
            .notes
            .iter()
            .filter(|n| n.message.starts_with("parent "))
        {
            d.push(("parent warning".to_string(), n.message.clone()));
        }
        d
    }
}

/// Opens the parent named by `path` for creating a child over it; its own parents may come
/// from `parent_dirs` besides their children's folders. The user named it to be the parent of
/// a new VHD, so it must be a VHD, recognised from bytes the format owns (a footer copy at
/// offset 0, or a self-consistent fixed-disk footer), never from a footer-shaped tail alone.
pub(crate) fn open_for_create(path: &Path, parent_dirs: &[PathBuf]) -> Result<VhdImage> {
    let file = StdFile::open(path, Access::ReadOnly)?;
    if crate::DRIVER.probe(&file)? < vdisk_core::Confidence::Likely {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            "the parent of a differencing vhd must be a vhd image, and this file is not \
             recognisably one (no footer copy at its start, no consistent fixed-disk footer)",
        )
        .with_path(path));
    }
    let opts = OpenOptions::read_only().with_parents(vdisk_core::ParentPolicy {
        explicit: None,
        allowed_dirs: parent_dirs.to_vec(),
    });
    VhdImage::open_with(Box::new(file), &opts.for_parent(ChainContext::root(path)))
        .map_err(|e| e.with_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::{CreateSpec, HostFile, ImageKind};

    /// A dynamic VHD footer at the end of a file is guest data in any other format (a VHDX's
    /// last block): a parent is recognised only from bytes its format owns, so a file whose
    /// footer copy at offset 0 is gone is not opened as a parent, and the child is left as it
    /// was.
    #[test]
    fn a_vhd_footer_only_at_the_end_of_a_file_does_not_make_it_a_vhd_parent() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.vhd");
        let child = dir.path().join("child.vhd");
        let file = StdFile::create_new(&base).unwrap();
        crate::create::create(
            Box::new(file),
            &CreateSpec::new(ImageKind::Dynamic, 4 << 20),
        )
        .unwrap();
        let file = StdFile::create_new(&child).unwrap();
        crate::create::create(Box::new(file), &CreateSpec::differencing(&base, &child)).unwrap();
        let file = StdFile::open(&child, Access::ReadOnly).unwrap();
        VhdImage::open(Box::new(file), false).expect("a whole dynamic vhd is a parent");

        let file = StdFile::open(&base, Access::ReadWrite).unwrap();
        file.write_at(&[0u8; 512], 0).unwrap();
        drop(file);
        let before = std::fs::read(&child).unwrap();
        let file = StdFile::open(&child, Access::ReadOnly).unwrap();
        let err = VhdImage::open(Box::new(file), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
        assert!(err.message().contains("not recognisably"), "{err}");
        assert_eq!(std::fs::read(&child).unwrap(), before);
    }
}
