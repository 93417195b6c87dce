//! Writing the metadata log: building entries (MS-VHDX 2.3.1) and placing them in the
//! circular log region.
//!
//! Every entry this writer makes is its own tail: it is applied to the file (and made durable)
//! before the next one is written, so replay never needs more than the newest entry. An entry
//! is at most half the log, so writing one never overwrites the previous one, which stays the
//! valid head of the log until the new one is complete.

use vdisk_core::{Error, HostFile, Result};
use zerocopy::IntoBytes;
use zerocopy::byteorder::little_endian::{U32, U64};

use crate::format::{
    DATA_DESC_SIGNATURE, DATA_SECTOR_SIGNATURE, DataDescriptor, DataSector, LOG_ENTRY_SIGNATURE,
    LOG_SECTOR, LogEntryHeader, ZERO_DESC_SIGNATURE, ZeroDescriptor,
};

/// Log sector size as an index type.
pub(crate) const PAGE: usize = 4096;
const HEADER: usize = size_of::<LogEntryHeader>();
const DESCRIPTOR: usize = size_of::<DataDescriptor>();
const _: () = assert!(PAGE as u64 == LOG_SECTOR);

/// A 4 KiB page to write at a 4 KiB-aligned host offset.
pub(crate) type Page = (u64, Box<[u8; PAGE]>);

/// What one entry carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryContent {
    /// Pages to write, in order.
    pub pages: Vec<Page>,
    /// Ranges `(offset, len)` to zero (4 KiB multiples).
    pub zeros: Vec<(u64, u64)>,
    /// File size known durable when the entry is written.
    pub flushed_file_offset: u64,
    /// File size the entry needs once applied.
    pub last_file_offset: u64,
}

/// Sectors an entry with `pages` data descriptors and `zeros` zero descriptors takes.
fn entry_sectors(pages: usize, zeros: usize) -> usize {
    (HEADER + (pages + zeros) * DESCRIPTOR).div_ceil(PAGE) + pages
}

/// Builds the bytes of one entry (header and descriptor sectors, then one data sector per
/// page), checksummed with CRC-32C.
pub(crate) fn build_entry(
    guid: [u8; 16],
    sequence: u64,
    tail: u32,
    content: &EntryContent,
) -> Result<Vec<u8>> {
    let count = content.pages.len() + content.zeros.len();
    let desc_len = (HEADER + count * DESCRIPTOR).div_ceil(PAGE) * PAGE;
    let length = desc_len + content.pages.len() * PAGE;
    let too_big = || Error::invalid("log entry too large", 0);
    let header = LogEntryHeader {
        signature: LOG_ENTRY_SIGNATURE,
        checksum: U32::new(0),
        entry_length: U32::new(u32::try_from(length).map_err(|_| too_big())?),
        tail: U32::new(tail),
        sequence_number: U64::new(sequence),
        descriptor_count: U32::new(u32::try_from(count).map_err(|_| too_big())?),
        reserved: U32::new(0),
        log_guid: guid,
        flushed_file_offset: U64::new(content.flushed_file_offset),
        last_file_offset: U64::new(content.last_file_offset),
    };
    let mut b = vec![0u8; length];
    b[..HEADER].copy_from_slice(header.as_bytes());
    let mut pos = HEADER;
    for (i, (at, page)) in content.pages.iter().enumerate() {
        let mut leading = [0u8; 8];
        leading.copy_from_slice(&page[..8]);
        let mut trailing = [0u8; 4];
        trailing.copy_from_slice(&page[PAGE - 4..]);
        let d = DataDescriptor {
            signature: DATA_DESC_SIGNATURE,
            trailing_bytes: trailing,
            leading_bytes: leading,
            file_offset: U64::new(*at),
            sequence_number: U64::new(sequence),
        };
        b[pos..pos + DESCRIPTOR].copy_from_slice(d.as_bytes());
        pos += DESCRIPTOR;
        let mut data = [0u8; PAGE - 12];
        data.copy_from_slice(&page[8..PAGE - 4]);
        let s = DataSector {
            signature: DATA_SECTOR_SIGNATURE,
            sequence_high: U32::new((sequence >> 32) as u32),
            data,
            sequence_low: U32::new((sequence & 0xffff_ffff) as u32),
        };
        let at = desc_len + i * PAGE;
        b[at..at + PAGE].copy_from_slice(s.as_bytes());
    }
    for &(at, len) in &content.zeros {
        let d = ZeroDescriptor {
            signature: ZERO_DESC_SIGNATURE,
            reserved: U32::new(0),
            zero_length: U64::new(len),
            file_offset: U64::new(at),
            sequence_number: U64::new(sequence),
        };
        b[pos..pos + DESCRIPTOR].copy_from_slice(d.as_bytes());
        pos += DESCRIPTOR;
    }
    let crc = crc32c::crc32c(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

/// Where the next entry goes in the circular log, and with what sequence number.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    /// Host offset of the log region.
    log_offset: u64,
    /// Length of the log region.
    log_len: u32,
    /// The LogGuid of this writing session.
    pub guid: [u8; 16],
    /// Log offset of the next entry.
    head: u32,
    /// Sequence number of the next entry.
    sequence: u64,
}

impl LogWriter {
    /// A writer for the log at `log_offset` of `log_len` bytes (a multiple of 1 MiB), with a
    /// fresh LogGuid: entries left in the log by earlier sessions never join its sequences.
    pub(crate) fn new(log_offset: u64, log_len: u32) -> LogWriter {
        LogWriter {
            log_offset,
            log_len,
            guid: uuid::Uuid::new_v4().to_bytes_le(),
            head: 0,
            sequence: 1,
        }
    }

    /// Most pages one entry may carry (with `zeros` zero descriptors), so that the entry takes
    /// at most half the log.
    pub(crate) fn max_pages(&self, zeros: usize) -> usize {
        let half = self.log_len as usize / 2 / PAGE;
        let mut n = half;
        while n > 0 && entry_sectors(n, zeros) > half {
            n -= 1;
        }
        n
    }

    /// Writes `content` as the next entry (its own tail) at the head of the log, wrapping at
    /// the end of the region. Not durable until the caller syncs. The head and sequence
    /// number only advance on [`LogWriter::advance`], once the entry is in effect.
    pub(crate) fn write_entry(&self, file: &dyn HostFile, content: &EntryContent) -> Result<u32> {
        if entry_sectors(content.pages.len(), content.zeros.len()) * PAGE
            > self.log_len as usize / 2
        {
            return Err(Error::invalid(
                "log entry larger than half the log",
                self.log_offset,
            ));
        }
        let bytes = build_entry(self.guid, self.sequence, self.head, content)?;
        let to_end = (self.log_len - self.head) as usize;
        let (first, rest) = bytes.split_at(bytes.len().min(to_end));
        file.write_at(first, self.log_offset + u64::from(self.head))?;
        if !rest.is_empty() {
            file.write_at(rest, self.log_offset)?;
        }
        u32::try_from(bytes.len())
            .map_err(|_| Error::invalid("log entry too large", self.log_offset))
    }

    /// Takes a fresh LogGuid: entries written before are no longer part of any sequence
    /// (qemu replays a whole run of consecutive entries, not just from the newest's tail).
    pub(crate) fn renew_guid(&mut self) {
        self.guid = uuid::Uuid::new_v4().to_bytes_le();
    }

    /// Moves the head (tests of entries that wrap around the end of the log).
    #[cfg(all(test, unix))] // only the crash tests use it
    pub(crate) fn set_head(&mut self, head: u32) {
        self.head = head % self.log_len.max(1);
    }

    /// Moves past an entry of `length` bytes written by [`LogWriter::write_entry`].
    pub(crate) fn advance(&mut self, length: u32) {
        let next = (u64::from(self.head) + u64::from(length)) % u64::from(self.log_len.max(1));
        self.head = u32::try_from(next).unwrap_or(0);
        self.sequence += 1;
    }
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "test fill bytes and entry lengths are small"
)]
mod tests {
    use std::cell::Cell;

    use vdisk_core::MemFile;

    use super::*;
    use crate::log::{Log, SCAN_BUDGET_FACTOR, Sequence};
    use crate::overlay::HostView;

    const LOG_AT: u64 = 1 << 20;

    fn page(fill: u8) -> Box<[u8; PAGE]> {
        let mut p = Box::new([fill; PAGE]);
        // Distinct leading and trailing bytes, which travel in the descriptor.
        p[..8].copy_from_slice(&[fill ^ 1, 2, 3, 4, 5, 6, 7, fill]);
        p[PAGE - 4..].copy_from_slice(&[9, fill, 11, 12]);
        p
    }

    fn active(file: &MemFile, log_len: u32, guid: [u8; 16]) -> Option<Sequence> {
        let mut bytes = vec![0u8; log_len as usize];
        file.read_at(&mut bytes, LOG_AT).unwrap();
        let log = Log {
            bytes: &bytes,
            file_offset: LOG_AT,
            guid,
            budget: Cell::new(SCAN_BUDGET_FACTOR * u64::from(log_len)),
        };
        log.active_sequence()
    }

    fn replayed(seq: &Sequence, at: u64, len: usize) -> Vec<u8> {
        let mut v = HostView::new(Box::new(MemFile::from_bytes(vec![0xee; 8 << 20]))).unwrap();
        v.set_overlay(seq.overlay(), 0);
        let mut b = vec![0u8; len];
        v.read_at(&mut b, at).unwrap();
        b
    }

    fn content(pages: Vec<Page>, zeros: Vec<(u64, u64)>) -> EntryContent {
        EntryContent {
            pages,
            zeros,
            flushed_file_offset: 8 << 20,
            last_file_offset: 8 << 20,
        }
    }

    #[test]
    fn written_entry_replays_pages_and_zeros_identically() {
        let file = MemFile::from_bytes(vec![0; 4 << 20]);
        let mut w = LogWriter::new(LOG_AT, 1 << 20);
        let c = content(
            vec![(0x30_0000, page(1)), (0x30_2000, page(2))],
            vec![(0x30_4000, 0x2000)],
        );
        let len = w.write_entry(&file, &c).unwrap();
        w.advance(len);
        let seq = active(&file, 1 << 20, w.guid).unwrap();
        assert_eq!(seq.entries.len(), 1);
        assert_eq!(seq.head().unwrap().last_file_offset, 8 << 20);
        assert_eq!(replayed(&seq, 0x30_0000, PAGE), page(1).to_vec());
        assert_eq!(replayed(&seq, 0x30_1000, PAGE), vec![0xee; PAGE]);
        assert_eq!(replayed(&seq, 0x30_2000, PAGE), page(2).to_vec());
        assert_eq!(replayed(&seq, 0x30_4000, 0x2000), vec![0; 0x2000]);
        assert!(
            active(&file, 1 << 20, [3; 16]).is_none(),
            "another guid sees nothing"
        );
    }

    #[test]
    fn entries_wrapping_around_the_log_end_replay_the_newest() {
        let file = MemFile::from_bytes(vec![0; 4 << 20]);
        let mut w = LogWriter::new(LOG_AT, 1 << 20);
        // Entries of 1 + k pages walk the head around the 1 MiB log several times.
        let mut wrapped = 0;
        for i in 0..200u32 {
            let k = (i % 7) as usize + 1;
            let pages = (0..k)
                .map(|j| (0x30_0000 + j as u64 * 0x1000, page((i + j as u32) as u8)))
                .collect();
            let before = w.head;
            let len = w.write_entry(&file, &content(pages, vec![])).unwrap();
            w.advance(len);
            if w.head < before {
                wrapped += 1;
            }
            let seq = active(&file, 1 << 20, w.guid).unwrap();
            assert_eq!(seq.head().unwrap().sequence, u64::from(i) + 1);
            assert_eq!(seq.entries.len(), 1, "each entry is its own tail");
            for j in 0..k {
                let want = page((i + j as u32) as u8).to_vec();
                assert_eq!(
                    replayed(&seq, 0x30_0000 + j as u64 * 0x1000, PAGE),
                    want,
                    "entry {i} page {j}"
                );
            }
        }
        assert!(wrapped >= 2, "the test must wrap around ({wrapped})");
    }

    #[test]
    fn a_torn_next_entry_leaves_the_previous_one_in_effect() {
        let file = MemFile::from_bytes(vec![0; 4 << 20]);
        let mut w = LogWriter::new(LOG_AT, 1 << 20);
        let len = w
            .write_entry(&file, &content(vec![(0x30_0000, page(1))], vec![]))
            .unwrap();
        w.advance(len);
        let big: Vec<Page> = (0..w.max_pages(0))
            .map(|j| (0x40_0000 + j as u64 * 0x1000, page(2)))
            .collect();
        let bytes = build_entry(w.guid, w.sequence, w.head, &content(big, vec![])).unwrap();
        assert!(bytes.len() <= 1 << 19);
        // Only the first half of the new entry reaches the disk.
        file.write_at(&bytes[..bytes.len() / 2], LOG_AT + u64::from(w.head))
            .unwrap();
        let seq = active(&file, 1 << 20, w.guid).unwrap();
        assert_eq!(seq.head().unwrap().sequence, 1);
        assert_eq!(replayed(&seq, 0x30_0000, PAGE), page(1).to_vec());
    }

    #[test]
    fn empty_entry_carries_only_file_sizes() {
        let file = MemFile::from_bytes(vec![0; 4 << 20]);
        let w = LogWriter::new(LOG_AT, 1 << 20);
        let mut c = content(vec![], vec![]);
        c.flushed_file_offset = 3 << 20;
        c.last_file_offset = 3 << 20;
        assert_eq!(w.write_entry(&file, &c).unwrap(), PAGE as u32);
        let seq = active(&file, 1 << 20, w.guid).unwrap();
        assert_eq!(seq.head().unwrap().flushed_file_offset, 3 << 20);
        assert!(seq.head().unwrap().actions.is_empty());
    }

    #[test]
    fn max_pages_fit_half_the_log() {
        let w = LogWriter::new(LOG_AT, 1 << 20);
        let n = w.max_pages(0);
        assert!(entry_sectors(n, 0) * PAGE <= 1 << 19);
        assert!(entry_sectors(n + 1, 0) * PAGE > 1 << 19);
    }
}
