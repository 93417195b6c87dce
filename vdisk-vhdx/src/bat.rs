//! The block allocation table: one 64-bit entry per payload block, with a sector-bitmap entry
//! after every `chunk_ratio` payload entries.

use std::ops::Range;

use vdisk_core::{Error, Problem, Result};

use crate::format::{
    CHUNK_SECTORS, HEADER_SECTION_LEN, MIB, PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT,
    PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_UNMAPPED, PAYLOAD_ZERO, SB_NOT_PRESENT,
    SB_PRESENT, SECTOR_BITMAP_LEN,
};
use crate::metadata::Metadata;
use crate::overlay::HostView;

/// Bits 20..64 of an entry: the host offset in MiB.
const OFFSET_SHIFT: u32 = 20;
/// Bits 3..20 of an entry: reserved, zero.
const RESERVED_MASK: u64 = ((1 << OFFSET_SHIFT) - 1) & !7;

/// One decoded BAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatEntry(pub u64);

impl BatEntry {
    /// State bits 0..3.
    pub(crate) fn state(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Host offset of the block (FileOffsetMB * 1 MiB).
    pub(crate) fn host_offset(self) -> u64 {
        (self.0 >> OFFSET_SHIFT) * MIB
    }

    /// The host space a trimmed (UNMAPPED or UNDEFINED) entry still keeps: its offset when
    /// non-zero and the whole block lies inside a `file_len`-byte file, else none. Open refused
    /// kept offsets that overlap metadata or another block (see `validate`).
    pub(crate) fn kept_host(self, block_size: u64, file_len: u64) -> Option<u64> {
        let host = self.host_offset();
        (matches!(self.state(), PAYLOAD_UNMAPPED | PAYLOAD_UNDEFINED)
            && host != 0
            && host.checked_add(block_size).is_some_and(|e| e <= file_len))
        .then_some(host)
    }
}

/// The BAT as loaded at open.
#[derive(Debug, Clone)]
pub(crate) struct Bat {
    /// Every entry, payload and sector bitmap interleaved as on disk.
    pub entries: Vec<BatEntry>,
    /// Payload entries per sector-bitmap entry.
    pub chunk_ratio: u64,
    /// Number of payload blocks of the virtual disk.
    pub data_blocks: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Host offset of the table.
    pub file_offset: u64,
    /// A differencing image: sector bitmaps and PARTIALLY_PRESENT blocks are allowed.
    pub differencing: bool,
    /// Logical sectors per payload block.
    pub sectors_per_block: u64,
}

impl Bat {
    /// The table index of payload block `block`.
    pub(crate) fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// The payload entry of `block`, if it is a block of the disk.
    pub(crate) fn payload(&self, block: u64) -> Option<BatEntry> {
        if block >= self.data_blocks {
            return None;
        }
        let i = usize::try_from(self.payload_index(block)).ok()?;
        self.entries.get(i).copied()
    }

    /// The sector bitmap entry of the chunk holding payload block `block`, with its index.
    pub(crate) fn bitmap_of(&self, block: u64) -> Option<(u64, BatEntry)> {
        let chunk = block / self.chunk_ratio;
        let i = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let e = self.entries.get(usize::try_from(i).ok()?).copied()?;
        Some((i, e))
    }

    /// Host ranges of the sector bitmap blocks present in the file.
    pub(crate) fn bitmap_ranges(&self) -> Vec<Range<u64>> {
        if !self.differencing {
            return Vec::new();
        }
        let step = usize::try_from(self.chunk_ratio + 1).unwrap_or(usize::MAX);
        self.entries
            .iter()
            .skip(step - 1)
            .step_by(step)
            .filter(|e| e.state() == SB_PRESENT)
            .map(|e| e.host_offset()..e.host_offset().saturating_add(SECTOR_BITMAP_LEN))
            .collect()
    }

    /// Where, inside its chunk's sector bitmap block, the bit of the first logical sector of
    /// payload block `block` lies (a bit index).
    pub(crate) fn bitmap_bit(&self, block: u64) -> u64 {
        (block % self.chunk_ratio) * self.sectors_per_block
    }

    /// Host offset of the entry at table index `i`.
    fn entry_offset(&self, i: u64) -> u64 {
        self.file_offset + 8 * i
    }
}

/// Reads the whole table at once (bounded by the region length) and validates every entry
/// against the file and the other structures; problems go to `problems`.
pub(crate) fn read_bat(
    view: &HostView,
    meta: &Metadata,
    region: &Range<u64>,
    reserved: &[Range<u64>],
    problems: &mut Vec<Problem>,
) -> Result<Bat> {
    let block_size = u64::from(meta.block_size);
    let chunk_ratio = (CHUNK_SECTORS * u64::from(meta.logical_sector_size)) / block_size;
    let data_blocks = meta.disk_size.div_ceil(block_size);
    let differencing = meta.parent.is_some();
    // Dynamic and fixed images: a sector-bitmap entry follows each full chunk only;
    // differencing images: every chunk, the last partial one included (MS-VHDX 2.5).
    let total = if differencing {
        data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        data_blocks + (data_blocks - 1) / chunk_ratio
    };
    let needed = total * 8;
    let region_len = region.end - region.start;
    if needed > region_len {
        return Err(Error::invalid(
            format!(
                "the bat region holds {region_len} bytes but {total} entries ({needed} bytes) \
                 are needed for a {}-byte disk in {block_size}-byte blocks",
                meta.disk_size
            ),
            region.start,
        ));
    }
    let mut raw = vec![
        0u8;
        usize::try_from(needed).map_err(|_| {
            Error::invalid("the bat is too large for this host", region.start)
        })?
    ];
    view.read_at(&mut raw, region.start)?;
    let entries = raw
        .chunks_exact(8)
        .map(|c| BatEntry(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect();
    let bat = Bat {
        entries,
        chunk_ratio,
        data_blocks,
        block_size,
        file_offset: region.start,
        differencing,
        sectors_per_block: block_size / u64::from(meta.logical_sector_size),
    };
    validate(&bat, view.len(), reserved, problems);
    Ok(bat)
}

/// Checks every entry: known states, blocks inside the file, clear of metadata and of each
/// other.
fn validate(bat: &Bat, file_len: u64, reserved: &[Range<u64>], problems: &mut Vec<Problem>) {
    // (host offset, table index, length) of everything placed in the file.
    let mut blocks: Vec<(u64, u64, u64)> = Vec::new();
    for (i, &entry) in bat.entries.iter().enumerate() {
        let i = i as u64;
        let at = bat.entry_offset(i);
        let is_bitmap = (i + 1).is_multiple_of(bat.chunk_ratio + 1);
        let state = entry.state();
        if entry.0 & RESERVED_MASK != 0 {
            problems.push(Problem::warning(
                format!("bat entry {i} has reserved bits set ({:#x})", entry.0),
                Some(at),
            ));
        }
        if is_bitmap {
            match state {
                SB_NOT_PRESENT => {}
                SB_PRESENT if bat.differencing => {
                    let host = entry.host_offset();
                    let end = host.saturating_add(SECTOR_BITMAP_LEN);
                    if host < HEADER_SECTION_LEN || end > file_len {
                        problems.push(Problem::error(
                            format!(
                                "sector bitmap block {i} at {host:#x} lies in the header \
                                 section or past the end of the {file_len}-byte file"
                            ),
                            Some(at),
                        ));
                    } else if let Some(r) = reserved.iter().find(|r| host < r.end && r.start < end)
                    {
                        problems.push(Problem::error(
                            format!(
                                "sector bitmap block {i} at {host:#x} overlaps metadata or the \
                                 log at {:#x}",
                                r.start
                            ),
                            Some(at),
                        ));
                    } else {
                        blocks.push((host, i, SECTOR_BITMAP_LEN));
                    }
                }
                SB_PRESENT => problems.push(Problem::warning(
                    format!("sector bitmap entry {i} is present in an image without a parent"),
                    Some(at),
                )),
                s => problems.push(Problem::error(
                    format!("sector bitmap entry {i} has invalid state {s}"),
                    Some(at),
                )),
            }
            continue;
        }
        let host = entry.host_offset();
        match state {
            PAYLOAD_FULLY_PRESENT => {}
            PAYLOAD_NOT_PRESENT | PAYLOAD_ZERO => continue,
            // A trimmed block may keep its host space (MS-VHDX 2.5.1.1), which compaction
            // punches out or reuses: the offset must be as exclusive as a live block's. Past
            // the end of the file it holds no space and is ignored (block_state says so).
            PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED if host != 0 => {
                let block = i - i / (bat.chunk_ratio + 1);
                let end = host.saturating_add(bat.block_size);
                if let Some(r) = reserved.iter().find(|r| host < r.end && r.start < end) {
                    problems.push(Problem::error(
                        format!(
                            "trimmed block {block} keeps the offset {host:#x}, which overlaps \
                             metadata or the log at {:#x}",
                            r.start
                        ),
                        Some(at),
                    ));
                } else if end > file_len {
                    problems.push(Problem::warning(
                        format!(
                            "trimmed block {block} still points at {host:#x}, past the end of \
                             the file (ignored: it holds no space)"
                        ),
                        Some(at),
                    ));
                } else {
                    blocks.push((host, i, bat.block_size));
                }
                continue;
            }
            PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED => continue,
            PAYLOAD_PARTIALLY_PRESENT if bat.differencing => {
                let block = i - i / (bat.chunk_ratio + 1);
                if bat
                    .bitmap_of(block)
                    .is_none_or(|(_, e)| e.state() != SB_PRESENT)
                {
                    problems.push(Problem::error(
                        format!(
                            "block {block} is partially present but its chunk has no sector \
                             bitmap"
                        ),
                        Some(at),
                    ));
                    continue;
                }
            }
            PAYLOAD_PARTIALLY_PRESENT => {
                problems.push(Problem::error(
                    format!(
                        "bat entry {i} is partially present, which only differencing images may use"
                    ),
                    Some(at),
                ));
                continue;
            }
            s => {
                problems.push(Problem::error(
                    format!("bat entry {i} has invalid state {s}"),
                    Some(at),
                ));
                continue;
            }
        }
        let block = i - i / (bat.chunk_ratio + 1);
        let end = host.saturating_add(bat.block_size);
        if host < HEADER_SECTION_LEN {
            problems.push(Problem::error(
                format!("block {block} is placed at {host:#x}, inside the header section"),
                Some(at),
            ));
            continue;
        }
        if end > file_len {
            problems.push(Problem::error(
                format!(
                    "block {block} at {host:#x} extends past the end of the {file_len}-byte \
                     file (truncated?)"
                ),
                Some(at),
            ));
            continue;
        }
        if let Some(r) = reserved.iter().find(|r| host < r.end && r.start < end) {
            problems.push(Problem::error(
                format!(
                    "block {block} at {host:#x} overlaps metadata or the log at {:#x}",
                    r.start
                ),
                Some(at),
            ));
            continue;
        }
        blocks.push((host, i, bat.block_size));
    }
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        let ((a, ia, len), (b, ib, _)) = (pair[0], pair[1]);
        if b < a + len {
            problems.push(Problem::error(
                format!(
                    "bat entries {ia} and {ib} place their blocks at overlapping {a:#x} and {b:#x}"
                ),
                Some(bat.entry_offset(ib)),
            ));
        }
    }
}
