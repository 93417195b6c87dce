//! The compaction primitives for dynamic VHDX: BAT updates through the log, block moves, and
//! shrinking the file.
//!
//! ```text
//!  deallocate  changed BAT pages ─► log entries (≤ half the log each) ─► apply ─► empty log
//!  relocate    copy_within each payload, sync ─► BAT pages through the log ─► empty log
//!  truncate    log the new file size (FlushedFileOffset = LastFileOffset) ─► set_len, sync
//!              ─► empty log
//! ```
//!
//! Payload bytes are never logged: moves copy into free space, and the BAT only points at
//! the copy once the copy is durable. DataWriteGuid is not changed (reads do not change).

use std::collections::BTreeMap;
use std::ops::Range;

use vdisk_core::{
    BlockIndex, Compactable, DiskImage, Error, ErrorKind, FreeAs, HostFile, HostLayout, ImageKind,
    Relocation, Result, align_up,
};

use crate::bat::{Bat, BatEntry};
use crate::format::{
    HEADER_SECTION_LEN, LOG_SECTOR, MIB, PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT,
    PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_UNMAPPED, PAYLOAD_ZERO,
};
use crate::image::VhdxImage;
use crate::log_write::{PAGE, Page};
use crate::overlay::HostView;
use crate::session::Session;

/// BAT entries per 4 KiB page.
const ENTRIES_PER_PAGE: u64 = LOG_SECTOR / 8;

impl VhdxImage {
    /// Refuses fixed images. Read-only opens get the primitives too (a dry run plans with
    /// `host_layout`); the writing ones then fail with [`ErrorKind::ReadOnly`].
    pub(crate) fn compactable(&mut self) -> Result<&mut VhdxImage> {
        self.compactable_ref()?;
        Ok(self)
    }

    /// The read-only side of [`VhdxImage::compactable`]: the same refusals.
    pub(crate) fn compactable_ref(&self) -> Result<&VhdxImage> {
        if self.kind() == ImageKind::Fixed {
            return Err(Error::new(
                ErrorKind::WrongType,
                "fixed VHDX images keep every block allocated; use --mode retrim",
            ));
        }
        let log_len = self.header.header.log_length.get();
        if u64::from(log_len) < MIB {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the image's log is {log_len} bytes; vdisk changes vhdx metadata only \
                     through a log of at least 1 MiB (nothing was changed)"
                ),
            ));
        }
        Ok(self)
    }

    /// Table index of payload block `block`, checked.
    fn table_index(&self, block: BlockIndex) -> Result<u64> {
        let bat = self.bat();
        if block.0 >= bat.data_blocks {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "block {} is outside the {}-block disk",
                    block.0, bat.data_blocks
                ),
            ));
        }
        Ok(bat.payload_index(block.0))
    }

    /// Writes `changes` (table index → new entry) through the log; see [`log_bat_changes`].
    fn update_bat(&mut self, changes: &BTreeMap<u64, BatEntry>) -> Result<()> {
        let session = writable(&mut self.session, &self.view)?;
        let bat = self
            .bat
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log_bat_changes(session, self.view.file(), bat, changes)
    }

    /// The end of the last byte any region, the log or a block uses (trimmed blocks that keep
    /// host space inside the file included; an offset past the end keeps none).
    pub(crate) fn used_end(&self) -> u64 {
        let bat = self.bat();
        let bs = bat.block_size;
        let mut highest = self
            .metadata_ranges()
            .iter()
            .map(|r| r.end)
            .fold(HEADER_SECTION_LEN, u64::max);
        let file_len = self.view.len();
        for b in 0..bat.data_blocks {
            let Some(e) = bat.payload(b) else { continue };
            let host = match e.state() {
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => Some(e.host_offset()),
                _ => e.kept_host(bs, file_len),
            };
            if let Some(host) = host {
                highest = highest.max(host.saturating_add(bs));
            }
        }
        highest
    }

    /// Host ranges of the log, every region and every sector bitmap block, sorted.
    pub(crate) fn metadata_ranges(&self) -> Vec<Range<u64>> {
        // The log's place never changes in a session: the header read at open has it.
        let h = &self.header.header;
        let log = h.log_offset.get()..h.log_offset.get() + u64::from(h.log_length.get());
        let mut all: Vec<Range<u64>> = self.regions.all.clone();
        all.extend(self.bat().bitmap_ranges());
        if !log.is_empty() {
            all.push(log);
        }
        all.sort_unstable_by_key(|r| (r.start, r.end));
        all
    }
}

impl Compactable for VhdxImage {
    fn host_layout(&self) -> Result<HostLayout> {
        Ok(HostLayout {
            data_start: HEADER_SECTION_LEN,
            block_footprint: self.bat().block_size,
            data_offset: Some(0),
            alignment: MIB,
            reserved: self.metadata_ranges(),
            trailer_len: 0,
            end_alignment: MIB,
        })
    }

    /// Base images: ZERO either way. Differencing images: [`FreeAs::Parent`] → NOT_PRESENT,
    /// [`FreeAs::Zero`] → ZERO; the sector bits of freed blocks are cleared through the log
    /// (see `clear_sector_bits`), so the bitmap never claims sectors for a block that is not
    /// partially present.
    fn deallocate(&mut self, blocks: &[BlockIndex], to: FreeAs) -> Result<()> {
        let differencing = self.kind() == ImageKind::Differencing;
        let target = match to {
            FreeAs::Parent if differencing => PAYLOAD_NOT_PRESENT,
            _ => PAYLOAD_ZERO,
        };
        // Sector bits of freed blocks are cleared: before the BAT update where they do not
        // count (FULLY_PRESENT and trimmed blocks), after it where they do (PARTIALLY_PRESENT).
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let mut changes = BTreeMap::new();
        for &block in blocks {
            let i = self.table_index(block)?;
            let Some(entry) = usize::try_from(i)
                .ok()
                .and_then(|i| self.bat().entries.get(i).copied())
            else {
                continue;
            };
            match entry.state() {
                PAYLOAD_FULLY_PRESENT | PAYLOAD_UNMAPPED | PAYLOAD_UNDEFINED => {
                    before.push(block.0);
                }
                PAYLOAD_PARTIALLY_PRESENT if differencing => after.push(block.0),
                _ => continue,
            }
            changes.insert(i, BatEntry(u64::from(target)));
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.clear_sector_bits(&before)?;
        self.update_bat(&changes)?;
        self.clear_sector_bits(&after)
    }

    fn can_free_as_zero(&self) -> bool {
        true
    }

    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        let bs = self.bat().block_size;
        let metadata = self.metadata_ranges();
        let mut changes = BTreeMap::new();
        for m in moves {
            let i = self.table_index(m.block)?;
            let current = self
                .bat()
                .payload(m.block.0)
                .map(|e| (e.state(), e.host_offset()));
            // PARTIALLY_PRESENT blocks move with their state (their sector bits stay put).
            let state = match current {
                Some((s @ (PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT), at))
                    if at == m.from.0 =>
                {
                    s
                }
                _ => 0,
            };
            if state == 0 {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "block {} is not allocated at {:#x}; nothing was moved",
                        m.block.0, m.from.0
                    ),
                )
                .with_offset(m.from.0));
            }
            let end = m.to.0.checked_add(bs);
            let clashes = end.is_none_or(|end| {
                end > m.from.0 || metadata.iter().any(|r| m.to.0 < r.end && r.start < end)
            });
            if !m.to.0.is_multiple_of(MIB) || m.to.0 < HEADER_SECTION_LEN || clashes {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "block {} cannot be moved from {:#x} to {:#x} (unaligned, not below \
                         it, or over metadata); nothing was moved",
                        m.block.0, m.from.0, m.to.0
                    ),
                )
                .with_offset(m.to.0));
            }
            changes.insert(i, BatEntry((m.to.0 / MIB) << 20 | u64::from(state)));
        }
        if changes.is_empty() {
            return Ok(());
        }
        let session = writable(&mut self.session, &self.view)?;
        let file = self.view.file();
        session.begin_write(file)?;
        for m in moves {
            file.copy_within(m.from.0, m.to.0, bs)?;
            copied()?;
        }
        file.sync()?;
        self.update_bat(&changes)
    }

    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        let highest = self.used_end();
        if highest > data_end {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "cannot end the file at {data_end:#x}: blocks or metadata reach {highest:#x}; \
                     nothing was changed"
                ),
            ));
        }
        let new_len = align_up(data_end, MIB)
            .ok_or_else(|| Error::new(ErrorKind::Internal, "file end overflows"))?;
        let session = writable(&mut self.session, &self.view)?;
        let file = self.view.file();
        let len = file.len()?;
        if new_len >= len {
            return Ok(len);
        }
        session.log_file_size(file, new_len)?;
        session.apply(file)?;
        file.set_len(new_len)?;
        file.sync()?;
        session.finish(file)?;
        self.view.set_file_len(new_len);
        Ok(new_len)
    }
}

/// Writes `changes` (table index → new entry) through the log, a few pages per entry,
/// updating the in-memory table as each entry takes effect; then empties the log. Used by
/// compaction and by allocating guest writes.
pub(crate) fn log_bat_changes(
    session: &mut Session,
    file: &dyn HostFile,
    bat: &mut Bat,
    changes: &BTreeMap<u64, BatEntry>,
) -> Result<()> {
    let mut pages: Vec<u64> = changes.keys().map(|i| i / ENTRIES_PER_PAGE).collect();
    pages.dedup();
    for chunk in pages.chunks(session.max_pages().max(1)) {
        let mut logged: Vec<Page> = Vec::with_capacity(chunk.len());
        for &p in chunk {
            let at = bat.file_offset + p * LOG_SECTOR;
            let mut page = Box::new([0u8; PAGE]);
            file.read_at(&mut page[..], at)?;
            let first = p * ENTRIES_PER_PAGE;
            for (k, slot) in page.chunks_exact_mut(8).enumerate() {
                let i = first + k as u64;
                let entry = match changes.get(&i) {
                    Some(e) => Some(*e),
                    None => usize::try_from(i)
                        .ok()
                        .and_then(|i| bat.entries.get(i).copied()),
                };
                if let Some(e) = entry {
                    slot.copy_from_slice(&e.0.to_le_bytes());
                }
            }
            logged.push((at, page));
        }
        session.log_pages(file, logged)?;
        // In effect from here on: a reopen replays it.
        let span = chunk.first().map_or(0, |p| p * ENTRIES_PER_PAGE)
            ..chunk.last().map_or(0, |p| (p + 1) * ENTRIES_PER_PAGE);
        for (&i, &e) in changes.range(span) {
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| bat.entries.get_mut(i)) {
                *slot = e;
            }
        }
        session.apply(file)?;
    }
    session.finish(file)
}

/// The error of a writing primitive on a read-only open.
/// The writing session of an image opened for writing, with the log found pending at open
/// replayed onto the file first (every writing primitive starts here); [`ErrorKind::ReadOnly`]
/// otherwise. Takes the fields, not the image, so the caller can still borrow the others.
pub(crate) fn writable<'a>(
    session: &'a mut std::sync::Mutex<Option<Session>>,
    view: &HostView,
) -> Result<&'a mut Session> {
    let session = session
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_mut()
        .ok_or_else(read_only)?;
    session.replay_pending(view)?;
    Ok(session)
}

fn read_only() -> Error {
    Error::new(
        ErrorKind::ReadOnly,
        "the image was opened read-only; compaction needs a writable open (nothing was changed)",
    )
}
