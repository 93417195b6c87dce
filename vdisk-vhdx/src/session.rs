//! A writing session: header updates by the two-header protocol (MS-VHDX 2.2.2), the
//! FileWriteGuid change before the first write, metadata updates through the log, and the
//! replay of a log found pending at open.
//!
//! ```text
//!  replay_pending: [before the first write: the pending log's entries to their places,
//!                   file extended by set_len, sync; new FileWriteGuid, LogGuid zero]
//!  log_pages:      [first write of the session: header with a new FileWriteGuid, sync]
//!                  entry (own tail) into the log, sync
//!                  header with LogGuid set (if not set yet), sync   ← the update is in effect
//!  apply:          pages to their places, sync
//!  finish:       header with LogGuid zero, sync                   ← the log is empty
//! ```
//!
//! Every header write goes to the non-current copy with the sequence number plus one, and is
//! synced before anything depends on it. A crash anywhere leaves either the old state (entry
//! not yet in effect) or a log whose newest entry replays the whole update.

use vdisk_core::{HostFile, Result};
use zerocopy::IntoBytes;

use crate::format::{HEADER_OFFSETS, Header};
use crate::header::CurrentHeader;
use crate::log::{Action, Sequence};
use crate::log_write::{EntryContent, LogWriter, Page};
use crate::overlay::HostView;

/// Zeros written per call when applying a zero range.
const ZERO_CHUNK: usize = 1 << 20;

/// The state of a writable open.
#[derive(Debug)]
pub(crate) struct Session {
    header: CurrentHeader,
    log: LogWriter,
    /// The FileWriteGuid was changed in this session.
    file_write_guid_changed: bool,
    /// The DataWriteGuid was changed in this session.
    data_write_guid_changed: bool,
    /// The header's LogGuid is set to ours.
    log_active: bool,
    /// An entry in effect whose pages may not all be on disk yet (an earlier apply failed).
    unapplied: Option<EntryContent>,
    /// Fewer pages per entry than the log allows (tests of updates split over entries).
    page_limit: Option<usize>,
    /// The log found at open, shown in memory only until the first write replays it.
    pending: Option<Sequence>,
    /// The pending log was replayed onto the file: (entries, newest sequence number).
    replayed: Option<(usize, u64)>,
}

impl Session {
    /// A session for the image whose current header is `header`; `pending` is the log
    /// sequence the header's LogGuid says is still to replay (shown in memory until then).
    pub(crate) fn new(header: CurrentHeader, pending: Option<Sequence>) -> Session {
        let h = &header.header;
        let log = LogWriter::new(h.log_offset.get(), h.log_length.get());
        Session {
            header,
            log,
            file_write_guid_changed: false,
            data_write_guid_changed: false,
            log_active: false,
            unapplied: None,
            page_limit: None,
            pending,
            replayed: None,
        }
    }

    /// The log replayed onto the file in this session, as (entries, newest sequence number).
    pub(crate) fn replayed(&self) -> Option<(usize, u64)> {
        self.replayed
    }

    /// Replays the log found pending at open onto the file, if not done yet: its entries to
    /// their places (the file extended by `set_len`, zeros written only over bytes the file
    /// already has), sync, then a new FileWriteGuid and an empty log in the header; `view`
    /// stops laying the log over the file. Every write of the session comes after this. A
    /// failure leaves the log pending and valid: the next call (or the next open) replays it
    /// again from the start, which gives the same bytes.
    pub(crate) fn replay_pending(&mut self, view: &HostView) -> Result<()> {
        let Some(sequence) = &self.pending else {
            return Ok(());
        };
        let file = view.file();
        replay_onto_file(file, sequence)?;
        let done = summary(sequence);
        self.pending = None;
        self.begin_write(file)?;
        self.update_header(file, |h| h.log_guid = [0; 16])?;
        self.replayed = Some(done);
        view.drop_overlay(file.len()?);
        Ok(())
    }

    /// The current header.
    pub(crate) fn header(&self) -> &CurrentHeader {
        &self.header
    }

    /// Most pages one commit may carry.
    pub(crate) fn max_pages(&self) -> usize {
        let max = self.log.max_pages(0);
        self.page_limit.map_or(max, |l| l.min(max))
    }

    /// Puts the next entry at `head` in the log (tests).
    #[cfg(all(test, unix))] // only the crash tests use it
    pub(crate) fn set_log_head(&mut self, head: u32) {
        self.log.set_head(head);
    }

    /// Caps the pages per entry (tests).
    #[cfg(all(test, unix))] // only the crash tests use it
    pub(crate) fn set_page_limit(&mut self, limit: usize) {
        self.page_limit = Some(limit);
    }

    /// Writes the non-current header with `change` applied and the sequence number plus one,
    /// and syncs; it becomes current.
    pub(crate) fn update_header(
        &mut self,
        file: &dyn HostFile,
        change: impl FnOnce(&mut Header),
    ) -> Result<()> {
        let (header, index) = next_header(&self.header, change);
        file.write_at(header.as_bytes(), HEADER_OFFSETS[index])?;
        file.sync()?;
        self.header.header = header;
        self.header.index = index;
        Ok(())
    }

    /// Changes the FileWriteGuid once per session, before the first write.
    pub(crate) fn begin_write(&mut self, file: &dyn HostFile) -> Result<()> {
        if self.pending.is_some() {
            // A new entry would overwrite the log before it was replayed.
            return Err(vdisk_core::Error::new(
                vdisk_core::ErrorKind::Io,
                "internal error: a write was started before the pending log was replayed; \
                 nothing was written",
            ));
        }
        if !self.file_write_guid_changed {
            let fwg = uuid::Uuid::new_v4().to_bytes_le();
            self.update_header(file, |h| h.file_write_guid = fwg)?;
            self.file_write_guid_changed = true;
        }
        Ok(())
    }

    /// Changes the DataWriteGuid once per session, before the first write that changes what
    /// the disk reads (MS-VHDX 2.2.2.1); the FileWriteGuid first if not done yet.
    pub(crate) fn begin_data_write(&mut self, file: &dyn HostFile) -> Result<()> {
        self.begin_write(file)?;
        if !self.data_write_guid_changed {
            let dwg = uuid::Uuid::new_v4().to_bytes_le();
            self.update_header(file, |h| h.data_write_guid = dwg)?;
            self.data_write_guid_changed = true;
        }
        Ok(())
    }

    /// Puts `pages` into effect through the log: on `Ok` the update is durable (a reopen
    /// replays it) but its pages may not be in place yet; [`Session::apply`] writes them.
    pub(crate) fn log_pages(&mut self, file: &dyn HostFile, pages: Vec<Page>) -> Result<()> {
        let len = file.len()?;
        self.commit_entry(
            file,
            EntryContent {
                pages,
                zeros: Vec::new(),
                flushed_file_offset: len,
                last_file_offset: len,
            },
        )
    }

    /// Logs an entry without pages that records `len` as the file size (before shrinking the
    /// file to it, MS-VHDX 2.3.1.1). The log is emptied first, so the entry starts a fresh
    /// sequence: no entry recording the larger size can be replayed after the file shrank.
    pub(crate) fn log_file_size(&mut self, file: &dyn HostFile, len: u64) -> Result<()> {
        self.finish(file)?;
        self.commit_entry(
            file,
            EntryContent {
                pages: Vec::new(),
                zeros: Vec::new(),
                flushed_file_offset: len,
                last_file_offset: len,
            },
        )
    }

    fn commit_entry(&mut self, file: &dyn HostFile, content: EntryContent) -> Result<()> {
        self.begin_write(file)?;
        self.apply(file)?;
        if !self.log_active {
            // Each use of the log gets its own LogGuid, so a reader replaying every entry of
            // a run (qemu) never meets entries of an earlier use, with a larger file size.
            self.log.renew_guid();
        }
        let length = self.log.write_entry(file, &content)?;
        file.sync()?;
        if !self.log_active {
            let guid = self.log.guid;
            self.update_header(file, |h| h.log_guid = guid)?;
            self.log_active = true;
        }
        self.log.advance(length);
        self.unapplied = Some(content);
        Ok(())
    }

    /// Writes the pages of the entry in effect (if any is not applied yet) to their places and
    /// syncs. A failed apply is repeated by the next call.
    pub(crate) fn apply(&mut self, file: &dyn HostFile) -> Result<()> {
        let Some(content) = &self.unapplied else {
            return Ok(());
        };
        for (at, page) in &content.pages {
            file.write_at(&page[..], *at)?;
        }
        for &(at, len) in &content.zeros {
            write_zeros(file, at, len)?;
        }
        file.sync()?;
        self.unapplied = None;
        Ok(())
    }

    /// Empties the log (LogGuid zero) once every entry is applied.
    pub(crate) fn finish(&mut self, file: &dyn HostFile) -> Result<()> {
        self.apply(file)?;
        if self.log_active {
            self.update_header(file, |h| h.log_guid = [0; 16])?;
            self.log_active = false;
        }
        Ok(())
    }
}

/// The header to write next: `change` applied, sequence number plus one, checksummed, for the
/// copy that is not current.
pub(crate) fn next_header(
    current: &CurrentHeader,
    change: impl FnOnce(&mut Header),
) -> (Header, usize) {
    let mut h = current.header;
    change(&mut h);
    h.sequence_number
        .set(current.header.sequence_number.get().wrapping_add(1));
    h.checksum.set(0);
    let crc = crc32c::crc32c(h.as_bytes());
    h.checksum.set(crc);
    (h, 1 - current.index.min(1))
}

/// Writes `len` zero bytes at `at` in bounded pieces.
pub(crate) fn write_zeros(file: &dyn HostFile, at: u64, len: u64) -> Result<()> {
    let zeros = vec![0u8; usize::try_from(len).map_or(ZERO_CHUNK, |l| l.min(ZERO_CHUNK))];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).map_or(zeros.len(), |r| r.min(zeros.len()));
        file.write_at(&zeros[..n], at + done)?;
        done += n as u64;
    }
    Ok(())
}

/// (entries, newest sequence number) of `sequence`.
fn summary(sequence: &Sequence) -> (usize, u64) {
    (
        sequence.entries.len(),
        sequence.head().map_or(0, |h| h.sequence),
    )
}

/// Writes the entries of `sequence` to their places in order and syncs. The file is first
/// grown with `set_len` to the size the newest entry records (or the end of the last range an
/// entry writes, if larger): new file space reads zero, so zero ranges are written only over
/// bytes that existed or that an earlier page of the sequence wrote. The ranges were bounded
/// at open (`log::check_bounds`), so this writes at most the file's plausible size.
pub(crate) fn replay_onto_file(file: &dyn HostFile, sequence: &Sequence) -> Result<()> {
    let old_len = file.len()?;
    let mut target = sequence.head().map_or(0, |h| h.last_file_offset);
    for entry in &sequence.entries {
        for action in &entry.actions {
            target = target.max(action_end(action));
        }
    }
    if target > old_len {
        file.set_len(target)?;
    }
    // Bytes at or past this offset read zero: new space no page has written yet.
    let mut written_end = old_len;
    for entry in &sequence.entries {
        for action in &entry.actions {
            match action {
                Action::Page(at, page) => {
                    file.write_at(&page[..], *at)?;
                    written_end = written_end.max(action_end(action));
                }
                Action::Zero(at, _) => {
                    let end = action_end(action).min(written_end);
                    if end > *at {
                        write_zeros(file, *at, end - at)?;
                    }
                }
            }
        }
    }
    file.sync()
}

/// The end of the file range `action` writes (bounded at open; saturating regardless).
fn action_end(action: &Action) -> u64 {
    match action {
        Action::Page(at, page) => at.saturating_add(page.len() as u64),
        Action::Zero(at, len) => at.saturating_add(*len),
    }
}
