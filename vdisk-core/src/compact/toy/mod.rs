//! A toy image format, held in a host file, that exercises the engine alone with layout choices
//! VHD and VHDX do not make, so the engine's rules are tested without any real format.
//!
//! ```text
//!  0        512                                table (mid-file)               slots...
//!  │ header │ slot 0 │ slot 1 │ ... │ slot m ░░│ table of slot numbers │░░ │ slot m+2 │ ...
//!  slot k = data_start + k * footprint; footprint = block data (5 sectors) + 512-byte trailer
//!           ┌──────────────────── block data ────────────────────┬── trailer ──┐
//!           │ guest bytes 0..block_size, in order                  │ "TOYTRAIL", │
//!           │                                                      │ block index │
//! ```
//!
//! - The header (512 bytes at 0): magic `TOYDISK1`, virtual size, block size, table offset,
//!   data start, block count, movable (little-endian `u64`s).
//! - The table sits in the middle of the block area, off the slot grid at creation; slots it
//!   overlaps are never used. With `movable` 1 it is movable metadata: a compaction may move
//!   it down into free slots (copy, sync, rewrite the header sector, sync). Its `u64` entries hold slot numbers, not host
//!   offsets: 0 = not allocated (reads zeros), `k + 1` = data in slot `k`, with bit 63 set =
//!   trimmed by the guest (reads zeros, still holds slot `k`).
//! - A block's data comes first in its footprint, followed by a trailer naming the block; the
//!   block size need not be a power of two. A trailer whose byte 16 is 1 marks the block
//!   shared: its guest extent is opaque (moved only whole, never freed). A trailer whose byte
//!   16 is 2 marks it pinned ([`BlockState::Pinned`]): its slot is fixed metadata, and the
//!   toy's primitives refuse to free or move it.
//!
//! Its primitives are crash-safe the way VHD's are (no journal): a move copies the footprint
//! into a free slot and syncs before a table sector points at it; every table sector is one
//! write.

#![allow(
    clippy::cast_possible_truncation,
    reason = "a toy of a few hundred blocks held in memory"
)]

mod crash_tests;
mod engine_tests;
mod pinned_tests;
mod sparse;

use std::collections::BTreeSet;
use std::ops::Range;

use crate::block::{BlockDevice, check_range};
use crate::check::Problem;
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{GuestExtent, extents_from_block_states};
use crate::host_file::HostFile;
use crate::image::{BlockState, Compactable, DiskImage, FreeAs, HostLayout, ImageKind, Relocation};
use crate::space::{HostSpaceMap, HostUse};
use crate::units::{BlockIndex, HostOffset, SECTOR, block_spans};

pub(crate) use sparse::SparseFile;

const MAGIC: &[u8; 8] = b"TOYDISK1";
const TRAILER_MAGIC: &[u8; 8] = b"TOYTRAIL";
const HEADER_LEN: u64 = SECTOR;
const TRAILER_LEN: u64 = SECTOR;
const TRIMMED: u64 = 1 << 63;
/// Most blocks a toy may have (bounds the table read at open).
const MAX_BLOCKS: u64 = 1 << 16;

/// What one table entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Free,
    Slot { slot: u64, trimmed: bool },
}

impl Entry {
    fn decode(raw: u64) -> Entry {
        match raw & !TRIMMED {
            0 => Entry::Free,
            n => Entry::Slot {
                slot: n - 1,
                trimmed: raw & TRIMMED != 0,
            },
        }
    }

    fn encode(self) -> u64 {
        match self {
            Entry::Free => 0,
            Entry::Slot { slot, trimmed } => (slot + 1) | if trimmed { TRIMMED } else { 0 },
        }
    }

    fn slot(self) -> Option<u64> {
        match self {
            Entry::Free => None,
            Entry::Slot { slot, .. } => Some(slot),
        }
    }

    fn trimmed(self) -> bool {
        matches!(self, Entry::Slot { trimmed: true, .. })
    }
}

/// The fixed geometry of a toy image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub size: u64,
    pub block_size: u64,
    pub table_offset: u64,
    pub data_start: u64,
    pub blocks: u64,
    /// Whether the table is movable metadata.
    pub movable: bool,
}

impl Geometry {
    /// A disk of `size` bytes in blocks of `block_size`, its table after `slots_before` slots
    /// and `skew` bytes more (off the grid).
    pub fn new(size: u64, block_size: u64, slots_before: u64, skew: u64) -> Geometry {
        let data_start = HEADER_LEN;
        Geometry {
            size,
            block_size,
            table_offset: data_start + slots_before * (block_size + TRAILER_LEN) + skew,
            data_start,
            blocks: size.div_ceil(block_size),
            movable: false,
        }
    }

    pub fn footprint(&self) -> u64 {
        self.block_size + TRAILER_LEN
    }

    pub fn table(&self) -> Range<u64> {
        self.table_offset..self.table_offset + (self.blocks * 8).next_multiple_of(SECTOR)
    }

    pub fn slot_range(&self, slot: u64) -> Range<u64> {
        let start = self.data_start + slot * self.footprint();
        start..start + self.footprint()
    }

    /// Whether `slot` may hold a block (it does not overlap the table).
    pub fn usable(&self, slot: u64) -> bool {
        let (r, t) = (self.slot_range(slot), self.table());
        r.end <= t.start || t.end <= r.start
    }

    fn slot_at(&self, host: u64) -> Option<u64> {
        let rel = host.checked_sub(self.data_start)?;
        (rel % self.footprint() == 0).then_some(rel / self.footprint())
    }

    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        let fields = [
            self.size,
            self.block_size,
            self.table_offset,
            self.data_start,
            self.blocks,
            u64::from(self.movable),
        ];
        for (i, v) in fields.iter().enumerate() {
            h[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    fn parse(h: &[u8]) -> Result<Geometry> {
        if &h[..8] != MAGIC {
            return Err(Error::invalid("not a toy image (bad magic)", 0));
        }
        let field = |i: usize| u64::from_le_bytes(h[8 + i * 8..16 + i * 8].try_into().unwrap());
        let g = Geometry {
            size: field(0),
            block_size: field(1),
            table_offset: field(2),
            data_start: field(3),
            blocks: field(4),
            movable: field(5) == 1,
        };
        let sane = g.block_size > 0
            && g.block_size.is_multiple_of(SECTOR)
            && g.block_size <= 1 << 20
            && g.blocks <= MAX_BLOCKS
            && g.blocks == g.size.div_ceil(g.block_size)
            && g.data_start >= HEADER_LEN
            && g.table_offset >= g.data_start
            && field(5) <= 1;
        if !sane {
            return Err(Error::invalid("toy header out of range", 8));
        }
        Ok(g)
    }
}

/// The trailer of block `block`.
pub(crate) fn trailer(block: u64) -> Vec<u8> {
    let mut t = vec![0u8; TRAILER_LEN as usize];
    t[..8].copy_from_slice(TRAILER_MAGIC);
    t[8..16].copy_from_slice(&block.to_le_bytes());
    t
}

/// An opened toy image.
#[derive(Debug)]
pub(crate) struct ToyImage {
    file: Box<dyn HostFile>,
    geo: Geometry,
    table: Vec<Entry>,
    /// What the toy says about where a block's data lies in its footprint (`Some(0)`: first).
    /// A test may make it state something else to prove the engine refuses.
    pub data_offset: Option<u64>,
    /// Blocks marked shared in their trailer: opaque guest extents.
    opaque: BTreeSet<u64>,
    /// Blocks marked pinned in their trailer: kept exactly where they are.
    pinned: BTreeSet<u64>,
    /// Makes the host space map give each block a sector less than its footprint, so a test
    /// can prove the engine refuses a map that disagrees with the allocation map.
    pub misreport_space: bool,
}

impl ToyImage {
    /// Writes a new image: `geo`, each block's entry, the data of each block that holds a slot
    /// (`data(block)`, `block_size` bytes), its trailer, and `fill` in the free slots below the
    /// end of the file.
    pub fn build(
        file: Box<dyn HostFile>,
        geo: Geometry,
        table: &[Entry],
        data: &dyn Fn(u64) -> Vec<u8>,
        fill: u8,
    ) -> Result<ToyImage> {
        assert_eq!(table.len() as u64, geo.blocks);
        let last = table.iter().filter_map(|e| e.slot()).max();
        let end = last
            .map_or(0, |s| geo.slot_range(s).end)
            .max(geo.table().end);
        file.write_at(&vec![fill; (end - HEADER_LEN) as usize], HEADER_LEN)?;
        file.write_at(&geo.header(), 0)?;
        for (b, e) in table.iter().enumerate() {
            if let Some(slot) = e.slot() {
                let r = geo.slot_range(slot);
                file.write_at(&data(b as u64), r.start)?;
                file.write_at(&trailer(b as u64), r.start + geo.block_size)?;
            }
        }
        let raw: Vec<u8> = table
            .iter()
            .flat_map(|e| e.encode().to_le_bytes())
            .collect();
        let mut t = vec![0u8; (geo.table().end - geo.table().start) as usize];
        t[..raw.len()].copy_from_slice(&raw);
        file.write_at(&t, geo.table_offset)?;
        file.sync()?;
        ToyImage::open(file)
    }

    /// Opens a toy image, refusing one whose blocks overlap each other, the metadata or the
    /// end of the file.
    pub fn open(file: Box<dyn HostFile>) -> Result<ToyImage> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        file.read_at(&mut h, 0)?;
        let geo = Geometry::parse(&h)?;
        let mut raw = vec![0u8; (geo.blocks * 8) as usize];
        file.read_at(&mut raw, geo.table_offset)?;
        let table: Vec<Entry> = raw
            .chunks_exact(8)
            .map(|c| Entry::decode(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let len = file.len()?;
        let mut seen = BTreeSet::new();
        for (b, e) in table.iter().enumerate() {
            if let Some(slot) = e.slot() {
                let ok = slot < MAX_BLOCKS
                    && geo.usable(slot)
                    && geo.slot_range(slot).end <= len
                    && seen.insert(slot);
                if !ok {
                    return Err(Error::invalid(
                        format!("block {b} names slot {slot}, which it cannot use"),
                        geo.table_offset + b as u64 * 8,
                    ));
                }
            }
        }
        let (mut opaque, mut pinned) = (BTreeSet::new(), BTreeSet::new());
        for (b, e) in table.iter().enumerate() {
            if let Some(slot) = e.slot() {
                let mut flag = [0u8];
                file.read_at(&mut flag, geo.slot_range(slot).start + geo.block_size + 16)?;
                match flag[0] {
                    1 => opaque.insert(b as u64),
                    2 if !e.trimmed() => pinned.insert(b as u64),
                    _ => false,
                };
            }
        }
        Ok(ToyImage {
            file,
            geo,
            table,
            data_offset: Some(0),
            opaque,
            pinned,
            misreport_space: false,
        })
    }

    /// Marks `block` (which holds a slot, not trimmed) pinned, in its trailer: it becomes
    /// [`BlockState::Pinned`], its slot fixed metadata.
    pub fn make_pinned(&mut self, block: u64) -> Result<()> {
        let e = self.table[block as usize];
        let slot = e.slot().expect("a block holding a slot");
        assert!(!e.trimmed(), "a pinned block holds data");
        let at = self.geo.slot_range(slot).start + self.geo.block_size + 16;
        self.file.write_at(&[2], at)?;
        self.pinned.insert(block);
        Ok(())
    }

    /// Marks `block` (which holds a slot) shared, in its trailer: its extent becomes opaque.
    pub fn make_opaque(&mut self, block: u64) -> Result<()> {
        let slot = self.table[block as usize]
            .slot()
            .expect("a block holding a slot");
        let at = self.geo.slot_range(slot).start + self.geo.block_size + 16;
        self.file.write_at(&[1], at)?;
        self.opaque.insert(block);
        Ok(())
    }

    pub fn entry(&self, block: u64) -> Entry {
        self.table[block as usize]
    }

    fn internal(msg: String) -> Error {
        Error::new(ErrorKind::Internal, msg)
    }

    /// Writes the sectors of `table` holding `blocks`' entries, one write per sector, and syncs;
    /// then takes `table` as the image's. The table in memory changes only once the file has
    /// it, so after a failed write the image reads as its file did before (or, for the sectors
    /// written, as it will after a retry).
    fn write_entries(&mut self, table: Vec<Entry>, blocks: &BTreeSet<u64>) -> Result<()> {
        let per = SECTOR / 8;
        let sectors: BTreeSet<u64> = blocks.iter().map(|b| b / per).collect();
        for s in sectors {
            let mut buf = vec![0u8; SECTOR as usize];
            for (i, e) in table
                .iter()
                .enumerate()
                .skip((s * per) as usize)
                .take(per as usize)
            {
                let at = (i as u64 - s * per) as usize * 8;
                buf[at..at + 8].copy_from_slice(&e.encode().to_le_bytes());
            }
            self.file
                .write_at(&buf, self.geo.table_offset + s * SECTOR)?;
        }
        self.file.sync()?;
        self.table = table;
        Ok(())
    }
}

impl BlockDevice for ToyImage {
    fn size(&self) -> u64 {
        self.geo.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.geo.size, offset, buf.len())?;
        for span in block_spans(offset, buf.len(), self.geo.block_size) {
            match self.table[span.block as usize] {
                Entry::Slot {
                    slot,
                    trimmed: false,
                } => {
                    let at = self.geo.slot_range(slot).start + span.within;
                    self.file.read_at(&mut buf[span.buf], at)?;
                }
                _ => buf[span.buf].fill(0),
            }
        }
        Ok(())
    }
}

impl DiskImage for ToyImage {
    fn format(&self) -> &'static str {
        "toy"
    }

    fn kind(&self) -> ImageKind {
        ImageKind::Dynamic
    }

    fn block_size(&self) -> u64 {
        self.geo.block_size
    }

    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        let e = self
            .table
            .get(block.0 as usize)
            .ok_or_else(|| Error::new(ErrorKind::OutOfRange, format!("no block {}", block.0)))?;
        let host = |slot| HostOffset(self.geo.slot_range(slot).start);
        Ok(match *e {
            Entry::Free => BlockState::Unallocated,
            Entry::Slot { slot, .. } if self.pinned.contains(&block.0) => {
                BlockState::Pinned { host: host(slot) }
            }
            Entry::Slot {
                slot,
                trimmed: false,
            } => BlockState::Allocated { host: host(slot) },
            Entry::Slot {
                slot,
                trimmed: true,
            } => BlockState::Trimmed {
                host: Some(host(slot)),
            },
        })
    }

    fn host_file(&self) -> &dyn HostFile {
        &*self.file
    }

    /// As the allocation map says, except that a shared block is one opaque extent.
    fn guest_extents(&self, range: Range<u64>) -> Result<Vec<(Range<u64>, GuestExtent)>> {
        let bs = self.geo.block_size;
        let range = range.start.min(self.geo.size)..range.end.min(self.geo.size);
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let b = at / bs;
            let end = ((b + 1) * bs).min(range.end);
            match self.table[b as usize].slot() {
                Some(slot) if self.opaque.contains(&b) || self.pinned.contains(&b) => {
                    let host = self.geo.slot_range(slot);
                    out.push((at..end, GuestExtent::Opaque { host }));
                }
                _ => out.extend(extents_from_block_states(self, at..end)?),
            }
            at = end;
        }
        Ok(out)
    }

    fn host_space(&self) -> Result<HostSpaceMap> {
        let table = HostUse::Metadata {
            movable: self.geo.movable,
        };
        let fp = self.geo.footprint() - if self.misreport_space { SECTOR } else { 0 };
        let table = [(self.geo.table(), table)];
        // A pinned block's slot is fixed metadata, never its footprint.
        let pinned = self.pinned.iter().filter_map(|&b| {
            let slot = self.table[b as usize].slot()?;
            Some(self.geo.slot_range(slot))
        });
        let fixed = std::iter::once(0..HEADER_LEN).chain(pinned);
        HostSpaceMap::of_image(self, fp, fixed, table)
    }

    /// Every block's trailer names it.
    fn check(&self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        for (b, e) in self.table.iter().enumerate() {
            if let Some(slot) = e.slot() {
                let at = self.geo.slot_range(slot).start + self.geo.block_size;
                let mut t = vec![0u8; TRAILER_LEN as usize];
                self.file.read_at(&mut t, at)?;
                if t[..16] != trailer(b as u64)[..16] || t[16] > 2 {
                    problems.push(Problem::error(
                        format!("block {b}'s trailer in slot {slot} does not name it"),
                        Some(at),
                    ));
                }
            }
        }
        Ok(problems)
    }

    fn as_compactable(&mut self) -> Result<&mut dyn Compactable> {
        Ok(self)
    }

    fn as_compactable_ref(&self) -> Result<&dyn Compactable> {
        Ok(self)
    }
}

impl Compactable for ToyImage {
    fn host_layout(&self) -> Result<HostLayout> {
        Ok(HostLayout {
            data_start: self.geo.data_start,
            block_footprint: self.geo.footprint(),
            data_offset: self.data_offset,
            alignment: self.geo.footprint(),
            trailer_len: 0,
            end_alignment: 1,
        })
    }

    fn deallocate(&mut self, blocks: &[BlockIndex], _to: FreeAs) -> Result<()> {
        if let Some(b) = blocks.iter().find(|b| b.0 >= self.geo.blocks) {
            return Err(Self::internal(format!("no block {b}")));
        }
        if let Some(b) = blocks.iter().find(|b| self.pinned.contains(&b.0)) {
            return Err(Self::internal(format!(
                "block {b} is pinned; nothing was freed"
            )));
        }
        let (mut next, mut changed) = (self.table.clone(), BTreeSet::new());
        for b in blocks {
            if next[b.0 as usize] != Entry::Free {
                next[b.0 as usize] = Entry::Free;
                changed.insert(b.0);
            }
        }
        self.write_entries(next, &changed)
    }

    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        let used: BTreeSet<u64> = self.table.iter().filter_map(|e| e.slot()).collect();
        let mut taken = BTreeSet::new();
        let mut targets = Vec::with_capacity(moves.len());
        for m in moves {
            let e = self.table.get(m.block.0 as usize).copied();
            let from = e.and_then(Entry::slot);
            if from.is_none()
                || from != self.geo.slot_at(m.from.0)
                || self.pinned.contains(&m.block.0)
            {
                return Err(Self::internal(format!(
                    "block {} is not at {}; nothing was moved",
                    m.block, m.from
                )));
            }
            let to = self.geo.slot_at(m.to.0).filter(|&t| {
                self.geo.usable(t)
                    && !used.contains(&t)
                    && taken.insert(t)
                    && self.geo.slot_range(t).end <= self.file.len().unwrap_or(0)
            });
            let Some(to) = to else {
                return Err(Self::internal(format!(
                    "cannot move block {} to {}: not a free slot; nothing was moved",
                    m.block, m.to
                )));
            };
            targets.push(to);
        }
        for m in moves {
            self.file
                .copy_within(m.from.0, m.to.0, self.geo.footprint())?;
            copied()?;
        }
        self.file.sync()?;
        let (mut next, mut changed) = (self.table.clone(), BTreeSet::new());
        for (m, &to) in moves.iter().zip(&targets) {
            if let Entry::Slot { slot, .. } = &mut next[m.block.0 as usize] {
                *slot = to;
            }
            changed.insert(m.block.0);
        }
        self.write_entries(next, &changed)
    }

    fn move_metadata(&mut self, from: Range<u64>, to: u64) -> Result<()> {
        let table = self.geo.table();
        let target = to..to + (table.end - table.start);
        let used = self.table.iter().filter_map(|e| e.slot());
        let clear = used
            .map(|s| self.geo.slot_range(s))
            .all(|r| r.end <= target.start || target.end <= r.start);
        if !self.geo.movable || from != table || to < self.geo.data_start || !clear {
            return Err(Self::internal(format!(
                "cannot move {from:?} to {to}: not the movable table moving into free space"
            )));
        }
        self.file
            .copy_within(from.start, to, from.end - from.start)?;
        self.file.sync()?;
        let geo = Geometry {
            table_offset: to,
            ..self.geo
        };
        self.file.write_at(&geo.header(), 0)?;
        self.file.sync()?;
        self.geo = geo;
        Ok(())
    }

    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        let last = self.table.iter().filter_map(|e| e.slot()).max();
        let end = last
            .map_or(0, |s| self.geo.slot_range(s).end)
            .max(self.geo.table().end);
        if end > data_end {
            return Err(Self::internal(format!(
                "cannot end the file at {data_end}: data lies up to {end}"
            )));
        }
        self.file.set_len(data_end)?;
        self.file.sync()?;
        Ok(data_end)
    }
}
