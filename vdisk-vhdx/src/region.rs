//! The region table: where the BAT and the metadata live.

use std::ops::Range;

use vdisk_core::{Error, ErrorKind, Problem, Result};
use zerocopy::FromBytes;

use crate::format::{
    BAT_REGION, HEADER_SECTION_LEN, MAX_REGION_ENTRIES, METADATA_REGION, REGION_ALIGN,
    REGION_SIGNATURE, REGION_TABLE_LEN, REGION_TABLE_OFFSETS, RegionEntry, RegionTableHeader,
    crc_with_zeroed_field, guid,
};
use crate::overlay::HostView;

/// The two regions every VHDX has.
#[derive(Debug, Clone)]
pub(crate) struct Regions {
    /// Host range of the block allocation table.
    pub bat: Range<u64>,
    /// Host range of the metadata region.
    pub metadata: Range<u64>,
    /// Every region (known or not), for overlap checks of blocks.
    pub all: Vec<Range<u64>>,
}

/// Reads both region tables (through the replayed log), picks the first valid one and
/// validates its entries. A bad copy is a warning; overlaps and misplaced regions are errors
/// pushed to `problems`; no usable table or a missing BAT or metadata region fails.
pub(crate) fn read_regions(
    view: &HostView,
    log: &Range<u64>,
    problems: &mut Vec<Problem>,
) -> Result<Regions> {
    let mut tables: [Option<Vec<u8>>; 2] = [None, None];
    let mut first_failure = None;
    for (i, &offset) in REGION_TABLE_OFFSETS.iter().enumerate() {
        let mut buf = vec![0u8; REGION_TABLE_LEN];
        view.read_at(&mut buf, offset)?;
        match validate_table(&buf) {
            Ok(()) => tables[i] = Some(buf),
            Err(msg) => {
                problems.push(Problem::warning(
                    format!("region table {} is not valid: {msg}", i + 1),
                    Some(offset),
                ));
                first_failure.get_or_insert((msg, offset));
            }
        }
    }
    if let [Some(a), Some(b)] = &tables
        && a != b
    {
        problems.push(Problem::warning(
            "the two region tables differ; the first is used",
            Some(REGION_TABLE_OFFSETS[1]),
        ));
    }
    let (index, table) = match tables {
        [Some(a), _] => (0, a),
        [None, Some(b)] => (1, b),
        [None, None] => {
            let (msg, at) = first_failure.unwrap_or_default();
            return Err(Error::invalid(
                format!("neither region table is valid: {msg}"),
                at,
            ));
        }
    };
    let base = REGION_TABLE_OFFSETS[index];
    parse_entries(&table, base, view.len(), log, problems)
}

fn validate_table(buf: &[u8]) -> std::result::Result<(), String> {
    let (header, _) = RegionTableHeader::read_from_prefix(buf).map_err(|_| "short".to_string())?;
    if header.signature != REGION_SIGNATURE {
        return Err("signature \"regi\" missing".into());
    }
    let crc = crc_with_zeroed_field(buf, 4);
    if crc != header.checksum.get() {
        return Err(format!(
            "checksum {:#010x} does not match the computed {crc:#010x}",
            header.checksum.get()
        ));
    }
    let count = header.entry_count.get();
    if count > MAX_REGION_ENTRIES {
        return Err(format!(
            "{count} entries, more than the {MAX_REGION_ENTRIES} allowed"
        ));
    }
    Ok(())
}

fn parse_entries(
    table: &[u8],
    base: u64,
    file_len: u64,
    log: &Range<u64>,
    problems: &mut Vec<Problem>,
) -> Result<Regions> {
    let (header, rest) = RegionTableHeader::read_from_prefix(table)
        .map_err(|_| Error::invalid("cannot parse the region table", base))?;
    let count = header.entry_count.get().min(MAX_REGION_ENTRIES) as usize;
    let (entries, _) = <[RegionEntry]>::ref_from_prefix_with_elems(rest, count)
        .map_err(|_| Error::invalid("region table entries do not fit", base))?;
    let mut bat = None;
    let mut metadata = None;
    let mut all: Vec<(Range<u64>, u64)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = base + 16 + 32 * i as u64;
        let id = guid(e.guid);
        let start = e.file_offset.get();
        let len = u64::from(e.length.get());
        let known = id == BAT_REGION || id == METADATA_REGION;
        if !known {
            if e.required.get() & 1 != 0 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the image needs region {{{id}}}, which this version does not know; \
                         nothing was changed"
                    ),
                )
                .with_offset(at));
            }
            problems.push(Problem::warning(
                format!("unknown optional region {{{id}}} is ignored"),
                Some(at),
            ));
        }
        let end = start.saturating_add(len);
        if start % REGION_ALIGN != 0 || len % REGION_ALIGN != 0 || len == 0 {
            problems.push(Problem::error(
                format!(
                    "region {{{id}}} at {start:#x} of {len:#x} bytes is not 1 MiB aligned or \
                     is empty"
                ),
                Some(at),
            ));
        }
        if start < HEADER_SECTION_LEN {
            problems.push(Problem::error(
                format!("region {{{id}}} at {start:#x} overlaps the header section"),
                Some(at),
            ));
        }
        if end > file_len {
            problems.push(Problem::error(
                format!(
                    "region {{{id}}} at {start:#x} of {len:#x} bytes extends past the end of \
                     the {file_len}-byte file (truncated?)"
                ),
                Some(at),
            ));
        }
        if start < log.end && log.start < end {
            problems.push(Problem::error(
                format!("region {{{id}}} at {start:#x} overlaps the log"),
                Some(at),
            ));
        }
        for (other, _) in &all {
            if start < other.end && other.start < end {
                problems.push(Problem::error(
                    format!(
                        "region {{{id}}} at {start:#x} overlaps another region at {:#x}",
                        other.start
                    ),
                    Some(at),
                ));
            }
        }
        let slot = if id == BAT_REGION {
            Some(&mut bat)
        } else if id == METADATA_REGION {
            Some(&mut metadata)
        } else {
            None
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err(Error::invalid(
                    format!("region {{{id}}} appears twice in the region table"),
                    at,
                ));
            }
            *slot = Some(start..end);
        }
        all.push((start..end, at));
    }
    let bat = bat.ok_or_else(|| Error::invalid("the region table has no bat region", base))?;
    let metadata =
        metadata.ok_or_else(|| Error::invalid("the region table has no metadata region", base))?;
    Ok(Regions {
        bat,
        metadata,
        all: all.into_iter().map(|(r, _)| r).collect(),
    })
}
