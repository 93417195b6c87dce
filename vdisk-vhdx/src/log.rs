//! The metadata log: finding the active sequence of entries and replaying it.
//!
//! The log is a circular buffer of 4 KiB sectors. An entry is a header sector (64-byte header
//! followed by 32-byte descriptors), more descriptor sectors if needed, then one data sector
//! per data descriptor. Entries of one sequence follow each other with consecutive sequence
//! numbers; each records in `tail` where the oldest entry still needed starts. The active
//! sequence is the valid one with the highest sequence number whose last entry's tail lies
//! inside it; replaying means applying its entries from that tail to its end, in order.
//!
//! Replay here builds an [`Overlay`] in memory; the file is never written. Writable opens apply
//! the same sequence to the file (`image.rs`); writing entries is in `log_write.rs`.

use std::cell::Cell;

use vdisk_core::{Error, Result};
use zerocopy::FromBytes;

use crate::format::{
    DATA_DESC_SIGNATURE, DATA_SECTOR_SIGNATURE, DataDescriptor, DataSector, LOG_ENTRY_SIGNATURE,
    LOG_SECTOR, LOGGABLE_OFFSET, LogEntryHeader, MAX_FILE_END, ZERO_DESC_SIGNATURE, ZeroDescriptor,
    crc_with_zeroed_field,
};
use crate::overlay::Overlay;

/// Log sector size as an index type.
const SECTOR: usize = 4096;
/// Log sector size as a log offset.
const SECTOR32: u32 = 4096;
/// Entry header size as a log offset.
const HEADER32: u32 = 64;
/// Descriptor size as a log offset.
const DESCRIPTOR32: u32 = 32;
const _: () = assert!(HEADER32 as usize == HEADER && DESCRIPTOR32 as usize == DESCRIPTOR);
const _: () = assert!(SECTOR as u64 == LOG_SECTOR);
const HEADER: usize = size_of::<LogEntryHeader>();
const DESCRIPTOR: usize = size_of::<DataDescriptor>();

/// What one log descriptor does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Write this 4 KiB page at the offset.
    Page(u64, Box<[u8; SECTOR]>),
    /// Zero `len` bytes at the offset.
    Zero(u64, u64),
}

/// One valid log entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Offset of the entry in the log.
    pub offset: u32,
    /// Bytes of the entry.
    pub length: u32,
    /// Its sequence number.
    pub sequence: u64,
    /// Offset in the log of the sequence's oldest needed entry.
    pub tail: u32,
    /// File size that was durable when the entry was written.
    pub flushed_file_offset: u64,
    /// File size needed once the entry is applied.
    pub last_file_offset: u64,
    /// The descriptors, in order.
    pub actions: Vec<Action>,
}

/// The log as loaded at open: its bytes and where it lives.
#[derive(Debug)]
pub(crate) struct Log<'a> {
    /// The whole log region.
    pub bytes: &'a [u8],
    /// Host offset of the log.
    pub file_offset: u64,
    /// The header's LogGuid.
    pub guid: [u8; 16],
    /// Bytes the scan may still checksum: a damaged log cannot make the search quadratic.
    pub budget: Cell<u64>,
}

/// How many times the log length the search may checksum before giving up.
pub(crate) const SCAN_BUDGET_FACTOR: u64 = 16;

/// The active sequence, ready to replay.
#[derive(Debug, Clone)]
pub(crate) struct Sequence {
    /// Entries from the tail to the head, in replay order.
    pub entries: Vec<Entry>,
}

impl Sequence {
    /// The newest entry (its file offsets are the ones that count).
    pub(crate) fn head(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// Applies the entries in order to an in-memory overlay.
    pub(crate) fn overlay(&self) -> Overlay {
        let mut overlay = Overlay::new();
        for entry in &self.entries {
            for action in &entry.actions {
                match action {
                    Action::Page(offset, page) => overlay.write(*offset, page.to_vec()),
                    Action::Zero(offset, len) => {
                        overlay.zero(*offset, offset.saturating_add(*len));
                    }
                }
            }
        }
        overlay
    }
}

impl Log<'_> {
    fn len(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    /// `(offset + add) mod len`.
    fn wrap(&self, offset: u32, add: u32) -> u32 {
        let len = u64::from(self.len().max(1));
        u32::try_from((u64::from(offset) + u64::from(add)) % len).unwrap_or(0)
    }

    /// Bytes of the circular range `tail..head` (a full log when they are equal).
    fn span(&self, tail: u32, head: u32) -> u32 {
        if head > tail {
            head - tail
        } else {
            self.len() - tail + head
        }
    }

    /// Whether `at` lies in the circular range `tail..head`.
    fn within(&self, tail: u32, head: u32, at: u32) -> bool {
        at != head && self.span(at, head) <= self.span(tail, head)
    }

    /// The 4 KiB sector `index` sectors after `start`, wrapping.
    fn sector(&self, start: u32, index: u32) -> &[u8] {
        let at = self.wrap(start, index.saturating_mul(SECTOR32)) as usize;
        self.bytes.get(at..at + SECTOR).unwrap_or(&[])
    }

    /// Parses and fully validates the entry at `offset`; `None` if it is not a valid entry.
    pub(crate) fn entry_at(&self, offset: u32) -> Option<Entry> {
        let first = self.sector(offset, 0);
        let header = LogEntryHeader::read_from_bytes(first.get(..HEADER)?).ok()?;
        if header.signature != LOG_ENTRY_SIGNATURE || header.log_guid != self.guid {
            return None;
        }
        let length = header.entry_length.get();
        let tail = header.tail.get();
        let sequence = header.sequence_number.get();
        if length == 0
            || !length.is_multiple_of(SECTOR32)
            || length >= self.len()
            || !tail.is_multiple_of(SECTOR32)
            || tail >= self.len()
        {
            return None;
        }
        let count = header.descriptor_count.get();
        let max_count = (length as usize - HEADER) / DESCRIPTOR;
        if count as usize > max_count {
            return None;
        }
        let desc_sectors = (HEADER32 + count * DESCRIPTOR32).div_ceil(SECTOR32);
        let sectors = length / SECTOR32;

        // Checksum over the whole entry with the checksum field zeroed.
        let left = self.budget.get();
        if left < u64::from(length) {
            self.budget.set(0);
            return None;
        }
        self.budget.set(left - u64::from(length));
        let mut crc = crc_with_zeroed_field(first, 4);
        for i in 1..sectors {
            crc = crc32c::crc32c_append(crc, self.sector(offset, i));
        }
        if crc != header.checksum.get() {
            return None;
        }

        let log_start = self.file_offset;
        let log_end = self.file_offset + u64::from(self.len());
        let targets_ok = |at: u64, len: u64| {
            at.is_multiple_of(LOG_SECTOR)
                && at >= LOGGABLE_OFFSET
                && at
                    .checked_add(len)
                    .is_some_and(|end| end <= MAX_FILE_END && (end <= log_start || at >= log_end))
        };

        let mut actions = Vec::with_capacity(count as usize);
        let mut data_sector = desc_sectors;
        for i in 0..count {
            let pos = HEADER32 + i * DESCRIPTOR32;
            let sector = self.sector(offset, pos / SECTOR32);
            let within = (pos % SECTOR32) as usize;
            let raw = sector.get(within..within + DESCRIPTOR)?;
            let signature: [u8; 4] = raw.get(..4)?.try_into().ok()?;
            if signature == ZERO_DESC_SIGNATURE {
                let d = ZeroDescriptor::read_from_bytes(raw).ok()?;
                let (at, len) = (d.file_offset.get(), d.zero_length.get());
                if d.sequence_number.get() != sequence
                    || len % LOG_SECTOR != 0
                    || !targets_ok(at, len)
                {
                    return None;
                }
                actions.push(Action::Zero(at, len));
            } else if signature == DATA_DESC_SIGNATURE {
                let d = DataDescriptor::read_from_bytes(raw).ok()?;
                let at = d.file_offset.get();
                if d.sequence_number.get() != sequence || !targets_ok(at, LOG_SECTOR) {
                    return None;
                }
                if data_sector >= sectors {
                    return None;
                }
                let s = DataSector::read_from_bytes(self.sector(offset, data_sector)).ok()?;
                data_sector += 1;
                if s.signature != DATA_SECTOR_SIGNATURE
                    || u64::from(s.sequence_high.get()) != sequence >> 32
                    || u64::from(s.sequence_low.get()) != sequence & 0xffff_ffff
                {
                    return None;
                }
                let mut page = Box::new([0u8; SECTOR]);
                page[..8].copy_from_slice(&d.leading_bytes);
                page[8..SECTOR - 4].copy_from_slice(&s.data);
                page[SECTOR - 4..].copy_from_slice(&d.trailing_bytes);
                actions.push(Action::Page(at, page));
            } else {
                return None;
            }
        }
        if header.last_file_offset.get() > MAX_FILE_END {
            return None;
        }
        if data_sector != sectors {
            // The length must be exactly descriptors plus data sectors.
            return None;
        }
        Some(Entry {
            offset,
            length,
            sequence,
            tail,
            flushed_file_offset: header.flushed_file_offset.get(),
            last_file_offset: header.last_file_offset.get(),
            actions,
        })
    }

    /// The longest run of valid, consecutive entries starting at `start`, if its last entry's
    /// tail lies inside it.
    fn run_from(&self, start: u32) -> Option<(Vec<Entry>, u32)> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut head = start;
        let mut used: u64 = 0;
        while let Some(entry) = self.entry_at(head) {
            let new_head = self.wrap(head, entry.length);
            if let Some(prev) = entries.last() {
                let tail = prev.tail;
                let free = self.len() - self.span(tail, head);
                if Some(entry.sequence) != prev.sequence.checked_add(1)
                    || entry.length > free
                    || !self.within(tail, new_head, entry.tail)
                {
                    break;
                }
            }
            used += u64::from(entry.length);
            if used >= u64::from(self.len()) {
                break;
            }
            head = new_head;
            entries.push(entry);
        }
        // The newest entry's tail must point at one of the run's entries.
        let last = entries.last()?;
        if !entries.iter().any(|e| e.offset == last.tail) {
            return None;
        }
        Some((entries, head))
    }

    /// Finds the active sequence. `None` if the log holds no valid sequence.
    pub(crate) fn active_sequence(&self) -> Option<Sequence> {
        let mut best: Option<Vec<Entry>> = None;
        let mut start: u32 = 0;
        while start < self.len() {
            match self.run_from(start) {
                Some((entries, head)) => {
                    let newest = entries.last().map_or(0, |e| e.sequence);
                    if best
                        .as_ref()
                        .and_then(|b| b.last())
                        .is_none_or(|b| newest > b.sequence)
                    {
                        best = Some(entries);
                    }
                    if head <= start {
                        break;
                    }
                    start = head;
                }
                None => start += SECTOR32,
            }
        }
        let entries = best?;
        // Replay starts at the head entry's tail: drop older entries before it.
        let tail = entries.last()?.tail;
        let skip = entries.iter().position(|e| e.offset == tail)?;
        Some(Sequence {
            entries: entries.into_iter().skip(skip).collect(),
        })
    }
}

/// Finds and checks the active sequence of `log` for a file of `file_len` bytes.
pub(crate) fn find_active(log: &Log<'_>, file_len: u64) -> Result<Sequence> {
    let sequence = log.active_sequence();
    if log.budget.get() == 0 {
        return Err(Error::invalid(
            "the log is too damaged to search for its active sequence; the file was not changed",
            log.file_offset,
        ));
    }
    let sequence = sequence.ok_or_else(|| {
        Error::invalid(
            "the header says the log holds entries to replay, but no valid log sequence was \
             found (bad checksum, log guid or sequence numbers); the file was not changed",
            log.file_offset,
        )
    })?;
    let Some(head) = sequence.head() else {
        return Err(Error::invalid("empty log sequence", log.file_offset));
    };
    if file_len < head.flushed_file_offset {
        return Err(Error::invalid(
            format!(
                "file is truncated: it is {file_len} bytes but its log says {} bytes were \
                 already written",
                head.flushed_file_offset
            ),
            log.file_offset + u64::from(head.offset),
        ));
    }
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;
    use zerocopy::byteorder::little_endian::{U32, U64};

    use super::*;

    const GUID: [u8; 16] = [7; 16];
    const LOG_AT: u64 = 1 << 20;

    /// Builds one entry by hand, independently of `log_write.rs`, so the reader is tested
    /// against a second implementation.
    fn entry(seq: u64, tail: u32, pages: &[(u64, u8)], zeros: &[(u64, u64)]) -> Vec<u8> {
        let count = u32::try_from(pages.len() + zeros.len()).unwrap();
        let desc_len = (HEADER32 + count * DESCRIPTOR32).div_ceil(SECTOR32) * SECTOR32;
        let length = desc_len + u32::try_from(pages.len()).unwrap() * SECTOR32;
        let mut b = vec![0u8; length as usize];
        let h = LogEntryHeader {
            signature: LOG_ENTRY_SIGNATURE,
            checksum: U32::new(0),
            entry_length: U32::new(length),
            tail: U32::new(tail),
            sequence_number: U64::new(seq),
            descriptor_count: U32::new(count),
            reserved: U32::new(0),
            log_guid: GUID,
            flushed_file_offset: U64::new(4 << 20),
            last_file_offset: U64::new(4 << 20),
        };
        b[..HEADER].copy_from_slice(h.as_bytes());
        let mut pos = HEADER;
        for (i, &(at, fill)) in pages.iter().enumerate() {
            let page = [fill; SECTOR];
            let d = DataDescriptor {
                signature: DATA_DESC_SIGNATURE,
                trailing_bytes: page[SECTOR - 4..].try_into().unwrap(),
                leading_bytes: page[..8].try_into().unwrap(),
                file_offset: U64::new(at),
                sequence_number: U64::new(seq),
            };
            b[pos..pos + DESCRIPTOR].copy_from_slice(d.as_bytes());
            pos += DESCRIPTOR;
            let s = DataSector {
                signature: DATA_SECTOR_SIGNATURE,
                sequence_high: U32::new(u32::try_from(seq >> 32).unwrap()),
                data: page[8..SECTOR - 4].try_into().unwrap(),
                sequence_low: U32::new(u32::try_from(seq & 0xffff_ffff).unwrap()),
            };
            let at = desc_len as usize + i * SECTOR;
            b[at..at + SECTOR].copy_from_slice(s.as_bytes());
        }
        for &(at, len) in zeros {
            let d = ZeroDescriptor {
                signature: ZERO_DESC_SIGNATURE,
                reserved: U32::new(0),
                zero_length: U64::new(len),
                file_offset: U64::new(at),
                sequence_number: U64::new(seq),
            };
            b[pos..pos + DESCRIPTOR].copy_from_slice(d.as_bytes());
            pos += DESCRIPTOR;
        }
        let crc = crc32c::crc32c(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Places `entry` at `offset` in a circular log of `log.len()` bytes.
    fn put(log: &mut [u8], offset: usize, entry: &[u8]) {
        for (i, &byte) in entry.iter().enumerate() {
            let n = log.len();
            log[(offset + i) % n] = byte;
        }
    }

    fn active(bytes: &[u8]) -> Option<Sequence> {
        let log = Log {
            bytes,
            file_offset: LOG_AT,
            guid: GUID,
            budget: Cell::new(SCAN_BUDGET_FACTOR * bytes.len() as u64),
        };
        log.active_sequence()
    }

    fn page_at(seq: &Sequence, at: u64) -> Option<u8> {
        let mut v = crate::overlay::HostView::new(Box::new(vdisk_core::MemFile::from_bytes(vec![
                0xee;
                8 << 20
            ])))
        .unwrap();
        v.set_overlay(seq.overlay(), 0);
        let mut b = [0u8; SECTOR];
        v.read_at(&mut b, at).ok()?;
        b.iter().all(|&x| x == b[0]).then_some(b[0])
    }

    #[test]
    fn consecutive_entries_replay_in_order_newest_wins() {
        let mut log = vec![0u8; 64 * SECTOR];
        let a = entry(5, 0, &[(0x30_0000, 1), (0x30_1000, 2)], &[]);
        let b = entry(6, 0, &[(0x30_0000, 3)], &[(0x30_1000, 0x1000)]);
        put(&mut log, 0, &a);
        put(&mut log, a.len(), &b);
        let seq = active(&log).unwrap();
        assert_eq!(seq.entries.len(), 2);
        assert_eq!(page_at(&seq, 0x30_0000), Some(3));
        assert_eq!(page_at(&seq, 0x30_1000), Some(0));
        assert_eq!(page_at(&seq, 0x30_2000), Some(0xee));
    }

    #[test]
    fn replay_starts_at_the_head_entrys_tail() {
        let mut log = vec![0u8; 64 * SECTOR];
        let a = entry(5, 0, &[(0x30_0000, 1)], &[]);
        let b_at = u32::try_from(a.len()).unwrap();
        let b = entry(6, b_at, &[(0x30_1000, 2)], &[]);
        put(&mut log, 0, &a);
        put(&mut log, a.len(), &b);
        let seq = active(&log).unwrap();
        assert_eq!(seq.entries.len(), 1);
        assert_eq!(
            page_at(&seq, 0x30_0000),
            Some(0xee),
            "entry 5 was already applied"
        );
        assert_eq!(page_at(&seq, 0x30_1000), Some(2));
    }

    #[test]
    fn sequence_wrapping_around_the_end_of_the_log_is_found() {
        let mut log = vec![0u8; 16 * SECTOR];
        let a = entry(9, 12 * SECTOR32, &[(0x30_0000, 4)], &[]);
        let b = entry(10, 12 * SECTOR32, &[(0x30_1000, 5), (0x30_2000, 6)], &[]);
        assert_eq!(b.len(), 3 * SECTOR);
        put(&mut log, 12 * SECTOR, &a);
        put(&mut log, 14 * SECTOR, &b); // sectors 14, 15, 0
        let seq = active(&log).unwrap();
        assert_eq!(seq.entries.len(), 2);
        assert_eq!(page_at(&seq, 0x30_2000), Some(6));
    }

    #[test]
    fn the_sequence_with_the_highest_number_wins() {
        let mut log = vec![0u8; 64 * SECTOR];
        put(&mut log, 0, &entry(3, 0, &[(0x30_0000, 1)], &[]));
        put(
            &mut log,
            20 * SECTOR,
            &entry(8, 20 * SECTOR32, &[(0x30_0000, 2)], &[]),
        );
        put(
            &mut log,
            40 * SECTOR,
            &entry(4, 40 * SECTOR32, &[(0x30_0000, 3)], &[]),
        );
        let seq = active(&log).unwrap();
        assert_eq!(seq.head().unwrap().sequence, 8);
        assert_eq!(page_at(&seq, 0x30_0000), Some(2));
    }

    #[test]
    fn a_gap_in_sequence_numbers_ends_the_run() {
        let mut log = vec![0u8; 64 * SECTOR];
        let a = entry(5, 0, &[(0x30_0000, 1)], &[]);
        // Seq 7 claims entry 5 as its tail but does not follow it: not a valid sequence.
        let b = entry(7, 0, &[(0x30_0000, 2)], &[]);
        put(&mut log, 0, &a);
        put(&mut log, a.len(), &b);
        let seq = active(&log).unwrap();
        assert_eq!(seq.head().unwrap().sequence, 5);
        assert_eq!(page_at(&seq, 0x30_0000), Some(1));
    }

    #[test]
    fn entries_aimed_at_headers_or_the_log_itself_are_invalid() {
        for target in [0x1_0000, LOG_AT, LOG_AT + 0x1000] {
            let mut log = vec![0u8; 64 * SECTOR];
            put(&mut log, 0, &entry(5, 0, &[(target, 1)], &[]));
            assert!(active(&log).is_none(), "target {target:#x}");
        }
        let mut log = vec![0u8; 64 * SECTOR];
        put(&mut log, 0, &entry(5, 0, &[], &[(0x20_0000, !0xfff_u64)]));
        assert!(
            active(&log).is_none(),
            "zero range overflowing into the log"
        );
    }

    #[test]
    fn wrong_guid_or_checksum_is_no_entry() {
        let mut log = vec![0u8; 64 * SECTOR];
        let mut a = entry(5, 0, &[(0x30_0000, 1)], &[]);
        a[100] ^= 1;
        put(&mut log, 0, &a);
        assert!(active(&log).is_none());
        let mut log = vec![0u8; 64 * SECTOR];
        put(&mut log, 0, &entry(5, 0, &[(0x30_0000, 1)], &[]));
        let other = Log {
            bytes: &log,
            file_offset: LOG_AT,
            guid: [8; 16],
            budget: Cell::new(u64::MAX),
        };
        assert!(other.active_sequence().is_none());
    }
}
