//! Creating fixed, dynamic and differencing images.
//!
//! A differencing image takes its size, geometry and (unless asked otherwise) block size from
//! its parent, records the parent's unique id, time stamp and file name, and stores two parent
//! locators as Windows does: W2ru (`.\name`, relative to the child's folder) and W2ku (the
//! absolute path), both UTF-16LE, in sector-aligned space between the header and the BAT.
//!
//! Size convention: the virtual size is the requested size rounded up to a sector, stored as
//! both original and current size; the CHS geometry is the spec's for that many sectors (it
//! may address slightly less). Hyper-V, Windows and Disk2VHD size images by the current size;
//! qemu does too for every creator except "vpc " and "qemu", so for our creator "vdsk"
//! (checked with qemu-img 10.0: a "vdsk" image whose current size exceeds its CHS size opens
//! with the current size). Virtual PC alone would see the CHS size.

use vdisk_core::parent::MAX_CHAIN_DEPTH;
use vdisk_core::{
    BlockDevice, CreateSpec, DiskImage, Error, ErrorKind, HostFile, ImageKind, Result,
};
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::bat::Bat;
use crate::chain;
use crate::footer::{Geometry, vhd_timestamp_now};
use crate::format::{
    CREATOR_APP, CREATOR_HOST_OS, CREATOR_VERSION, DEFAULT_BLOCK_SIZE, DISK_DIFFERENCING,
    DISK_DYNAMIC, DISK_FIXED, DynamicHeader, FEATURES_RESERVED, FOOTER_COOKIE, FOOTER_LEN,
    FOOTER_VERSION, Footer, HEADER_COOKIE, HEADER_LEN, HEADER_VERSION, MAX_BAT_ENTRIES,
    MAX_BLOCK_SIZE, MAX_CREATE_SIZE, MIN_BLOCK_SIZE, NO_DATA_OFFSET, SECTOR,
};
use crate::image::VhdImage;
use crate::locator;

/// Where the dynamic header goes: right after the footer copy.
const HEADER_OFFSET: u64 = FOOTER_LEN;
/// Where the BAT goes: right after the header.
const BAT_OFFSET: u64 = HEADER_OFFSET + HEADER_LEN;

/// The virtual size and geometry an image created for `requested` bytes gets.
pub(crate) fn created_size(requested: u64) -> Option<(u64, Geometry)> {
    let size = requested.checked_next_multiple_of(SECTOR)?;
    Some((size, Geometry::for_sectors(size / SECTOR)))
}

/// Checks what can be checked of `spec` without opening a file (a differencing parent is
/// looked at only by [`create`]).
pub(crate) fn check_spec(spec: &CreateSpec) -> Result<()> {
    let invalid = |msg: String| Error::new(ErrorKind::InvalidInput, msg);
    check_sector_size(spec)?;
    if spec.kind == ImageKind::Differencing {
        if spec.parent.is_none() || spec.path.is_none() {
            return Err(invalid(
                "a differencing image needs its parent's path and its own path".to_string(),
            ));
        }
        if let Some(b) = spec.block_size {
            check_block_size(b)?;
        }
        return Ok(());
    }
    if spec.size == 0 || spec.size > MAX_CREATE_SIZE {
        return Err(invalid(format!(
            "a vhd must hold between 1 byte and 2040 GiB; {} bytes were asked for",
            spec.size
        )));
    }
    if spec.kind == ImageKind::Fixed && spec.block_size.is_some() {
        return Err(invalid(
            "a fixed vhd has no blocks (it is the disk's bytes followed by a footer); leave out \
             the block size"
                .to_string(),
        ));
    }
    let (size, _) =
        created_size(spec.size).ok_or_else(|| invalid("disk size overflows".to_string()))?;
    if spec.kind == ImageKind::Dynamic {
        new_header(
            size,
            spec.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            BAT_OFFSET,
        )?;
    }
    Ok(())
}

/// Creates an image as `spec` says in the empty `file`, durable on return.
pub(crate) fn create(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<VhdImage> {
    let invalid = |msg: String| Error::new(ErrorKind::InvalidInput, msg);
    if spec.kind == ImageKind::Differencing {
        return create_differencing(file, spec);
    }
    if !matches!(spec.kind, ImageKind::Fixed | ImageKind::Dynamic) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "vhd images are fixed, dynamic or differencing; a {} image cannot be created",
                spec.kind.as_str()
            ),
        ));
    }
    check_spec(spec)?;
    check_empty(&*file)?;
    let (size, geometry) =
        created_size(spec.size).ok_or_else(|| invalid("disk size overflows".to_string()))?;
    let mut footer = new_footer(size, geometry);
    match spec.kind {
        ImageKind::Fixed => {
            footer.data_offset = U64::new(NO_DATA_OFFSET);
            footer.disk_type = U32::new(DISK_FIXED);
            footer.seal();
            file.set_len(size)?;
            file.write_at(footer.as_bytes(), size)?;
        }
        _ => {
            let block_size = spec.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
            let (header, entries) = new_header(size, block_size, BAT_OFFSET)?;
            footer.data_offset = U64::new(HEADER_OFFSET);
            footer.disk_type = U32::new(DISK_DYNAMIC);
            footer.seal();
            let bat = Bat::new_empty(BAT_OFFSET, entries);
            let footer_at = BAT_OFFSET + Bat::padded_len(entries);
            file.write_at(footer.as_bytes(), 0)?;
            file.write_at(header.as_bytes(), HEADER_OFFSET)?;
            file.write_at(bat.as_bytes(), BAT_OFFSET)?;
            file.write_at(footer.as_bytes(), footer_at)?;
        }
    }
    file.sync()?;
    VhdImage::open(file, true)
}

fn check_sector_size(spec: &CreateSpec) -> Result<()> {
    if let Some(s) = spec.logical_sector_size.filter(|&s| s != 512) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("vhd images have 512-byte sectors; {s}-byte sectors need vhdx"),
        ));
    }
    Ok(())
}

fn check_empty(file: &dyn HostFile) -> Result<()> {
    let len = file.len()?;
    if len != 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the target file already holds {len} bytes; vhd images are created in empty files"
            ),
        ));
    }
    Ok(())
}

/// A footer for a new image of `size` bytes (type, data offset and checksum still to set).
fn new_footer(size: u64, geometry: Geometry) -> Footer {
    let mut footer = Footer::new_zeroed();
    footer.cookie = FOOTER_COOKIE;
    footer.features = U32::new(FEATURES_RESERVED);
    footer.version = U32::new(FOOTER_VERSION);
    footer.timestamp = U32::new(vhd_timestamp_now());
    footer.creator_app = CREATOR_APP;
    footer.creator_version = U32::new(CREATOR_VERSION);
    footer.creator_host_os = CREATOR_HOST_OS;
    footer.original_size = U64::new(size);
    footer.current_size = U64::new(size);
    footer.cylinders = U16::new(geometry.cylinders);
    footer.heads = geometry.heads;
    footer.sectors_per_track = geometry.sectors_per_track;
    footer.unique_id = *uuid::Uuid::new_v4().as_bytes();
    footer
}

/// Refuses a block size VHD readers do not take.
fn check_block_size(block_size: u64) -> Result<()> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "block size of {block_size} bytes is not a power of two between 512 bytes and 256 MiB"
            ),
        ));
    }
    Ok(())
}

/// A sealed dynamic header for `size` bytes in `block_size` blocks with its table at
/// `table_offset` (parent fields still to set for a child, then reseal), and the table's
/// entry count.
fn new_header(size: u64, block_size: u64, table_offset: u64) -> Result<(DynamicHeader, u64)> {
    let invalid = |msg: String| Error::new(ErrorKind::InvalidInput, msg);
    check_block_size(block_size)?;
    let entries = size.div_ceil(block_size);
    if entries > MAX_BAT_ENTRIES {
        return Err(invalid(format!(
            "a {size}-byte disk in {block_size}-byte blocks needs {entries} table entries, more than {MAX_BAT_ENTRIES}; choose a larger block size"
        )));
    }
    let mut header = DynamicHeader::new_zeroed();
    header.cookie = HEADER_COOKIE;
    header.data_offset = U64::new(u64::MAX);
    header.table_offset = U64::new(table_offset);
    header.version = U32::new(HEADER_VERSION);
    // Both fit: entries <= MAX_BAT_ENTRIES, block_size <= MAX_BLOCK_SIZE.
    header.max_table_entries = U32::new(u32::try_from(entries).unwrap_or(u32::MAX));
    header.block_size = U32::new(u32::try_from(block_size).unwrap_or(u32::MAX));
    header.seal();
    Ok((header, entries))
}

/// Creates a differencing image over `spec.parent` (a VHD) for a file at `spec.path`.
fn create_differencing(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<VhdImage> {
    check_sector_size(spec)?;
    let (Some(parent_path), Some(child_path)) = (&spec.parent, spec.path.as_ref()) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a differencing image needs its parent's path and its own path",
        ));
    };
    check_empty(&*file)?;
    vdisk_core::parent::check_storable(parent_path)?;
    let parent = chain::open_for_create(parent_path, &spec.parent_dirs)?;
    let depth = std::iter::successors(Some(&parent), |p| p.parent.as_deref()).count();
    if depth >= MAX_CHAIN_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} heads a chain of {depth} images; a child would make it deeper than the {MAX_CHAIN_DEPTH} vdisk opens",
                parent_path.display()
            ),
        ));
    }
    let size = parent.size();
    let block_size = spec.block_size.unwrap_or_else(|| match parent.kind() {
        ImageKind::Fixed => DEFAULT_BLOCK_SIZE,
        _ => parent.block_size(),
    });
    let mut footer = new_footer(size, Geometry::of(&parent.footer));
    footer.data_offset = U64::new(HEADER_OFFSET);
    footer.disk_type = U32::new(DISK_DIFFERENCING);
    footer.seal();

    // Locator data right after the header, each in its own sector-aligned space.
    let mut at = BAT_OFFSET;
    let mut entries_data = Vec::new();
    for (code, data) in locator::for_create(parent_path, child_path) {
        let space = (data.len() as u64).next_multiple_of(SECTOR).max(SECTOR);
        entries_data.push((locator::entry(code, at, data.len() as u64, space), at, data));
        at += space;
    }
    let table_offset = at;
    let (mut header, entries) = new_header(size, block_size, table_offset)?;
    header.parent_unique_id = parent.unique_id();
    header.parent_timestamp = parent.footer.timestamp;
    let name = parent_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    header.parent_name = locator::encode_parent_name(&name);
    for (slot, (entry, _, _)) in header.parent_locators.iter_mut().zip(&entries_data) {
        *slot = *entry;
    }
    header.seal();
    let bat = Bat::new_empty(table_offset, entries);
    let footer_at = table_offset + Bat::padded_len(entries);
    file.write_at(footer.as_bytes(), 0)?;
    file.write_at(header.as_bytes(), HEADER_OFFSET)?;
    for (_, offset, data) in &entries_data {
        let mut padded = data.clone();
        padded.resize(padded.len().next_multiple_of(512).max(512), 0);
        file.write_at(&padded, *offset)?;
    }
    file.write_at(bat.as_bytes(), table_offset)?;
    file.write_at(footer.as_bytes(), footer_at)?;
    file.sync()?;
    let mut image = VhdImage::open_unlinked(file, true)?;
    image.attach_parent(parent, Some(parent_path.clone()))?;
    Ok(image)
}
