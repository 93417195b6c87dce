//! An opened VDI: the guest view (reads, crash-safe allocating writes) and the allocation map.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use vdisk_core::{
    BlockDevice, BlockIndex, BlockState, Compactable, DiskImage, Error, ErrorKind, HostFile,
    HostOffset, ImageKind, Problem, Result, block_spans, check_range,
};

use crate::bmap::{BlockMap, Entry};
use crate::format::{BLOCKS_ALLOCATED_OFFSET, Header, show_text, show_uuid};
use crate::header::{Layout, inspect};

/// The part of an open image that writes change: the map and the header's slot count.
#[derive(Debug)]
pub(crate) struct State {
    /// The block map as on disk.
    pub map: BlockMap,
    /// The header's `blocks_allocated` as on disk: no block may lie at or past it.
    pub allocated: u64,
    /// One past the highest slot in use: where the next block goes. Below `allocated` only
    /// after an interrupted write or compaction left unused slots at the top, which are then
    /// reused (so a re-run ends where an uninterrupted run would).
    pub high: u64,
}

/// An opened VDI image (fixed, dynamic, or differencing with its parent chain).
#[derive(Debug)]
pub struct VdiImage {
    pub(crate) file: Box<dyn HostFile>,
    pub(crate) writable: bool,
    pub(crate) header: Header,
    pub(crate) layout: Layout,
    pub(crate) state: RwLock<State>,
    /// Warnings found at open, reported again by `check`.
    pub(crate) notes: Vec<Problem>,
    /// Differencing images: the parent, opened read-only (itself with its parents).
    pub(crate) parent: Option<Box<dyn DiskImage>>,
    /// Where the parent was opened from.
    pub(crate) parent_path: Option<PathBuf>,
}

impl VdiImage {
    /// Opens and validates the image in `file` without looking for a parent: reads of a
    /// differencing image's free blocks fail until one is attached. Never writes. Every
    /// structural problem of the header or block map fails with [`ErrorKind::InvalidImage`].
    pub(crate) fn open_unlinked(file: Box<dyn HostFile>, writable: bool) -> Result<VdiImage> {
        let (header, layout) = inspect(&*file)?;
        let map = BlockMap::load(&*file, &layout)?;
        let mut problems = Vec::new();
        map.validate(&layout, file.len()?, &mut problems);
        if let Some(err) = vdisk_core::first_error(&problems) {
            return Err(err);
        }
        Ok(VdiImage {
            file,
            writable,
            header,
            layout,
            state: RwLock::new(State {
                high: map.high(),
                map,
                allocated: layout.blocks_allocated,
            }),
            notes: problems,
            parent: None,
            parent_path: None,
        })
    }

    /// This image's UUID, as stored (VirtualBox byte order).
    pub fn uuid(&self) -> [u8; 16] {
        self.header.uuid_image
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // No code panics while holding the lock; if one did, the state still matches the file
        // at the last completed step.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state_mut(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ReadOnly,
                "the image was opened read-only",
            ))
        }
    }

    /// Reads `buf` at virtual `offset` from the parent; bytes past the parent's end read
    /// zero.
    pub(crate) fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(parent) = &self.parent else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "differencing image opened without its parent cannot read the parent's blocks",
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

    /// Writes `buf` into `block`, `within` bytes in, allocating it if it has no slot.
    fn write_block(&self, st: &mut State, block: u64, within: u64, buf: &[u8]) -> Result<()> {
        match st.map.get(block) {
            Entry::Slot(slot) => self.file.write_at(buf, self.layout.data_of(slot) + within),
            entry => self.allocate(st, block, entry, within, buf),
        }
    }

    /// Gives `block` the slot above every block in use, crash-safely: the whole block (what it
    /// read before, with `buf` over it) into the slot, sync; the header's count if the slot is
    /// at or past it, sync; the map page, sync. A cut after the first step leaves an unused
    /// slot (the next allocation reuses it); after the second, a count above the slots in use
    /// (a warning, reclaimed by compaction); never an entry the count does not cover.
    fn allocate(
        &self,
        st: &mut State,
        block: u64,
        entry: Entry,
        within: u64,
        buf: &[u8],
    ) -> Result<()> {
        let l = &self.layout;
        let slot = u32::try_from(st.high)
            .ok()
            .filter(|&s| u64::from(s) < l.blocks)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "every one of the {} slots of the data area is in use",
                        l.blocks
                    ),
                )
            })?;
        let mut data = vec![0u8; usize::try_from(l.footprint()).unwrap_or(0)];
        let extra = usize::try_from(l.block_extra).unwrap_or(0);
        let start = block * l.block_size;
        if entry == Entry::Free && l.kind == ImageKind::Differencing && start < l.disk_size {
            let visible = usize::try_from((l.disk_size - start).min(l.block_size)).unwrap_or(0);
            self.read_parent(&mut data[extra..extra + visible], start)?;
        }
        let at = extra + usize::try_from(within).unwrap_or(0);
        data[at..at + buf.len()].copy_from_slice(buf);
        self.file.write_at(&data, l.slot_offset(slot))?;
        self.file.sync()?;
        let high = u64::from(slot) + 1;
        if high > st.allocated {
            let count = u32::try_from(high).unwrap_or(u32::MAX);
            self.file
                .write_at(&count.to_le_bytes(), BLOCKS_ALLOCATED_OFFSET)?;
            self.file.sync()?;
            st.allocated = high;
        }
        st.map.update(&*self.file, &[(block, Entry::Slot(slot))])?;
        st.high = high;
        Ok(())
    }
}

impl BlockDevice for VdiImage {
    fn size(&self) -> u64 {
        self.layout.disk_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.layout.disk_size, offset, buf.len())?;
        let st = self.read_state();
        for span in block_spans(offset, buf.len(), self.layout.block_size) {
            let part = &mut buf[span.buf];
            match st.map.get(span.block) {
                Entry::Slot(slot) => self
                    .file
                    .read_at(part, self.layout.data_of(slot) + span.within)?,
                Entry::Free if self.layout.kind == ImageKind::Differencing => {
                    self.read_parent(part, span.offset)?;
                }
                Entry::Free | Entry::Zero => part.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.layout.disk_size, offset, buf.len())?;
        let mut st = self.write_state();
        for span in block_spans(offset, buf.len(), self.layout.block_size) {
            self.write_block(&mut st, span.block, span.within, &buf[span.buf])?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file.sync()?;
        }
        Ok(())
    }
}

impl DiskImage for VdiImage {
    fn format(&self) -> &'static str {
        "vdi"
    }

    fn kind(&self) -> ImageKind {
        self.layout.kind
    }

    fn block_size(&self) -> u64 {
        self.layout.block_size
    }

    /// Every map entry, also those past the virtual size (kept, never read).
    fn block_count(&self) -> u64 {
        self.layout.blocks
    }

    /// A block with data is allocated at its slot (for a fixed image, where its data starts:
    /// a fixed image's block is its data); the zero entry is [`BlockState::Zero`]; the free
    /// entry [`BlockState::Unallocated`].
    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        if block.0 >= self.layout.blocks {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "block {block} is past the image's {} blocks",
                    self.layout.blocks
                ),
            ));
        }
        Ok(match self.read_state().map.get(block.0) {
            Entry::Slot(slot) if self.layout.kind == ImageKind::Fixed => BlockState::Allocated {
                host: HostOffset(self.layout.data_of(slot)),
            },
            Entry::Slot(slot) => BlockState::Allocated {
                host: HostOffset(self.layout.slot_offset(slot)),
            },
            Entry::Zero => BlockState::Zero,
            Entry::Free => BlockState::Unallocated,
        })
    }

    fn host_file(&self) -> &dyn HostFile {
        &*self.file
    }

    fn details(&self) -> Vec<(String, String)> {
        let h = &self.header;
        let l = &self.layout;
        let mut d = vec![
            ("text".to_string(), show_text(&h.text)),
            (
                "header size".to_string(),
                format!("{:#x}", l.header_end - 0x48),
            ),
            ("image type".to_string(), l.kind.as_str().to_string()),
            ("description".to_string(), show_text(&h.description)),
            ("disk size".to_string(), l.disk_size.to_string()),
            ("block size".to_string(), l.block_size.to_string()),
            ("block extra".to_string(), l.block_extra.to_string()),
            ("blocks in image".to_string(), l.blocks.to_string()),
            (
                "blocks allocated (header)".to_string(),
                self.read_state().allocated.to_string(),
            ),
            (
                "block map offset".to_string(),
                format!("{:#x}", l.bmap_offset),
            ),
            ("data offset".to_string(), format!("{:#x}", l.data_offset)),
            ("uuid".to_string(), show_uuid(&h.uuid_image)),
            ("modification uuid".to_string(), show_uuid(&h.uuid_modify)),
        ];
        if l.kind == ImageKind::Differencing {
            d.push(("parent uuid".to_string(), show_uuid(&h.uuid_link)));
            d.push((
                "parent modification uuid".to_string(),
                show_uuid(&h.uuid_parent_modify),
            ));
            if let Some(p) = &self.parent_path {
                d.push(("parent path".to_string(), p.display().to_string()));
            }
        }
        d
    }

    fn check(&self) -> Result<Vec<Problem>> {
        Ok(self.notes.clone())
    }

    /// The header (up to its end) and the block map.
    fn host_metadata(&self) -> Result<Vec<std::ops::Range<u64>>> {
        let l = &self.layout;
        Ok(vec![
            0..l.header_end,
            l.bmap_offset..l.bmap_offset + l.bmap_len(),
        ])
    }

    fn parent(&self) -> Option<&dyn DiskImage> {
        self.parent.as_deref()
    }

    fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    fn image_id(&self) -> Option<Vec<u8>> {
        Some(self.header.uuid_image.to_vec())
    }

    fn as_compactable(&mut self) -> Result<&mut dyn Compactable> {
        self.as_compactable_ref()?;
        Ok(self)
    }

    fn as_compactable_ref(&self) -> Result<&dyn Compactable> {
        if self.layout.kind == ImageKind::Fixed {
            return Err(Error::new(
                ErrorKind::WrongType,
                "fixed VDI images have no blocks to reclaim; use --mode retrim",
            ));
        }
        Ok(self)
    }
}
