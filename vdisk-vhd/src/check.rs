//! Validation shared by open and `vdisk check`: one pass over the file that stops only where
//! it cannot go on (no footer, no header, absurd sizes) and otherwise collects every problem.
//! Open refuses an image with any error-level problem; check reports them all. Reads only.

use vdisk_core::{Error, ErrorKind, HostFile, Problem, Result};
use zerocopy::{FromBytes, IntoBytes};

use crate::bat::Bat;
use crate::footer::{DiskType, Geometry};
use crate::format::{
    DISK_DIFFERENCING, DynamicHeader, FOOTER_COOKIE, FOOTER_LEN, Footer, HEADER_COOKIE, HEADER_LEN,
    HEADER_VERSION, MAX_BAT_ENTRIES, MAX_BLOCK_SIZE, MAX_OPEN_SIZE, MIN_BLOCK_SIZE, SECTOR,
    show_tag,
};
use crate::locator::{self, LocatorEntry};

/// Most block problems listed one by one; the rest are counted.
const MAX_LISTED: usize = 64;

/// Where the virtual size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeSource {
    /// The footer's current size (Hyper-V, Disk2VHD convention).
    CurrentSize,
    /// The CHS geometry, because the table cannot cover the current size (Virtual PC).
    Geometry,
}

/// What open learned about a dynamic disk.
#[derive(Debug, Clone)]
pub(crate) struct DynamicLayout {
    /// The header as read.
    pub header: DynamicHeader,
    /// Host offset of the header.
    pub header_offset: u64,
    /// Data bytes per block.
    pub block_size: u64,
    /// Bytes of the sector bitmap before each block's data.
    pub bitmap_len: u64,
    /// The table.
    pub bat: Bat,
    /// Differencing disks: the used parent locator entries (their data is metadata).
    pub locators: Vec<LocatorEntry>,
}

impl DynamicLayout {
    /// Host bytes one allocated block occupies.
    pub(crate) fn footprint(&self) -> u64 {
        self.bitmap_len + self.block_size
    }

    /// The header's host range.
    pub(crate) fn header_range(&self) -> std::ops::Range<u64> {
        self.header_offset..self.header_offset + HEADER_LEN
    }

    /// The table's host range, padded to a sector.
    pub(crate) fn bat_range(&self) -> std::ops::Range<u64> {
        let start = self.bat.offset();
        start..start + Bat::padded_len(self.bat.len())
    }

    /// Every metadata range between the footer copy and the footer: header, table, locator
    /// data. Sorted.
    pub(crate) fn metadata_ranges(&self) -> Vec<std::ops::Range<u64>> {
        let mut r = vec![self.header_range(), self.bat_range()];
        r.extend(self.locators.iter().map(|l| l.range.clone()));
        r.sort_unstable_by_key(|r| r.start);
        r
    }
}

/// Everything open needs, validated as far as the problems list says.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// The footer at the end of the file.
    pub footer: Footer,
    /// Host offset of that footer.
    pub footer_pos: u64,
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Virtual size in bytes.
    pub size: u64,
    /// Where `size` came from.
    pub size_source: SizeSource,
    /// Dynamic disks only.
    pub dynamic: Option<DynamicLayout>,
}

fn read_struct<T: FromBytes + IntoBytes>(
    file: &dyn HostFile,
    offset: u64,
    what: &str,
) -> Result<T> {
    let mut value = T::new_zeroed();
    file.read_at(value.as_mut_bytes(), offset).map_err(|e| {
        if e.kind() == ErrorKind::OutOfRange {
            Error::invalid(format!("the {what} lies past the end of the file"), offset)
        } else {
            e
        }
    })?;
    Ok(value)
}

/// Validates the image in `file`. Fatal problems are the `Err` (InvalidImage); the others are
/// pushed to `problems` in file order. The parent of a differencing disk is not looked at.
pub(crate) fn inspect(file: &dyn HostFile, problems: &mut Vec<Problem>) -> Result<Parsed> {
    let len = file.len()?;
    if len < FOOTER_LEN {
        return Err(Error::invalid(
            format!("the file is {len} bytes, shorter than the 512-byte vhd footer"),
            0,
        ));
    }
    let footer_pos = len - FOOTER_LEN;
    let footer: Footer = read_struct(file, footer_pos, "footer")?;
    if footer.cookie != FOOTER_COOKIE {
        let mut head = [0u8; 8];
        let copy_at_start = file.read_at(&mut head, 0).is_ok() && head == FOOTER_COOKIE;
        let hint = if copy_at_start {
            "; a footer copy is at offset 0, so the file was probably truncated"
        } else {
            ""
        };
        return Err(Error::invalid(
            format!(
                "no vhd footer at the end of the file: cookie is \"{}\", expected \"conectix\"{hint}",
                show_tag(&footer.cookie)
            ),
            footer_pos,
        ));
    }
    let stored = footer.checksum.get();
    let computed = footer.computed_checksum();
    if stored != computed && stored == footer.checksum_without_unique_id() {
        problems.push(Problem::warning(
            "footer checksum leaves out the unique id (a bug of old qemu versions); accepted",
            Some(footer_pos),
        ));
    } else if stored != computed
        && footer.disk_type.get() == DISK_DIFFERENCING
        && stored == footer.checksum_as_dynamic_without_unique_id()
    {
        problems.push(Problem::warning(
            "footer checksum is that of the dynamic image this differencing disk was converted from (stale); accepted",
            Some(footer_pos),
        ));
    } else if stored != computed {
        problems.push(Problem::error(
            format!(
                "footer checksum is {stored:#010x} but the footer's bytes call for {computed:#010x}"
            ),
            Some(footer_pos),
        ));
    }
    let raw_type = footer.disk_type.get();
    let disk_type = DiskType::from_raw(raw_type).ok_or_else(|| {
        Error::invalid(
            format!(
                "unknown disk type {raw_type} in the footer (2 fixed, 3 dynamic, 4 differencing)"
            ),
            footer_pos,
        )
    })?;
    let current_size = footer.current_size.get();
    if current_size > MAX_OPEN_SIZE {
        return Err(Error::invalid(
            format!(
                "the footer's disk size of {current_size} bytes is larger than vhd allows (2 TiB)"
            ),
            footer_pos,
        ));
    }
    if disk_type == DiskType::Fixed {
        if footer_pos < current_size {
            return Err(Error::invalid(
                format!(
                    "fixed disk of {current_size} bytes needs a file of at least {} bytes, but the file has {len}; it was probably truncated",
                    current_size + FOOTER_LEN
                ),
                footer_pos,
            ));
        }
        return Ok(Parsed {
            footer,
            footer_pos,
            disk_type,
            size: current_size,
            size_source: SizeSource::CurrentSize,
            dynamic: None,
        });
    }
    let (dynamic, size, size_source) = inspect_dynamic(file, &footer, footer_pos, problems)?;
    Ok(Parsed {
        footer,
        footer_pos,
        disk_type,
        size,
        size_source,
        dynamic: Some(dynamic),
    })
}

fn inspect_dynamic(
    file: &dyn HostFile,
    footer: &Footer,
    footer_pos: u64,
    problems: &mut Vec<Problem>,
) -> Result<(DynamicLayout, u64, SizeSource)> {
    // The copy of the footer at offset 0 is redundancy for repair tools: a mismatch is worth
    // telling, not a reason to refuse the image.
    if footer_pos >= FOOTER_LEN {
        let copy: Footer = read_struct(file, 0, "footer copy")?;
        if copy.as_bytes() != footer.as_bytes() {
            problems.push(Problem::warning(
                "the footer copy at the start of the file differs from the footer at the end (the end one is used)",
                Some(0),
            ));
        }
    }
    let header_offset = footer.data_offset.get();
    if header_offset < FOOTER_LEN
        || header_offset
            .checked_add(HEADER_LEN)
            .is_none_or(|end| end > footer_pos)
    {
        return Err(Error::invalid(
            format!(
                "the footer places the dynamic header at {header_offset:#x}, outside the file's {footer_pos:#x} bytes before the footer"
            ),
            footer_pos,
        ));
    }
    let header: DynamicHeader = read_struct(file, header_offset, "dynamic header")?;
    if header.cookie != HEADER_COOKIE {
        return Err(Error::invalid(
            format!(
                "no dynamic header where the footer points: cookie is \"{}\", expected \"cxsparse\"",
                show_tag(&header.cookie)
            ),
            header_offset,
        ));
    }
    let stored = header.checksum.get();
    let computed = header.computed_checksum();
    if stored != computed
        && footer.disk_type.get() == DISK_DIFFERENCING
        && stored == header.checksum_without_parent_fields()
    {
        problems.push(Problem::warning(
            "dynamic header checksum leaves out the parent fields (stale from a converted dynamic image); accepted",
            Some(header_offset),
        ));
    } else if stored != computed {
        problems.push(Problem::error(
            format!("dynamic header checksum is {stored:#010x} but the header's bytes call for {computed:#010x}"),
            Some(header_offset),
        ));
    }
    let version = header.version.get();
    if version != HEADER_VERSION {
        return Err(Error::invalid(
            format!(
                "unsupported dynamic header version {version:#010x} (only 0x00010000 is defined)"
            ),
            header_offset,
        ));
    }
    let block_size = u64::from(header.block_size.get());
    if block_size % SECTOR != 0 || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::invalid(
            format!(
                "block size of {block_size} bytes is not a multiple of 512 between 512 bytes and 256 MiB"
            ),
            header_offset,
        ));
    }
    let bitmap_len = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
    let entries = u64::from(header.max_table_entries.get());
    if entries > MAX_BAT_ENTRIES {
        return Err(Error::invalid(
            format!(
                "the bat claims {entries} entries, more than the {MAX_BAT_ENTRIES} this tool accepts"
            ),
            header_offset,
        ));
    }
    let table_offset = header.table_offset.get();
    let table_len = Bat::padded_len(entries);
    if table_offset < FOOTER_LEN
        || table_offset
            .checked_add(table_len)
            .is_none_or(|end| end > footer_pos)
    {
        return Err(Error::invalid(
            format!(
                "the bat of {entries} entries at {table_offset:#x} lies outside the file's {footer_pos:#x} bytes before the footer"
            ),
            header_offset,
        ));
    }
    if table_offset < header_offset + HEADER_LEN && header_offset < table_offset + table_len {
        return Err(Error::invalid(
            "the bat overlaps the dynamic header",
            table_offset,
        ));
    }
    let capacity = entries * block_size;
    let current_size = footer.current_size.get();
    let chs_size = Geometry::of(footer).bytes();
    let (size, size_source) = if current_size <= capacity {
        (current_size, SizeSource::CurrentSize)
    } else if chs_size > 0 && chs_size <= capacity {
        // qemu sized some tables by the CHS geometry. A geometry of zero cylinders (tiny
        // disks) would turn a too-short table into an empty disk: that is damage, not qemu.
        (chs_size, SizeSource::Geometry)
    } else {
        return Err(Error::invalid(
            format!(
                "the bat's {entries} blocks of {block_size} bytes cover {capacity} bytes, less than the disk size of {current_size} bytes"
            ),
            header_offset,
        ));
    };
    let bat = Bat::load(file, table_offset, entries)?;
    let mut layout = DynamicLayout {
        header,
        header_offset,
        block_size,
        bitmap_len,
        bat,
        locators: Vec::new(),
    };
    if footer.disk_type.get() == DISK_DIFFERENCING {
        let metadata = [layout.header_range(), layout.bat_range()];
        for (index, code, range, len) in locator::validate(
            &header.parent_locators,
            header_offset,
            footer_pos,
            &metadata,
            problems,
        ) {
            // `len` is at most MAX_LOCATOR_DATA and the range lies inside the file.
            let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_at(&mut data, range.start)?;
            layout.locators.push(LocatorEntry {
                index,
                code,
                range,
                data,
            });
        }
    }
    check_blocks(&layout, footer_pos, problems);
    Ok((layout, size, size_source))
}

/// Every allocated block must lie between the footer copy and the footer, clear of the header,
/// the table and every other block.
fn check_blocks(layout: &DynamicLayout, footer_pos: u64, problems: &mut Vec<Problem>) {
    let footprint = layout.footprint();
    let header = layout.header_range();
    let table = layout.bat_range();
    let locators: Vec<_> = layout.locators.iter().map(|l| l.range.clone()).collect();
    let mut listed = 0usize;
    let mut unlisted = 0u64;
    let mut report = |problems: &mut Vec<Problem>, msg: String, at: u64| {
        if listed < MAX_LISTED {
            listed += 1;
            problems.push(Problem::error(msg, Some(at)));
        } else {
            unlisted += 1;
        }
    };
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for (block, host) in layout.bat.allocated() {
        let end = host + footprint;
        if host < FOOTER_LEN {
            report(
                problems,
                format!(
                    "block {block} at {host:#x} overlaps the footer copy at the start of the file"
                ),
                host,
            );
        } else if end > footer_pos {
            report(
                problems,
                format!(
                    "block {block} at {host:#x} ends at {end:#x}, past the footer at {footer_pos:#x}; the file may be truncated"
                ),
                host,
            );
        } else if host < header.end && header.start < end {
            report(
                problems,
                format!("block {block} at {host:#x} overlaps the dynamic header"),
                host,
            );
        } else if locators.iter().any(|l| host < l.end && l.start < end) {
            report(
                problems,
                format!("block {block} at {host:#x} overlaps parent locator data"),
                host,
            );
        } else if host < table.end && table.start < end {
            report(
                problems,
                format!("block {block} at {host:#x} overlaps the bat"),
                host,
            );
        } else {
            placed.push((host, block));
        }
    }
    placed.sort_unstable();
    for pair in placed.windows(2) {
        let [(a_host, a), (b_host, b)] = [pair[0], pair[1]];
        if b_host < a_host + footprint {
            report(
                problems,
                format!("block {b} at {b_host:#x} overlaps block {a} at {a_host:#x}"),
                b_host,
            );
        }
    }
    if unlisted > 0 {
        problems.push(Problem::error(
            format!("{unlisted} more misplaced blocks not listed"),
            None,
        ));
    }
}
