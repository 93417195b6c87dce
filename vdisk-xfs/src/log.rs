//! The XFS log (journal): whether it was left clean, i.e. whether replaying it could still
//! change which blocks are free.
//!
//! The log is a circular sequence of 512-byte basic blocks. Every block written in the current
//! pass over the log carries the pass's cycle number in its first word (a record header
//! carries it in `h_cycle`, after the `0xFEEDBABE` magic), so the blocks of the current pass
//! and those of the one before meet at the head: the next block to write. The kernel and
//! `xfs_repair` find the head the same way (`xlog_find_head`), then the last record header
//! before it; the log is clean when that record is an unmount record (one operation flagged
//! `XLOG_UNMOUNT_TRANS`) ending exactly at the head. Anything else (no record, a record of
//! transactions, torn writes near the head, inconsistent cycle numbers) is dirty for us: only
//! a replay by the kernel could tell what the free space really is.

use vdisk_core::fs::{Examined, MetaReader};
use zerocopy::byteorder::big_endian::{I32, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::superblock::BBSIZE;

/// First word of every log record header.
const HEADER_MAGIC: u32 = 0xFEED_BABE;
/// Operation flag of the unmount record.
const UNMOUNT_TRANS: u8 = 0x20;
/// Record header version bit: headers may span several blocks.
const VERSION_2: u32 = 2;
/// Bytes of record data one header block describes (`XLOG_HEADER_CYCLE_SIZE`).
const HEADER_CYCLE_SIZE: u32 = 32 << 10;
/// Largest in-core log buffer (`XLOG_MAX_RECORD_BSIZE`).
const MAX_RECORD: u32 = 256 << 10;
/// Blocks the kernel checks around the head for writes that were still in flight
/// (`XLOG_TOTAL_REC_SHIFT`: 8 log buffers of 256 KiB).
const IN_FLIGHT_WINDOW: u64 = 8 * (MAX_RECORD as u64) / BBSIZE;

/// A log record header (`xlog_rec_header`), as far as read here.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RecordHeader {
    /// `0xFEEDBABE`.
    magic: U32,
    /// Cycle of the pass that wrote the record.
    cycle: U32,
    /// 1, or 2 for version 2 logs.
    version: U32,
    /// Bytes of record data after the header blocks.
    len: U32,
    /// The record's log sequence number: cycle << 32 | block.
    lsn: U64,
    /// The tail of the log when the record was written.
    tail_lsn: U64,
    /// CRC32c of the record (version 5).
    crc: [u8; 4],
    /// Block of the previous record.
    prev_block: I32,
    /// Operations in the record.
    num_logops: I32,
    /// Saved first words of the data blocks, format, file system UUID.
    cycle_data: [u8; 276],
    /// Size of the in-core log buffer that wrote the record.
    size: I32,
}

const _: () = assert!(size_of::<RecordHeader>() == 324);

/// Header of an operation in a record (`xlog_op_header`).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct OpHeader {
    /// Transaction id (its first word is overwritten by the cycle number on disk).
    tid: U32,
    /// Bytes of the operation.
    len: U32,
    /// Who wrote it.
    client: u8,
    /// `XLOG_UNMOUNT_TRANS` and others.
    flags: u8,
    /// Padding.
    reserved: [u8; 2],
}

/// What the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogState {
    /// Unmounted cleanly (or zeroed): nothing to replay.
    Clean,
    /// Replay could change the file system; the reason is for the user.
    Dirty(String),
}

/// The internal log of `blocks` 512-byte blocks starting at volume byte `start`.
#[derive(Debug)]
pub(crate) struct Log<'r, 'a> {
    reader: &'r MetaReader<'a>,
    start: u64,
    blocks: u64,
}

const NOT_CLEAN: &str = "the XFS log holds changes that were never written to the file system \
                         (it was not unmounted cleanly): mount and unmount it, or shut the \
                         guest down cleanly, first";

impl<'r, 'a> Log<'r, 'a> {
    /// The log at `start` (bytes) of `blocks` basic blocks (at least 2).
    pub(crate) fn new(reader: &'r MetaReader<'a>, start: u64, blocks: u64) -> Log<'r, 'a> {
        Log {
            reader,
            start,
            blocks,
        }
    }

    /// Whether the log is clean; see the module docs.
    pub(crate) fn state(&self) -> Examined<LogState> {
        let dirty = |why: &str| Ok(LogState::Dirty(format!("{NOT_CLEAN} ({why})")));
        let last = self.blocks - 1;
        let first_cycle = self.cycle(0)?;
        if first_cycle == 0 {
            // A zeroed log (xfs_repair -L, or never written): nothing to replay.
            return Ok(LogState::Clean);
        }
        let last_cycle = self.cycle(last)?;
        let head = if first_cycle == last_cycle {
            self.blocks
        } else if last_cycle.wrapping_add(1) == first_cycle {
            let (mut lo, mut hi) = (0, last);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                match self.cycle(mid)? {
                    c if c == last_cycle => hi = mid,
                    c if c == first_cycle => lo = mid,
                    _ => return dirty("its cycle numbers are inconsistent"),
                }
            }
            hi
        } else {
            return dirty("its cycle numbers are inconsistent");
        };
        // Writes that were in flight leave blocks of the wrong pass near the head.
        let window = IN_FLIGHT_WINDOW.min(self.blocks);
        for k in 1..=window {
            let (block, want) = if k <= head {
                (head - k, first_cycle)
            } else {
                (head + self.blocks - k, last_cycle)
            };
            if self.cycle(block)? != want {
                return dirty("writes near its head did not complete");
            }
        }
        for block in head..(head + window).min(self.blocks) {
            if self.cycle(block)? != last_cycle {
                return dirty("writes near its head did not complete");
            }
        }
        self.last_record_is_unmount(head % self.blocks, window)
    }

    /// Whether the last record before `head` is an unmount record ending at `head`.
    fn last_record_is_unmount(&self, head: u64, window: u64) -> Examined<LogState> {
        let dirty = |why: &str| Ok(LogState::Dirty(format!("{NOT_CLEAN} ({why})")));
        let mut found = None;
        for k in 1..=window {
            let block = (head + self.blocks - k) % self.blocks;
            let mut word = [0u8; 4];
            self.read(&mut word, block, 0)?;
            if u32::from_be_bytes(word) == HEADER_MAGIC {
                found = Some(block);
                break;
            }
        }
        let Some(at) = found else {
            return dirty("no log record precedes its head");
        };
        let mut bytes = [0u8; size_of::<RecordHeader>()];
        self.read(&mut bytes, at, 0)?;
        let Ok(h) = RecordHeader::read_from_bytes(&bytes) else {
            return dirty("its last record header is unreadable");
        };
        let size = u32::try_from(h.size.get()).unwrap_or(0);
        let len = h.len.get();
        if len > MAX_RECORD || size > MAX_RECORD {
            return dirty("its last record header is damaged");
        }
        let header_blocks = if h.version.get() & VERSION_2 != 0 && size > HEADER_CYCLE_SIZE {
            u64::from(size.div_ceil(HEADER_CYCLE_SIZE))
        } else {
            1
        };
        let end = (at + header_blocks + u64::from(len).div_ceil(BBSIZE)) % self.blocks;
        let lsn = (u64::from(h.cycle.get()) << 32) | at;
        if end != head || h.lsn.get() != lsn {
            return dirty("its last record does not end at its head");
        }
        if h.num_logops.get() != 1 {
            return dirty("its last record is not an unmount record");
        }
        let mut op = [0u8; size_of::<OpHeader>()];
        self.read(&mut op, (at + header_blocks) % self.blocks, 0)?;
        let Ok(op) = OpHeader::read_from_bytes(&op) else {
            return dirty("its last record is unreadable");
        };
        if op.flags & UNMOUNT_TRANS == 0 {
            return dirty("its last record is not an unmount record");
        }
        Ok(LogState::Clean)
    }

    /// The cycle number of basic block `block`.
    fn cycle(&self, block: u64) -> Examined<u32> {
        let mut words = [0u8; 8];
        self.read(&mut words, block, 0)?;
        let first = u32::from_be_bytes([words[0], words[1], words[2], words[3]]);
        Ok(if first == HEADER_MAGIC {
            u32::from_be_bytes([words[4], words[5], words[6], words[7]])
        } else {
            first
        })
    }

    fn read(&self, buf: &mut [u8], block: u64, offset: u64) -> Examined<()> {
        self.reader
            .read_into(buf, self.start + block * BBSIZE + offset, "the XFS log")
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test logs are 32 KiB and tests run on 64-bit hosts"
)]
mod tests {
    use super::*;
    use vdisk_core::fs::MemDevice;

    const BLOCKS: u64 = 64;

    /// A log of [`BLOCKS`] blocks: blocks before `head` stamped `cycle`, the rest `cycle - 1`,
    /// and a record of `ops` operations (the first flagged `flags`) at `head - 2` (header, one
    /// data block).
    fn log(cycle: u32, head: u64, ops: i32, flags: u8) -> MemDevice {
        let mut bytes = vec![0u8; (BLOCKS * BBSIZE) as usize];
        for b in 0..BLOCKS {
            let c = if b < head { cycle } else { cycle - 1 };
            let at = (b * BBSIZE) as usize;
            bytes[at..at + 4].copy_from_slice(&c.to_be_bytes());
        }
        let rec = ((head + BLOCKS - 2) % BLOCKS * BBSIZE) as usize;
        let h = &mut bytes[rec..rec + 324];
        h[..4].copy_from_slice(&HEADER_MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&cycle.to_be_bytes());
        h[8..12].copy_from_slice(&2u32.to_be_bytes());
        h[12..16].copy_from_slice(&512u32.to_be_bytes());
        let lsn = (u64::from(cycle) << 32) | ((head + BLOCKS - 2) % BLOCKS);
        h[16..24].copy_from_slice(&lsn.to_be_bytes());
        h[40..44].copy_from_slice(&ops.to_be_bytes());
        h[320..324].copy_from_slice(&32768i32.to_be_bytes());
        let data = ((head + BLOCKS - 1) % BLOCKS * BBSIZE) as usize;
        bytes[data + 9] = flags;
        MemDevice::new(bytes)
    }

    fn state(dev: &MemDevice) -> LogState {
        let reader = MetaReader::new(dev, 1 << 20);
        Log::new(&reader, 0, BLOCKS).state().unwrap()
    }

    #[test]
    fn a_log_ending_in_an_unmount_record_is_clean_wherever_its_head_is() {
        for head in [2, 17, BLOCKS - 1] {
            assert_eq!(
                state(&log(5, head, 1, UNMOUNT_TRANS)),
                LogState::Clean,
                "{head}"
            );
        }
        // The whole log in one cycle: the head is at its end.
        assert_eq!(state(&log(5, BLOCKS, 1, UNMOUNT_TRANS)), LogState::Clean);
    }

    #[test]
    fn a_zeroed_log_is_clean() {
        let dev = MemDevice::new(vec![0u8; (BLOCKS * BBSIZE) as usize]);
        assert_eq!(state(&dev), LogState::Clean);
    }

    #[test]
    fn a_log_whose_last_record_holds_transactions_is_dirty() {
        assert!(
            matches!(state(&log(5, 20, 1, 0)), LogState::Dirty(r) if r.contains("not an unmount"))
        );
        assert!(matches!(
            state(&log(5, 20, 3, UNMOUNT_TRANS)),
            LogState::Dirty(_)
        ));
    }

    #[test]
    fn torn_writes_and_inconsistent_cycles_are_dirty() {
        // A block before the head still from the previous pass: a write that never landed.
        let mut dev = log(5, 30, 1, UNMOUNT_TRANS);
        dev.bytes_mut()[(10 * BBSIZE) as usize + 3] = 4;
        assert!(matches!(state(&dev), LogState::Dirty(r) if r.contains("did not complete")));
        // A block after the head from the current pass.
        let mut dev = log(5, 30, 1, UNMOUNT_TRANS);
        dev.bytes_mut()[(40 * BBSIZE) as usize + 3] = 5;
        assert!(matches!(state(&dev), LogState::Dirty(_)));
        // Cycles two apart.
        let mut dev = log(5, 30, 1, UNMOUNT_TRANS);
        dev.bytes_mut()[((BLOCKS - 1) * BBSIZE) as usize + 3] = 2;
        assert!(matches!(state(&dev), LogState::Dirty(r) if r.contains("inconsistent")));
        // A record that does not end at the head.
        let mut dev = log(5, 30, 1, UNMOUNT_TRANS);
        dev.bytes_mut()[(28 * BBSIZE) as usize + 14] = 4;
        assert!(matches!(state(&dev), LogState::Dirty(r) if r.contains("does not end")));
    }
}
