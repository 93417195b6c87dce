//! The block map: loaded whole at open (its size was bounded by the file's length), checked
//! entry by entry, and written back by 512-byte pages.

use std::collections::BTreeSet;

use vdisk_core::{HostFile, Problem, Result};

use crate::format::{ENTRY_FREE, ENTRY_ZERO, SECTOR};
use crate::header::Layout;

/// Entries in one page of the map (the unit written back).
const PAGE_ENTRIES: u64 = SECTOR / 4;
/// [`PAGE_ENTRIES`] as an index.
const PAGE_ENTRIES_USIZE: usize = 128;
const _: () = assert!(PAGE_ENTRIES_USIZE as u64 == PAGE_ENTRIES);

/// What one entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// No data here: zeros, or the parent's data in a differencing image.
    Free,
    /// Zeros, even in a differencing image.
    Zero,
    /// Data in this slot of the data area.
    Slot(u32),
}

impl Entry {
    /// Decodes a stored entry.
    pub fn of(raw: u32) -> Entry {
        match raw {
            ENTRY_FREE => Entry::Free,
            ENTRY_ZERO => Entry::Zero,
            slot => Entry::Slot(slot),
        }
    }

    /// The stored form.
    pub fn raw(self) -> u32 {
        match self {
            Entry::Free => ENTRY_FREE,
            Entry::Zero => ENTRY_ZERO,
            Entry::Slot(s) => s,
        }
    }
}

/// The block map of an open image.
#[derive(Debug, Clone)]
pub(crate) struct BlockMap {
    entries: Vec<u32>,
    offset: u64,
}

impl BlockMap {
    /// Reads the whole map in one request.
    pub fn load(file: &dyn HostFile, layout: &Layout) -> Result<BlockMap> {
        let len = usize::try_from(layout.bmap_len()).map_err(|_| {
            vdisk_core::Error::invalid("the block map does not fit in memory", layout.bmap_offset)
        })?;
        let mut raw = vec![0u8; len];
        file.read_at(&mut raw, layout.bmap_offset)?;
        let entries = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(BlockMap {
            entries,
            offset: layout.bmap_offset,
        })
    }

    /// A map of `blocks` entries all set to `entry`, at `offset` (for create).
    pub fn filled(blocks: u64, offset: u64, entry: impl Fn(u64) -> Entry) -> BlockMap {
        BlockMap {
            entries: (0..blocks).map(|i| entry(i).raw()).collect(),
            offset,
        }
    }

    /// The entry of `block` (callers bound `block` by [`BlockMap::len`]; past it reads free).
    pub fn get(&self, block: u64) -> Entry {
        usize::try_from(block)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map_or(Entry::Free, |&raw| Entry::of(raw))
    }

    /// Sets the entries `changes` (block, entry) on disk and then in memory: the pages they lie
    /// in are written and made durable first; if that fails, memory keeps the old entries
    /// (the disk may hold some of the new ones, each pointing at data that is durable or at
    /// nothing, as the callers ensure), so the open image never believes in a change the disk
    /// may not have. Each page write is independent: any subset reaching the disk before a
    /// crash leaves a valid image.
    pub fn update(&mut self, file: &dyn HostFile, changes: &[(u64, Entry)]) -> Result<()> {
        let mut old = Vec::with_capacity(changes.len());
        let mut pages = BTreeSet::new();
        for &(block, entry) in changes {
            let Some(slot) = usize::try_from(block)
                .ok()
                .and_then(|i| self.entries.get_mut(i))
            else {
                continue;
            };
            if *slot != entry.raw() {
                old.push((block, *slot));
                *slot = entry.raw();
                pages.insert(block / PAGE_ENTRIES);
            }
        }
        let written = self.commit(file, &pages);
        if written.is_err() {
            for (block, raw) in old.into_iter().rev() {
                if let Some(e) = usize::try_from(block)
                    .ok()
                    .and_then(|i| self.entries.get_mut(i))
                {
                    *e = raw;
                }
            }
        }
        written
    }

    /// One past the highest slot in use (0 if none): the lowest slot a new block may take
    /// without landing on a live one.
    pub fn high(&self) -> u64 {
        self.slots()
            .map(|(_, s)| u64::from(s) + 1)
            .max()
            .unwrap_or(0)
    }

    /// Every block with data, and its slot.
    pub fn slots(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, &raw)| match Entry::of(raw) {
                Entry::Slot(s) => Some((i as u64, s)),
                _ => None,
            })
    }

    /// The map's bytes of page `page`.
    fn page_bytes(&self, page: u64) -> (u64, Vec<u8>) {
        let first = usize::try_from(page * PAGE_ENTRIES).unwrap_or(usize::MAX);
        let last = first
            .saturating_add(PAGE_ENTRIES_USIZE)
            .min(self.entries.len());
        let bytes = self.entries[first.min(last)..last]
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect();
        (self.offset + page * SECTOR, bytes)
    }

    /// Writes the map's bytes (all of it; for create).
    pub fn write_all(&self, file: &dyn HostFile) -> Result<()> {
        let bytes: Vec<u8> = self.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        file.write_at(&bytes, self.offset)
    }

    /// Writes the given pages and makes them durable.
    fn commit(&self, file: &dyn HostFile, pages: &BTreeSet<u64>) -> Result<()> {
        if pages.is_empty() {
            return Ok(());
        }
        for &page in pages {
            let (at, bytes) = self.page_bytes(page);
            file.write_at(&bytes, at)?;
        }
        file.sync()
    }

    /// Every problem of the entries against `layout` and a file of `file_len` bytes: a slot
    /// past the map (qemu: "too large"), a slot used twice, a slot at or past the header's
    /// allocated count (the next block written would overwrite it), a slot past the end of
    /// the file. A count above the slots in use (space left by an interrupted compaction) is
    /// a warning: the image is sound, and compacting it reclaims the space.
    pub fn validate(&self, layout: &Layout, file_len: u64, problems: &mut Vec<Problem>) {
        let mut owner: Vec<u64> = vec![u64::MAX; self.entries.len()];
        let mut used = 0u64;
        let mut reported = 0usize;
        let mut report = |problems: &mut Vec<Problem>, p: Problem| {
            // A hostile map could hold millions of bad entries: the first hundred say enough.
            if reported < 100 {
                problems.push(p);
            }
            reported += 1;
        };
        for (block, slot) in self.slots() {
            let at = Some(self.offset + block * 4);
            let s = u64::from(slot);
            if s >= layout.blocks {
                report(
                    problems,
                    Problem::error(
                        format!(
                            "block {block} points at slot {slot}, past the {} slots the map \
                             allows",
                            layout.blocks
                        ),
                        at,
                    ),
                );
                continue;
            }
            let first = &mut owner[usize::try_from(s).unwrap_or(0)];
            if *first != u64::MAX {
                report(
                    problems,
                    Problem::error(
                        format!("blocks {} and {block} both point at slot {slot}", *first),
                        at,
                    ),
                );
                continue;
            }
            *first = block;
            used += 1;
            if s >= layout.blocks_allocated {
                report(
                    problems,
                    Problem::error(
                        format!(
                            "block {block} is in slot {slot}, but the header counts only {} \
                             slots in use: the next block written would overwrite it",
                            layout.blocks_allocated
                        ),
                        at,
                    ),
                );
            }
            let end = layout.slot_offset(slot) + layout.footprint();
            if end > file_len {
                report(
                    problems,
                    Problem::error(
                        format!(
                            "block {block} (slot {slot}, {:#x}..{end:#x}) lies past the end of \
                             the {file_len}-byte file",
                            layout.slot_offset(slot)
                        ),
                        at,
                    ),
                );
            }
        }
        if reported > 100 {
            problems.push(Problem::error(
                format!("{} more block map problems not listed", reported - 100),
                Some(self.offset),
            ));
        }
        if used < layout.blocks_allocated && reported == 0 {
            problems.push(Problem::warning(
                format!(
                    "the header counts {} slots in use, {used} hold blocks: {} slots of space \
                     (left by an interrupted write or compaction) are reclaimed by compacting",
                    layout.blocks_allocated,
                    layout.blocks_allocated - used
                ),
                Some(crate::format::BLOCKS_ALLOCATED_OFFSET),
            ));
        }
    }
}
