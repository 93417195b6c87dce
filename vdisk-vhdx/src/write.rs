//! Guest writes on a writable open.
//!
//! ```text
//!  write_at  ─► range check; the session lock is held to the end (writes are serialised)
//!            ─► first write that changes reads: new FileWriteGuid, new DataWriteGuid (headers)
//!  per block:  FULLY_PRESENT          the bytes in place (payload never goes through the log)
//!              other state, all zero  nothing (the block already reads zeros)
//!              other state, data      a new block at the 1 MiB-aligned end of everything used:
//!                                     the file grows (zeros), the bytes go in
//!            ─► sync ─► BAT entries FULLY_PRESENT through the log (compact::log_bat_changes)
//! ```
//!
//! Differencing images: a block is never allocated PARTIALLY_PRESENT. A write to a
//! NOT_PRESENT block allocates it FULLY_PRESENT with the parent's data copied around the
//! written bytes (a zero write over a parent range that reads zeros writes nothing); a write to
//! a PARTIALLY_PRESENT block first copies the parent's data into the sectors the block does not
//! hold, in place, then the block becomes FULLY_PRESENT. Either way nothing the child reads
//! changes before the BAT update, except the written bytes themselves.
//!
//! A crash before the BAT update leaves the old content (plus unused space at the end, which
//! compaction reclaims); after it, the new. New blocks are zeros apart from the bytes written,
//! so a ZERO, UNMAPPED or UNDEFINED block reads zeros around them.

use std::collections::BTreeMap;

use vdisk_core::{Error, ErrorKind, Result, align_up, block_spans, check_range, is_zero};

use crate::bat::BatEntry;
use crate::compact::log_bat_changes;
use crate::format::{MIB, PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_PARTIALLY_PRESENT};
use crate::image::{VhdxImage, lock};

impl VhdxImage {
    /// Writes `buf` at virtual `offset` (byte-granular); see the module doc.
    pub(crate) fn write_guest(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(vdisk_core::BlockDevice::size(self), offset, buf.len())?;
        let mut guard = lock(&self.session);
        let Some(session) = guard.as_mut() else {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "the image was opened read-only; nothing was written",
            ));
        };
        if buf.is_empty() {
            return Ok(());
        }
        session.replay_pending(&self.view)?;
        let file = self.view.file();
        let bs = self.bat().block_size;
        let blocks = offset / bs..=(offset + buf.len() as u64 - 1) / bs;
        let allocates = blocks.clone().any(|b| {
            self.bat()
                .payload(b)
                .is_some_and(|e| e.state() != PAYLOAD_FULLY_PRESENT)
        });
        let log_len = self.header.header.log_length.get();
        if allocates && u64::from(log_len) < MIB {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the image's log is {log_len} bytes; vdisk allocates vhdx blocks only \
                     through a log of at least 1 MiB (nothing was written)"
                ),
            ));
        }
        let mut changes = BTreeMap::new();
        let mut next_free: Option<u64> = None;
        for span in block_spans(offset, buf.len(), bs) {
            let (block, within, pos) = (span.block, span.within, span.offset);
            let part = &buf[span.buf];
            let (entry, index) = {
                let bat = self.bat();
                (bat.payload(block), bat.payload_index(block))
            };
            let entry = entry.ok_or_else(|| {
                Error::new(ErrorKind::OutOfRange, "block outside the bat").with_offset(pos)
            })?;
            if entry.state() == PAYLOAD_FULLY_PRESENT {
                session.begin_data_write(file)?;
                file.write_at(part, entry.host_offset() + within)?;
                continue;
            }
            let parent = self.parent_image();
            if let (PAYLOAD_PARTIALLY_PRESENT, Some(parent)) = (entry.state(), parent) {
                // Made whole in place: the parent's data into the sectors the block does not
                // hold (invisible while it is PARTIALLY_PRESENT), then FULLY_PRESENT below.
                session.begin_data_write(file)?;
                self.fill_from_parent(file, parent, block, entry.host_offset(), true)?;
                file.write_at(part, entry.host_offset() + within)?;
                changes.insert(
                    index,
                    BatEntry(entry.0 & !7 | u64::from(PAYLOAD_FULLY_PRESENT)),
                );
                continue;
            }
            // NOT_PRESENT in a child reads the parent; every other state reads zeros.
            let through = parent.filter(|_| entry.state() == PAYLOAD_NOT_PRESENT);
            if is_zero(part) && !self.parent_shows_data(through, pos, part.len())? {
                continue;
            }
            session.begin_data_write(file)?;
            let at = match next_free {
                Some(at) => at,
                None => align_up(self.used_end().max(file.len()?), MIB).ok_or_else(|| {
                    Error::new(ErrorKind::NoSpace, "the image file cannot grow further")
                })?,
            };
            let end = at.checked_add(bs).ok_or_else(|| {
                Error::new(ErrorKind::NoSpace, "the image file cannot grow further")
            })?;
            file.set_len(end)?;
            if let Some(parent) = through
                && part.len() as u64 != bs
            {
                self.fill_from_parent(file, parent, block, at, false)?;
            }
            file.write_at(part, at + within)?;
            next_free = Some(end);
            changes.insert(
                index,
                BatEntry((at / MIB) << 20 | u64::from(PAYLOAD_FULLY_PRESENT)),
            );
        }
        if changes.is_empty() {
            return Ok(());
        }
        // The new blocks are durable before the BAT points at them.
        file.sync()?;
        if let Some(end) = next_free {
            self.view.set_file_len(end);
        }
        let mut bat = self
            .bat
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log_bat_changes(session, file, &mut bat, &changes)
    }

    /// Whether `parent` (if any) reads anything but zeros in `len` bytes at `offset`.
    fn parent_shows_data(
        &self,
        parent: Option<&dyn vdisk_core::DiskImage>,
        offset: u64,
        len: usize,
    ) -> Result<bool> {
        let Some(parent) = parent else {
            return Ok(false);
        };
        let mut buf = vec![0u8; len.min(1 << 20)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len());
            parent.read_at(&mut buf[..n], offset + done as u64)?;
            if !is_zero(&buf[..n]) {
                return Ok(true);
            }
            done += n;
        }
        Ok(false)
    }
}
