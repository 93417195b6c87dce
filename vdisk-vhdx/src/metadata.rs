//! The metadata region: file parameters, sizes and the disk's identity.

use std::ops::Range;

use uuid::Uuid;
use vdisk_core::{Error, ErrorKind, Result};
use zerocopy::FromBytes;

use crate::format::{
    FileParameters, ITEM_DISK_ID, ITEM_DISK_SIZE, ITEM_FILE_PARAMETERS, ITEM_LOGICAL_SECTOR,
    ITEM_PARENT_LOCATOR, ITEM_PHYSICAL_SECTOR, MAX_BLOCK_SIZE, MAX_DISK_SIZE, MAX_METADATA_ENTRIES,
    MAX_METADATA_ITEM_LEN, META_IS_REQUIRED, META_IS_USER, METADATA_SIGNATURE, METADATA_TABLE_LEN,
    MIN_BLOCK_SIZE, MetadataEntry, MetadataTableHeader, PARAM_HAS_PARENT,
    PARAM_LEAVE_BLOCK_ALLOCATED, guid,
};
use crate::locator::{ParentLocator, parse_locator};
use crate::overlay::HostView;

/// The metadata items this crate uses.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// Payload block size in bytes.
    pub block_size: u32,
    /// LeaveBlockAllocated: a fixed disk.
    pub leave_block_allocated: bool,
    /// Virtual size in bytes.
    pub disk_size: u64,
    /// Virtual disk id (SCSI page 83).
    pub disk_id: Uuid,
    /// Logical sector size: 512 or 4096.
    pub logical_sector_size: u32,
    /// Physical sector size: 512 or 4096.
    pub physical_sector_size: u32,
    /// HasParent: a differencing disk, with its parent locator.
    pub parent: Option<ParentLocator>,
}

/// Reads the metadata table and the known items. Unknown required items (and parent locators
/// of another type than VHDX) are refused with [`ErrorKind::Unsupported`].
pub(crate) fn read_metadata(view: &HostView, region: &Range<u64>) -> Result<Metadata> {
    let base = region.start;
    let region_len = region.end - region.start;
    if region_len < METADATA_TABLE_LEN as u64 {
        return Err(Error::invalid(
            "the metadata region is smaller than its 64 KiB table",
            base,
        ));
    }
    let mut table = vec![0u8; METADATA_TABLE_LEN];
    view.read_at(&mut table, base)?;
    let (header, rest) = MetadataTableHeader::read_from_prefix(&table)
        .map_err(|_| Error::invalid("cannot parse the metadata table", base))?;
    if header.signature != METADATA_SIGNATURE {
        return Err(Error::invalid(
            "metadata table signature \"metadata\" missing",
            base,
        ));
    }
    let count = header.entry_count.get();
    if count > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(
            format!(
                "metadata table has {count} entries, more than the {MAX_METADATA_ENTRIES} allowed"
            ),
            base + 10,
        ));
    }
    let (entries, _) = <[MetadataEntry]>::ref_from_prefix_with_elems(rest, usize::from(count))
        .map_err(|_| Error::invalid("metadata table entries do not fit", base))?;

    let mut items: [Option<Vec<u8>>; 6] = Default::default();
    let known = [
        ITEM_FILE_PARAMETERS,
        ITEM_DISK_SIZE,
        ITEM_DISK_ID,
        ITEM_LOGICAL_SECTOR,
        ITEM_PHYSICAL_SECTOR,
        ITEM_PARENT_LOCATOR,
    ];
    let mut placed: Vec<Range<u64>> = Vec::new();
    let mut item_at = [base; 6];
    for (i, e) in entries.iter().enumerate() {
        let at = base + 32 + 32 * i as u64;
        let id = guid(e.item_id);
        let flags = e.flags.get();
        let (offset, length) = (u64::from(e.offset.get()), e.length.get());
        let slot = known.iter().position(|k| *k == id);
        if slot.is_none() || flags & META_IS_USER != 0 {
            if flags & META_IS_REQUIRED != 0 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the image needs metadata item {{{id}}}, which this version does not \
                         know; nothing was changed"
                    ),
                )
                .with_offset(at));
            }
            continue;
        }
        if length > MAX_METADATA_ITEM_LEN {
            return Err(Error::invalid(
                format!("metadata item {{{id}}} is {length} bytes, more than the 1 MiB allowed"),
                at,
            ));
        }
        let end = offset + u64::from(length);
        if length > 0 && (offset < METADATA_TABLE_LEN as u64 || end > region_len) {
            return Err(Error::invalid(
                format!(
                    "metadata item {{{id}}} at {offset:#x} of {length} bytes lies outside the \
                     metadata region's item area"
                ),
                at,
            ));
        }
        if length > 0 && placed.iter().any(|r| offset < r.end && r.start < end) {
            return Err(Error::invalid(
                format!("metadata item {{{id}}} at {offset:#x} overlaps another item"),
                at,
            ));
        }
        placed.push(offset..end);
        let Some(slot) = slot else { continue };
        if items[slot].is_some() {
            return Err(Error::invalid(
                format!("metadata item {{{id}}} appears twice"),
                at,
            ));
        }
        let mut data = vec![0u8; length as usize];
        view.read_at(&mut data, base + offset)?;
        items[slot] = Some(data);
        item_at[slot] = base + offset;
    }
    let [params, size, disk_id, logical, physical, locator] = items;
    let missing = |what: &str| Error::invalid(format!("metadata item \"{what}\" is missing"), base);
    let params = params.ok_or_else(|| missing("file parameters"))?;
    let params = FileParameters::read_from_bytes(&params)
        .map_err(|_| Error::invalid("the file parameters item is not 8 bytes", base))?;
    let flags = params.flags.get();
    let parent = if flags & PARAM_HAS_PARENT != 0 {
        let item = locator.ok_or_else(|| {
            Error::invalid(
                "the image is differencing (HasParent) but has no parent locator item",
                base,
            )
        })?;
        Some(parse_locator(&item, item_at[5])?)
    } else {
        None
    };
    let block_size = params.block_size.get();
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(Error::invalid(
            format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
            base,
        ));
    }
    let logical_sector_size = sector_size(logical, "logical sector size", base)?;
    let physical_sector_size = sector_size(physical, "physical sector size", base)?;
    let disk_size = size
        .as_deref()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| missing("virtual disk size (8 bytes)"))?;
    if disk_size == 0
        || disk_size > MAX_DISK_SIZE
        || disk_size % u64::from(logical_sector_size) != 0
    {
        return Err(Error::invalid(
            format!(
                "virtual disk size {disk_size} is zero, above 64 TiB or not a multiple of the \
                 {logical_sector_size}-byte logical sector"
            ),
            base,
        ));
    }
    let disk_id = disk_id
        .as_deref()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(guid)
        .ok_or_else(|| missing("virtual disk id (16 bytes)"))?;
    Ok(Metadata {
        block_size,
        // Ignored when HasParent is set (MS-VHDX 2.6.2.1).
        leave_block_allocated: flags & PARAM_LEAVE_BLOCK_ALLOCATED != 0
            && flags & PARAM_HAS_PARENT == 0,
        disk_size,
        disk_id,
        logical_sector_size,
        physical_sector_size,
        parent,
    })
}

fn sector_size(item: Option<Vec<u8>>, what: &str, base: u64) -> Result<u32> {
    let value = item
        .as_deref()
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| {
            Error::invalid(
                format!("metadata item \"{what}\" (4 bytes) is missing"),
                base,
            )
        })?;
    if value != 512 && value != 4096 {
        return Err(Error::invalid(
            format!("{what} {value} is neither 512 nor 4096"),
            base,
        ));
    }
    Ok(value)
}
