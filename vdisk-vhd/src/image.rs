//! An opened VHD: the guest view (reads, crash-safe allocating writes) and the allocation map.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use vdisk_core::{
    BlockDevice, BlockIndex, BlockState, Compactable, DiskImage, Error, ErrorKind, HostFile,
    HostOffset, ImageKind, Problem, Result, block_spans, check_range,
};
use zerocopy::IntoBytes;

use crate::check::{DynamicLayout, Parsed, SizeSource, inspect};
use crate::footer::{DiskType, Geometry};
use crate::format::{DEFAULT_BLOCK_SIZE, FOOTER_LEN, Footer, SECTOR, show_tag};

/// Bytes of zeros written per request when filling a new block.
const ZERO_CHUNK: u64 = 1 << 20;

/// Message for images saved (hibernated) with the VM.
pub(crate) const SAVED_STATE_MSG: &str =
    "the VM was saved with this disk attached; resume and shut it down first";

/// The mutable part of a dynamic disk: its table and where the footer currently is.
#[derive(Debug)]
pub(crate) struct DynState {
    /// Block layout as loaded at open.
    pub layout: DynamicLayout,
    /// Host offset of the footer at the end of the file.
    pub footer_pos: u64,
}

/// An opened VHD image (fixed, dynamic or differencing with its parent chain).
#[derive(Debug)]
pub struct VhdImage {
    pub(crate) file: Box<dyn HostFile>,
    pub(crate) writable: bool,
    pub(crate) footer: Footer,
    pub(crate) disk_type: DiskType,
    pub(crate) size: u64,
    pub(crate) size_source: SizeSource,
    /// Fixed disks: where the footer is. Dynamic disks keep it in `state`.
    pub(crate) fixed_footer_pos: u64,
    pub(crate) state: Option<RwLock<DynState>>,
    /// Warnings found at open, reported again by `check`.
    pub(crate) notes: Vec<Problem>,
    /// Differencing disks: the parent, opened read-only (itself with its parents).
    pub(crate) parent: Option<Box<VhdImage>>,
    /// Where the parent was opened from, if it came from a file.
    pub(crate) parent_path: Option<PathBuf>,
}

impl VhdImage {
    /// Opens and validates the image in `file`. Never writes. Fails with
    /// [`ErrorKind::InvalidImage`] on any structural error. The parent of a differencing disk
    /// is looked for next to `file`'s path with the default [`vdisk_core::ParentPolicy`]; use
    /// [`VhdImage::open_with`] for other policies or [`VhdImage::open_with_parent`] for a
    /// parent already open.
    pub fn open(file: Box<dyn HostFile>, writable: bool) -> Result<VhdImage> {
        let opts = if writable {
            vdisk_core::OpenOptions::read_write()
        } else {
            vdisk_core::OpenOptions::read_only()
        };
        Self::open_with(file, &opts)
    }

    /// Opens and validates the image in `file` without looking for a parent: a differencing
    /// disk opened this way has none until [`VhdImage::attach_parent`] (reads of sectors it
    /// does not hold fail).
    pub(crate) fn open_unlinked(file: Box<dyn HostFile>, writable: bool) -> Result<VhdImage> {
        let mut problems = Vec::new();
        let parsed = inspect(&*file, &mut problems)?;
        if let Some(err) = vdisk_core::first_error(&problems) {
            return Err(err);
        }
        let Parsed {
            footer,
            footer_pos,
            disk_type,
            size,
            size_source,
            dynamic,
        } = parsed;
        Ok(VhdImage {
            file,
            writable,
            footer,
            disk_type,
            size,
            size_source,
            fixed_footer_pos: footer_pos,
            state: dynamic.map(|layout| RwLock::new(DynState { layout, footer_pos })),
            notes: problems,
            parent: None,
            parent_path: None,
        })
    }

    /// Whether the VM was saved (hibernated) with this disk attached.
    pub fn saved_state(&self) -> bool {
        self.footer.saved_state != 0
    }

    /// The footer's unique id.
    pub fn unique_id(&self) -> [u8; 16] {
        self.footer.unique_id
    }

    pub(crate) fn read_state(&self) -> Option<RwLockReadGuard<'_, DynState>> {
        // No code panics while holding the lock; if one did, the state is still consistent
        // with the file at the last completed step.
        Some(
            self.state
                .as_ref()?
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    fn write_state(&self) -> Option<RwLockWriteGuard<'_, DynState>> {
        Some(
            self.state
                .as_ref()?
                .write()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub(crate) fn state_mut(&mut self) -> Option<&mut DynState> {
        Some(
            self.state
                .as_mut()?
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "the image was opened read-only",
            ));
        }
        if self.saved_state() {
            return Err(Error::new(ErrorKind::WrongType, SAVED_STATE_MSG));
        }
        Ok(())
    }

    /// Writes into one block of a dynamic disk (`buf` lies within the block).
    fn write_block(&self, st: &mut DynState, block: u64, within: u64, buf: &[u8]) -> Result<()> {
        let layout = &st.layout;
        if let Some(host) = layout.bat.host(block) {
            self.file.write_at(buf, host + layout.bitmap_len + within)?;
            return self.mark_sectors(host, within, buf.len() as u64);
        }
        self.allocate(st, block, within, buf)
    }

    /// Sets the bitmap bits of the sectors a write touched, so readers that honour the bitmap
    /// (Hyper-V) see the data.
    fn mark_sectors(&self, host: u64, within: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (within / SECTOR, (within + len - 1) / SECTOR);
        let (byte_lo, byte_hi) = (first / 8, last / 8);
        let n = usize::try_from(byte_hi - byte_lo + 1).unwrap_or(0);
        let mut bits = vec![0u8; n];
        self.file.read_at(&mut bits, host + byte_lo)?;
        let before = bits.clone();
        set_bits(&mut bits, within - byte_lo * 8 * SECTOR, len);
        if bits != before {
            self.file.write_at(&bits, host + byte_lo)?;
        }
        Ok(())
    }

    /// Allocates `block` where the footer is, crash-safely: footer at the new end first, then
    /// the block, then its BAT sector, with a sync after each step.
    fn allocate(&self, st: &mut DynState, block: u64, within: u64, buf: &[u8]) -> Result<()> {
        let footprint = st.layout.footprint();
        let bitmap_len = st.layout.bitmap_len;
        let at = st.footer_pos.next_multiple_of(SECTOR);
        let sector = u32::try_from(at / SECTOR)
            .ok()
            .filter(|&s| s != u32::MAX)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoSpace,
                    "the image file has reached the largest size vhd block offsets can address",
                )
                .with_offset(at)
            })?;
        let new_footer = at + footprint;
        self.file.write_at(self.footer.as_bytes(), new_footer)?;
        self.file.sync()?;
        // The old footer is now dead space; the block goes over it. A dynamic block claims all
        // its sectors; a differencing block only those written (the rest read the parent).
        let mut bitmap = vec![0xffu8; usize::try_from(bitmap_len).unwrap_or(0)];
        if self.disk_type == DiskType::Differencing {
            bitmap.fill(0);
            set_bits(&mut bitmap, within, buf.len() as u64);
        }
        self.file.write_at(&bitmap, at)?;
        let data = at + bitmap_len;
        let zeros = vec![0u8; usize::try_from(ZERO_CHUNK.min(st.layout.block_size)).unwrap_or(0)];
        let block_size = st.layout.block_size;
        let mut done = 0u64;
        while done < block_size {
            let n = usize::try_from(block_size - done).map_or(zeros.len(), |r| r.min(zeros.len()));
            let end = done + n as u64;
            let covered = within <= done && end <= within + buf.len() as u64;
            if !covered {
                self.file.write_at(&zeros[..n], data + done)?;
            }
            done = end;
        }
        self.file.write_at(buf, data + within)?;
        self.file.sync()?;
        st.footer_pos = new_footer;
        let mut changed = BTreeSet::new();
        changed.extend(st.layout.bat.set(block, sector));
        st.layout.bat.commit(&*self.file, &changed)
    }
}

impl BlockDevice for VhdImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let Some(st) = self.read_state() else {
            return self.file.read_at(buf, offset);
        };
        let layout = &st.layout;
        let differencing = self.disk_type == DiskType::Differencing;
        for span in block_spans(offset, buf.len(), layout.block_size) {
            let part = &mut buf[span.buf];
            match layout.bat.host(span.block) {
                Some(host) if differencing => {
                    self.read_through_bitmap(layout, host, span.within, span.offset, part)?;
                }
                Some(host) => self
                    .file
                    .read_at(part, host + layout.bitmap_len + span.within)?,
                None if differencing => self.read_parent(part, span.offset)?,
                None => part.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, buf.len())?;
        if self.disk_type == DiskType::Differencing {
            // Whole sectors only, so that every sector whose bit gets set holds its full
            // content (the parent's where the write does not cover it).
            if let Some((aligned, at)) = self.sector_aligned(buf, offset)? {
                return self.write_aligned(&aligned, at);
            }
        }
        self.write_aligned(buf, offset)
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file.sync()?;
        }
        Ok(())
    }
}

impl VhdImage {
    /// Writes `buf` at `offset` (already range-checked; sector-aligned for differencing disks).
    fn write_aligned(&self, buf: &[u8], offset: u64) -> Result<()> {
        let Some(mut st) = self.write_state() else {
            return self.file.write_at(buf, offset);
        };
        let bs = st.layout.block_size;
        for span in block_spans(offset, buf.len(), bs) {
            self.write_block(&mut st, span.block, span.within, &buf[span.buf])?;
        }
        Ok(())
    }
}

impl DiskImage for VhdImage {
    fn format(&self) -> &'static str {
        "vhd"
    }

    /// A VHD saved with its VM (SavedState) must not change under it, not even by a retrim.
    fn compaction_allowed(&self) -> Result<()> {
        if self.saved_state() {
            return Err(Error::new(ErrorKind::WrongType, SAVED_STATE_MSG));
        }
        Ok(())
    }

    fn kind(&self) -> ImageKind {
        match self.disk_type {
            DiskType::Fixed => ImageKind::Fixed,
            DiskType::Dynamic => ImageKind::Dynamic,
            DiskType::Differencing => ImageKind::Differencing,
        }
    }

    fn block_size(&self) -> u64 {
        self.read_state()
            .map_or(DEFAULT_BLOCK_SIZE, |st| st.layout.block_size)
    }

    fn block_count(&self) -> u64 {
        match self.read_state() {
            // Open made sure the table covers the size; it may have more entries (qemu).
            Some(st) => st.layout.bat.len(),
            None => self.size.div_ceil(DEFAULT_BLOCK_SIZE),
        }
    }

    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        if block.0 >= self.block_count() {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "block {block} is past the image's {} blocks",
                    self.block_count()
                ),
            ));
        }
        Ok(match self.read_state() {
            Some(st) => match st.layout.bat.host(block.0) {
                Some(host) => BlockState::Allocated {
                    host: HostOffset(host),
                },
                None => BlockState::Unallocated,
            },
            None => BlockState::Allocated {
                host: HostOffset(block.0 * DEFAULT_BLOCK_SIZE),
            },
        })
    }

    fn host_file(&self) -> &dyn HostFile {
        &*self.file
    }

    fn details(&self) -> Vec<(String, String)> {
        let f = &self.footer;
        let geometry = Geometry::of(f);
        let mut d = vec![
            ("creator".to_string(), show_tag(&f.creator_app)),
            (
                "creator version".to_string(),
                format!("{:#010x}", f.creator_version.get()),
            ),
            ("creator host os".to_string(), show_tag(&f.creator_host_os)),
            ("disk type".to_string(), self.kind().as_str().to_string()),
            ("current size".to_string(), f.current_size.get().to_string()),
            (
                "original size".to_string(),
                f.original_size.get().to_string(),
            ),
            (
                "geometry".to_string(),
                format!(
                    "{}/{}/{} (c/h/s)",
                    geometry.cylinders, geometry.heads, geometry.sectors_per_track
                ),
            ),
            ("chs size".to_string(), geometry.bytes().to_string()),
            (
                "size from".to_string(),
                match self.size_source {
                    SizeSource::CurrentSize => "current size",
                    SizeSource::Geometry => "chs geometry (table too small for current size)",
                }
                .to_string(),
            ),
            ("timestamp".to_string(), f.timestamp.get().to_string()),
            ("unique id".to_string(), hex(&f.unique_id)),
            ("saved state".to_string(), (f.saved_state != 0).to_string()),
        ];
        if let Some(st) = self.read_state() {
            d.push((
                "block size".to_string(),
                st.layout.header.block_size.get().to_string(),
            ));
            d.push((
                "max table entries".to_string(),
                st.layout.bat.len().to_string(),
            ));
            d.push((
                "bat offset".to_string(),
                format!("{:#x}", st.layout.bat.offset()),
            ));
        }
        d.extend(self.parent_details());
        d
    }

    fn check(&self) -> Result<Vec<Problem>> {
        let mut problems = self.notes.clone();
        if self.saved_state() {
            problems.push(Problem::warning(SAVED_STATE_MSG, Some(self.footer_pos())));
        }
        Ok(problems)
    }

    /// The footer at the end; dynamic and differencing images also the footer copy at the
    /// start, the dynamic header, the table and the parent locator data.
    fn host_metadata(&self) -> Result<Vec<std::ops::Range<u64>>> {
        let footer = self.footer_pos();
        let mut all = match self.read_state() {
            Some(st) => st.layout.metadata_ranges(),
            None => Vec::new(),
        };
        if self.read_state().is_some() {
            all.push(0..FOOTER_LEN);
        }
        all.push(footer..footer + FOOTER_LEN);
        Ok(all)
    }

    fn parent(&self) -> Option<&dyn DiskImage> {
        self.parent.as_deref().map(|p| p as &dyn DiskImage)
    }

    fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    fn as_compactable(&mut self) -> Result<&mut dyn Compactable> {
        self.as_compactable_ref()?;
        Ok(self)
    }

    fn as_compactable_ref(&self) -> Result<&dyn Compactable> {
        if self.disk_type == DiskType::Fixed {
            return Err(Error::new(
                ErrorKind::WrongType,
                "fixed VHD images have no blocks to reclaim; use --mode retrim",
            ));
        }
        self.compaction_allowed()?;
        Ok(self)
    }
}

impl VhdImage {
    /// Host offset of the footer at the end of the file.
    pub(crate) fn footer_pos(&self) -> u64 {
        self.read_state()
            .map_or(self.fixed_footer_pos, |st| st.footer_pos)
    }
}

/// Sets the bits (MSB first) of the sectors `within..within + len` touches in `bits`, whose
/// bit 0 is the sector at offset 0. Bits past `bits` are ignored.
pub(crate) fn set_bits(bits: &mut [u8], within: u64, len: u64) {
    if len == 0 {
        return;
    }
    for s in within / SECTOR..=(within + len - 1) / SECTOR {
        if let Some(b) = usize::try_from(s / 8).ok().and_then(|i| bits.get_mut(i)) {
            *b |= 0x80 >> (s % 8);
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
