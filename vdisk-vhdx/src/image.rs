//! An opened VHDX: the parse pipeline (header, log, regions, metadata, BAT) and the guest view.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use uuid::Uuid;
use vdisk_core::{
    BlockDevice, BlockIndex, BlockState, DiskImage, Error, ErrorKind, HostFile, HostOffset,
    ImageKind, Locator, OpenOptions, Problem, Result, block_spans, check_range,
};

use crate::bat::{Bat, read_bat};
use crate::format::{
    PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNDEFINED,
    PAYLOAD_UNMAPPED, PAYLOAD_ZERO, guid,
};
use crate::header::{CurrentHeader, read_headers};
use crate::log::{Log, SCAN_BUDGET_FACTOR, Sequence, find_active};
use crate::log_bounds::check_bounds;
use crate::metadata::{Metadata, read_metadata};
use crate::overlay::HostView;
use crate::region::{Regions, read_regions};
use crate::session::Session;

/// What the log looked like at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogState {
    /// LogGuid was zero: nothing to replay.
    Empty,
    /// Entries were replayed in memory; the file still holds the stale metadata until a
    /// writable open's first write replays them onto it (see the session).
    ReplayedInMemory {
        /// Entries applied.
        entries: usize,
        /// Sequence number of the newest.
        sequence: u64,
    },
}

/// Everything parsed from the file.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub view: HostView,
    pub header: CurrentHeader,
    pub log: LogState,
    pub regions: Regions,
    pub meta: Metadata,
    pub bat: Bat,
    /// The log sequence replayed in memory, if the log was not empty.
    pub pending: Option<Sequence>,
}

/// Runs the whole parse. Problems that do not stop parsing go to `problems`; the caller
/// decides whether they are fatal.
pub(crate) fn inspect(file: Box<dyn HostFile>, problems: &mut Vec<Problem>) -> Result<Parsed> {
    let header = read_headers(&*file, problems)?;
    let mut view = HostView::new(file)?;
    let log_range = header.log_range();
    let mut pending = None;
    let log = if header.log_in_use() {
        let len = usize::try_from(log_range.end - log_range.start)
            .map_err(|_| Error::invalid("the log is too large", log_range.start))?;
        let mut bytes = vec![0u8; len];
        view.file().read_at(&mut bytes, log_range.start)?;
        let log = Log {
            bytes: &bytes,
            file_offset: log_range.start,
            guid: header.header.log_guid,
            budget: Cell::new(SCAN_BUDGET_FACTOR * len as u64),
        };
        let sequence = find_active(&log, view.file_len())?;
        let overlay = sequence.overlay();
        let head = sequence.head().map_or(0, |h| h.last_file_offset);
        let state = LogState::ReplayedInMemory {
            entries: sequence.entries.len(),
            sequence: sequence.head().map_or(0, |h| h.sequence),
        };
        view.set_overlay(overlay, head);
        pending = Some(sequence);
        problems.push(Problem::warning(
            "the log holds entries not yet applied to the file (the image was not closed \
             cleanly); they were applied in memory only",
            Some(log_range.start),
        ));
        state
    } else {
        LogState::Empty
    };
    let regions = read_regions(&view, &log_range, problems)?;
    // Misplaced regions make everything read from them meaningless: stop here.
    if let Some(err) = vdisk_core::first_error(problems) {
        return Err(err);
    }
    let meta = read_metadata(&view, &regions.metadata)?;
    if let Some(sequence) = &pending {
        check_bounds(
            sequence,
            log_range.start,
            view.file_len(),
            &regions.all,
            &log_range,
            &meta,
        )?;
    }
    let mut reserved = regions.all.clone();
    reserved.push(log_range.clone());
    let bat = read_bat(&view, &meta, &regions.bat, &reserved, problems)?;
    Ok(Parsed {
        view,
        header,
        log,
        regions,
        meta,
        bat,
        pending,
    })
}

/// An opened VHDX image (fixed, dynamic or differencing).
#[derive(Debug)]
pub struct VhdxImage {
    pub(crate) view: HostView,
    /// The header at open (the session's is newer once it has written one).
    pub(crate) header: CurrentHeader,
    log: LogState,
    /// Where the BAT, metadata and other regions are (the compactor's reserved ranges).
    pub(crate) regions: Regions,
    meta: Metadata,
    /// The BAT; guest writes that allocate change it through `&self`.
    pub(crate) bat: RwLock<Bat>,
    /// Warnings found at open, reported again by `check`.
    notes: Vec<Problem>,
    /// Header and log writing state of a writable open; held by a guest write throughout.
    pub(crate) session: Mutex<Option<Session>>,
    /// The parent of a differencing image (opened read-only with its own parents), and the
    /// path it was found at.
    pub(crate) parent: Option<(Box<VhdxImage>, PathBuf)>,
}

impl VhdxImage {
    /// Opens and validates the image in `file`. The open itself never writes: a pending log
    /// is replayed in memory (bounded by what the image's layout can need, see
    /// `log::check_bounds`). A writable open replays it onto the file just before its first
    /// write ([`DiskImage::prepare_write`], a compaction primitive or a guest write): syncs,
    /// empties the log (header update with a new FileWriteGuid) and from then on reads the
    /// file; [`DiskImage::implicit_changes`] then says so. Fails with [`ErrorKind::InvalidImage`] on any structural
    /// error, with [`ErrorKind::ReadOnly`] for a writable open of a read-only file, and with
    /// [`ErrorKind::Unsupported`] for unknown required regions or metadata.
    ///
    /// A differencing image is opened without a chain context: its parent is looked for from
    /// the file's own path with the default policy; see [`VhdxImage::open_with`].
    pub fn open(file: Box<dyn HostFile>, writable: bool) -> Result<VhdxImage> {
        let opts = if writable {
            OpenOptions::read_write()
        } else {
            OpenOptions::read_only()
        };
        Self::open_with(file, &opts)
    }

    /// Opens as [`VhdxImage::open`] does, with `opts`' writability, parent policy and chain
    /// context. A differencing image's parent is found through its locators (relative_path,
    /// volume_path, absolute_win32_path, in that order) by [`vdisk_core::parent::find_parent`],
    /// opened read-only with this driver (recursively), and must carry the DataWriteGuid the
    /// child's parent_linkage names, and the same virtual size and logical sector size.
    /// Errors: [`ErrorKind::NotFound`] naming the stored path when no parent is found,
    /// [`ErrorKind::InvalidImage`] for a linkage, size or format mismatch or a loop.
    pub fn open_with(file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<VhdxImage> {
        let mut image = Self::open_own(file, opts.writable)?;
        if let Some(locator) = image.meta.parent.clone() {
            image.parent = Some(crate::chain::open_parent(&image, &locator, opts)?);
        }
        Ok(image)
    }

    /// The parent locator paths of the image in `file` (relative_path, volume_path,
    /// absolute_win32_path), read without opening anything else; `None` for an image without
    /// a parent. A pending log is replayed in memory only.
    pub(crate) fn parent_locators(file: Box<dyn HostFile>) -> Result<Option<Vec<Locator>>> {
        let image = Self::open_own(file, false)?;
        Ok(image.meta.parent.as_ref().map(|l| l.paths.clone()))
    }

    fn open_own(file: Box<dyn HostFile>, writable: bool) -> Result<VhdxImage> {
        if writable && !file.is_writable() {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "the file was opened read-only but a writable open was asked for",
            ));
        }
        let mut problems = Vec::new();
        let parsed = inspect(file, &mut problems)?;
        if let Some(err) = vdisk_core::first_error(&problems) {
            return Err(err);
        }
        if !writable {
            return Ok(Self::from_parsed(parsed, problems, None));
        }
        // The replay waits for the first write: a compaction refused or only planned leaves
        // the file byte-identical.
        let session = Session::new(parsed.header.clone(), parsed.pending.clone());
        Ok(Self::from_parsed(parsed, problems, Some(session)))
    }

    fn from_parsed(parsed: Parsed, notes: Vec<Problem>, session: Option<Session>) -> VhdxImage {
        let Parsed {
            view,
            header,
            log,
            regions,
            meta,
            bat,
            pending: _,
        } = parsed;
        VhdxImage {
            view,
            header,
            log,
            regions,
            meta,
            bat: RwLock::new(bat),
            notes,
            session: Mutex::new(session),
            parent: None,
        }
    }

    /// The header in effect (the session's, once it has written one).
    pub(crate) fn current_header(&self) -> CurrentHeader {
        lock(&self.session)
            .as_ref()
            .map_or_else(|| self.header.clone(), |s| s.header().clone())
    }

    /// The BAT, for reading.
    pub(crate) fn bat(&self) -> std::sync::RwLockReadGuard<'_, Bat> {
        self.bat
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The virtual disk id.
    pub fn disk_id(&self) -> Uuid {
        self.meta.disk_id
    }

    /// Whether the file holds a log that is replayed in memory only (found at open and not
    /// yet replayed onto the file by a first write).
    pub fn log_replayed_in_memory(&self) -> bool {
        self.view.has_overlay()
    }

    /// The log this session replayed onto the file, as (entries, newest sequence number).
    fn log_replayed_onto_file(&self) -> Option<(usize, u64)> {
        lock(&self.session).as_ref().and_then(Session::replayed)
    }

    /// Physical sector size in bytes (512 or 4096).
    pub fn physical_sector_size(&self) -> u32 {
        self.meta.physical_sector_size
    }

    /// The DataWriteGuid in effect: what a child's parent_linkage must name.
    pub fn data_write_guid(&self) -> Uuid {
        guid(self.current_header().header.data_write_guid)
    }

    /// The parent, for differencing images.
    pub(crate) fn parent_image(&self) -> Option<&VhdxImage> {
        self.parent.as_ref().map(|(p, _)| &**p)
    }
}

impl Drop for VhdxImage {
    /// Empties the log if an earlier failure left it in use (best effort: if this fails too,
    /// the log stays valid and the next open replays it).
    fn drop(&mut self) {
        let session = self
            .session
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(session) = session {
            let _ = session.finish(self.view.file());
        }
    }
}

/// "1 entry", "3 entries".
fn entries_word(n: usize) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

/// Locks `m`; a panic elsewhere while it was held does not make the state unusable (every
/// update of the guarded state is complete or not begun).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BlockDevice for VhdxImage {
    fn size(&self) -> u64 {
        self.meta.disk_size
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_guest(buf, offset)
    }

    /// Syncs the file of a writable open (a read-only open has nothing to make durable).
    fn flush(&self) -> Result<()> {
        if lock(&self.session).is_some() {
            self.view.file().sync()?;
        }
        Ok(())
    }

    fn sector_size(&self) -> u32 {
        self.meta.logical_sector_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len())?;
        let bs = self.bat().block_size;
        for span in block_spans(offset, buf.len(), bs) {
            let part = &mut buf[span.buf];
            let entry = self.bat().payload(span.block).ok_or_else(|| {
                Error::new(ErrorKind::OutOfRange, "block outside the bat").with_offset(span.offset)
            })?;
            match (entry.state(), self.parent_image()) {
                (PAYLOAD_FULLY_PRESENT, _) => {
                    self.view.read_at(part, entry.host_offset() + span.within)?;
                }
                (PAYLOAD_PARTIALLY_PRESENT, Some(parent)) => {
                    self.read_partial(parent, part, span.block, span.within, entry)?;
                }
                (PAYLOAD_NOT_PRESENT, Some(parent)) => parent.read_at(part, span.offset)?,
                // ZERO reads zeros, also in a child. NOT_PRESENT in a base image, and UNMAPPED
                // and UNDEFINED everywhere, may read anything (MS-VHDX 2.5.1.1): zeros, never
                // stale bytes; the compactor frees trimmed blocks as ZERO, which keeps this.
                _ => part.fill(0),
            }
        }
        Ok(())
    }
}

impl DiskImage for VhdxImage {
    fn format(&self) -> &'static str {
        "vhdx"
    }

    fn kind(&self) -> ImageKind {
        if self.meta.parent.is_some() {
            ImageKind::Differencing
        } else if self.meta.leave_block_allocated {
            ImageKind::Fixed
        } else {
            ImageKind::Dynamic
        }
    }

    fn block_size(&self) -> u64 {
        self.bat().block_size
    }

    fn block_count(&self) -> u64 {
        self.bat().data_blocks
    }

    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        let bat = self.bat();
        let entry = bat.payload(block.0).ok_or_else(|| {
            Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "block {} is outside the {}-block disk",
                    block.0, bat.data_blocks
                ),
            )
        })?;
        let host = entry.host_offset();
        Ok(match entry.state() {
            PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => BlockState::Allocated {
                host: HostOffset(host),
            },
            PAYLOAD_ZERO => BlockState::Zero,
            PAYLOAD_NOT_PRESENT => BlockState::Unallocated,
            PAYLOAD_UNMAPPED | PAYLOAD_UNDEFINED => BlockState::Trimmed {
                host: entry
                    .kept_host(bat.block_size, self.view.len())
                    .map(HostOffset),
            },
            // Other states were refused at open.
            _ => BlockState::Unallocated,
        })
    }

    fn host_file(&self) -> &dyn HostFile {
        // The file as the image sees it: a pending log held in memory counts (its pages are
        // data, never holes), and the length is the one the log asks for.
        &self.view
    }

    fn details(&self) -> Vec<(String, String)> {
        let current = self.current_header();
        let h = &current.header;
        let log = match (self.log, self.log_replayed_onto_file()) {
            (_, Some((entries, sequence))) => format!(
                "empty ({} up to sequence {sequence} replayed onto the file before the first \
                 write)",
                entries_word(entries)
            ),
            (LogState::Empty, None) => "empty".to_string(),
            (LogState::ReplayedInMemory { entries, sequence }, None) => format!(
                "{} pending up to sequence {sequence}, replayed in memory only",
                entries_word(entries)
            ),
        };
        let mut details = vec![
            ("creator".into(), current.creator.clone()),
            ("block size".into(), self.bat().block_size.to_string()),
            (
                "logical sector size".into(),
                self.meta.logical_sector_size.to_string(),
            ),
            (
                "physical sector size".into(),
                self.meta.physical_sector_size.to_string(),
            ),
            ("log".into(), log),
            ("log size".into(), h.log_length.get().to_string()),
            (
                "header".into(),
                format!(
                    "{} (sequence {})",
                    current.index + 1,
                    h.sequence_number.get()
                ),
            ),
            ("virtual disk id".into(), self.meta.disk_id.to_string()),
            (
                "file write guid".into(),
                guid(h.file_write_guid).to_string(),
            ),
            (
                "data write guid".into(),
                guid(h.data_write_guid).to_string(),
            ),
            ("log guid".into(), guid(h.log_guid).to_string()),
            ("chunk ratio".into(), self.bat().chunk_ratio.to_string()),
        ];
        if let Some((_, path)) = &self.parent {
            details.push(("parent".into(), path.display().to_string()));
        }
        if let Some(locator) = &self.meta.parent {
            details.push(("parent linkage".into(), format!("{{{}}}", locator.linkage)));
            for l in &locator.paths {
                details.push((format!("parent {}", l.label), l.path.clone()));
            }
        }
        details
    }

    fn check(&self) -> Result<Vec<Problem>> {
        Ok(self.notes.clone())
    }

    /// The header section, every region (BAT and metadata included), the log and (differencing
    /// images) the sector bitmap blocks.
    fn host_metadata(&self) -> Result<Vec<std::ops::Range<u64>>> {
        let mut all = self.metadata_ranges();
        all.insert(0, 0..crate::format::HEADER_SECTION_LEN);
        Ok(all)
    }

    fn parent(&self) -> Option<&dyn DiskImage> {
        self.parent_image().map(|p| p as &dyn DiskImage)
    }

    fn parent_path(&self) -> Option<&Path> {
        self.parent.as_ref().map(|(_, path)| path.as_path())
    }

    /// A new DataWriteGuid, durable on return (once per session): children made against the
    /// old content no longer match this image. Fixed images too (retrim punches them).
    fn begin_content_change(&mut self) -> Result<()> {
        let session = crate::compact::writable(&mut self.session, &self.view)?;
        session.begin_data_write(self.view.file())
    }

    /// Replays a log found pending at open onto the file (see [`Session::replay_pending`]);
    /// nothing to do on a clean image. [`ErrorKind::ReadOnly`] on a read-only open with a
    /// pending log.
    fn prepare_write(&mut self) -> Result<()> {
        if !self.view.has_overlay() {
            return Ok(());
        }
        crate::compact::writable(&mut self.session, &self.view).map(|_| ())
    }

    fn implicit_changes(&self) -> Vec<String> {
        self.log_replayed_onto_file()
            .map(|(entries, sequence)| {
                format!(
                    "the pending log ({} up to sequence {sequence}) was replayed onto the file \
                     first: the file was changed; its content is what the log says",
                    entries_word(entries)
                )
            })
            .into_iter()
            .collect()
    }

    fn as_compactable(&mut self) -> Result<&mut dyn vdisk_core::Compactable> {
        Ok(self.compactable()?)
    }

    fn as_compactable_ref(&self) -> Result<&dyn vdisk_core::Compactable> {
        Ok(self.compactable_ref()?)
    }
}
