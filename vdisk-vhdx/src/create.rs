//! Creating fixed, dynamic and differencing images, laid out as Hyper-V and qemu do.
//!
//! ```text
//!  0        file identifier ("vhdxfile", creator "vdisk")
//!  64 KiB   header 1 (sequence 0)       128 KiB  header 2 (sequence 1, current)
//!  192 KiB  region table 1              256 KiB  region table 2 (identical)
//!  1 MiB    log (1 MiB, empty: LogGuid zero)
//!  2 MiB    metadata region (1 MiB): table, then the five required items at 64 KiB
//!           (differencing: and the parent locator after them)
//!  3 MiB    BAT (payload entries + a sector-bitmap slot per chunk, rounded up to 1 MiB)
//!  ...      fixed: every payload block, FULLY_PRESENT, zeros; dynamic: nothing;
//!           differencing: one zeroed sector bitmap block per chunk (see `write_bat`)
//! ```
//!
//! A differencing image takes its virtual size, logical and physical sector sizes, virtual disk
//! id and (unless the spec names one) its block size from the parent, which must be VHDX. Its locator holds
//! `parent_linkage` (the parent's DataWriteGuid, lowercase in braces) and `relative_path`
//! (`.\name` or `..\dir\name`, from the child's folder); `absolute_win32_path` only on
//! Windows hosts, since elsewhere no meaningful Windows path exists, and no `volume_path`.
//!
//! Choices: the default block size is 32 MiB (Hyper-V's default for dynamic and fixed VHDX;
//! qemu picks 8 to 64 MiB by disk size, 32 MiB for 100 GiB..32 TiB). The virtual size is
//! rounded up to the logical sector size (as the VHD backend rounds up to 512 bytes), and
//! must lie between one sector and 64 TiB (MS-VHDX 2.6.2.2).

use vdisk_core::{
    Access, BlockDevice, ChainContext, Confidence, CreateSpec, DiskImage, Error, ErrorKind,
    FormatDriver, HostFile, ImageKind, OpenOptions, Result, StdFile,
};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::format::{
    BAT_REGION, CHUNK_SECTORS, FILE_SIGNATURE, FileIdentifier, FileParameters, HEADER_OFFSETS,
    HEADER_SIGNATURE, HEADER_VERSION, Header, ITEM_DISK_ID, ITEM_DISK_SIZE, ITEM_FILE_PARAMETERS,
    ITEM_LOGICAL_SECTOR, ITEM_PARENT_LOCATOR, ITEM_PHYSICAL_SECTOR, LOG_VERSION, MAX_BLOCK_SIZE,
    MAX_DISK_SIZE, META_IS_REQUIRED, METADATA_REGION, METADATA_SIGNATURE, METADATA_TABLE_LEN, MIB,
    MIN_BLOCK_SIZE, MetadataEntry, MetadataTableHeader, PARAM_HAS_PARENT,
    PARAM_LEAVE_BLOCK_ALLOCATED, PAYLOAD_FULLY_PRESENT, REGION_SIGNATURE, REGION_TABLE_LEN,
    REGION_TABLE_OFFSETS, RegionEntry, RegionTableHeader, SB_PRESENT, SECTOR_BITMAP_LEN,
};
use crate::image::VhdxImage;
use crate::locator::build_locator;

/// Block size used when the spec names none (Hyper-V's default).
pub(crate) const DEFAULT_BLOCK_SIZE: u64 = 32 * MIB;
/// Where the log goes, and its length.
const LOG_OFFSET: u64 = MIB;
const LOG_LEN: u32 = 1 << 20;
/// Where the metadata region goes, and its length.
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LEN: u32 = 1 << 20;
/// Where the BAT goes.
const BAT_OFFSET: u64 = 3 * MIB;
/// Creator written to the file identifier.
const CREATOR: &str = "vdisk";
/// Physical sector size of created images.
const PHYSICAL_SECTOR: u32 = 4096;
/// Metadata entry flag: the item belongs to the virtual disk (copied by conversions).
const META_IS_VIRTUAL_DISK: u32 = 2;
/// BAT bytes written per call for fixed images.
const BAT_CHUNK: usize = 1 << 20;

/// What a differencing image takes from its parent.
#[derive(Debug, Clone)]
struct ParentFacts {
    size: u64,
    logical_sector: u32,
    physical_sector: u32,
    block_size: u64,
    /// The parent's virtual disk id (SCSI page 83), which the child keeps: it is the same
    /// virtual disk, later in time (as Hyper-V checkpoints keep the disk's identity).
    disk_id: uuid::Uuid,
    /// The encoded parent locator item.
    locator: Vec<u8>,
}

/// The validated shape of a new image.
#[derive(Debug, Clone, Copy)]
struct Shape {
    fixed: bool,
    differencing: bool,
    physical_sector: u32,
    size: u64,
    block_size: u64,
    logical_sector: u32,
    data_blocks: u64,
    chunk_ratio: u64,
    bat_entries: u64,
    bat_len: u64,
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Opens the parent named by a differencing `spec` (read-only, with its own parents) and
/// collects what the child takes from it.
fn parent_facts(spec: &CreateSpec) -> Result<ParentFacts> {
    let parent = spec.parent.as_deref().ok_or_else(|| {
        invalid("a differencing image needs a parent image to be named".to_string())
    })?;
    let child = spec.path.as_deref().ok_or_else(|| {
        invalid(
            "creating a differencing image needs the new image's path (its parent locator \
             is relative to it)"
                .to_string(),
        )
    })?;
    vdisk_core::parent::check_storable(parent)?;
    let file = StdFile::open(parent, Access::ReadOnly)?;
    if crate::DRIVER.probe(&file)? != Confidence::Yes {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the parent is not a vhdx image (a vhdx child needs a vhdx parent)",
        )
        .with_path(parent));
    }
    let mut opts = OpenOptions::read_only();
    opts.parents.allowed_dirs.clone_from(&spec.parent_dirs);
    opts.chain = ChainContext::root(parent);
    let image = VhdxImage::open_with(Box::new(file), &opts).map_err(|e| e.with_path(parent))?;
    Ok(ParentFacts {
        size: image.size(),
        logical_sector: image.sector_size(),
        physical_sector: image.physical_sector_size(),
        block_size: image.block_size(),
        disk_id: image.disk_id(),
        locator: build_locator(image.data_write_guid(), child, parent)?,
    })
}

/// Checks `spec` and derives the layout; nothing is written. A differencing image takes its
/// size, sector sizes and (unless the spec names one) block size from `parent`.
fn shape(spec: &CreateSpec, parent: Option<&ParentFacts>) -> Result<Shape> {
    let (fixed, differencing) = match (spec.kind, parent) {
        (ImageKind::Fixed, _) => (true, false),
        (ImageKind::Dynamic, _) => (false, false),
        (ImageKind::Differencing, Some(_)) => (false, true),
        (ImageKind::Differencing, None) => {
            return Err(invalid("a differencing image needs its parent".to_string()));
        }
        (other, _) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "vhdx images are fixed, dynamic or differencing; a {} image cannot be \
                     created",
                    other.as_str()
                ),
            ));
        }
    };
    let logical_sector = parent.map_or(spec.logical_sector_size.unwrap_or(512), |p| {
        p.logical_sector
    });
    if logical_sector != 512 && logical_sector != 4096 {
        return Err(invalid(format!(
            "vhdx logical sectors are 512 or 4096 bytes; {logical_sector} was asked for"
        )));
    }
    let block_size = spec
        .block_size
        .or(parent.map(|p| p.block_size))
        .unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two()
        || !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
    {
        return Err(invalid(format!(
            "block size of {block_size} bytes is not a power of two between 1 MiB and 256 MiB"
        )));
    }
    let size = parent
        .map_or(spec.size, |p| p.size)
        .checked_next_multiple_of(u64::from(logical_sector))
        .filter(|&s| s > 0 && s <= MAX_DISK_SIZE)
        .ok_or_else(|| {
            invalid(format!(
                "a vhdx must hold between 1 byte and 64 TiB; {} bytes were asked for",
                spec.size
            ))
        })?;
    let data_blocks = size.div_ceil(block_size);
    let chunk_ratio = CHUNK_SECTORS * u64::from(logical_sector) / block_size;
    // Room for a sector-bitmap slot after every chunk, including a last partial one; a
    // differencing BAT has every payload slot of the last chunk too (MS-VHDX 2.5).
    let bat_entries = if differencing {
        data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        data_blocks + data_blocks.div_ceil(chunk_ratio)
    };
    let bat_len = (bat_entries * 8).next_multiple_of(MIB);
    if u32::try_from(bat_len).is_err() {
        return Err(invalid(format!(
            "a {size}-byte disk in {block_size}-byte blocks needs a {bat_len}-byte table; \
             choose a larger block size"
        )));
    }
    Ok(Shape {
        fixed,
        differencing,
        physical_sector: parent.map_or(PHYSICAL_SECTOR, |p| p.physical_sector),
        size,
        block_size,
        logical_sector,
        data_blocks,
        chunk_ratio,
        bat_entries,
        bat_len,
    })
}

/// Checks what can be checked of `spec` without opening a file: the whole shape of a base
/// image; for a differencing one, that the parent and the new path are named (the parent
/// itself is looked at only by [`create`]).
pub(crate) fn check_spec(spec: &CreateSpec) -> Result<()> {
    if spec.kind != ImageKind::Differencing {
        return shape(spec, None).map(|_| ());
    }
    if spec.parent.is_none() || spec.path.is_none() {
        return Err(invalid(
            "a differencing image needs its parent's path and its own path".to_string(),
        ));
    }
    Ok(())
}

/// Creates an image as `spec` says in the empty `file`, durable on return. A differencing
/// image is returned opened with its parent (named explicitly by the spec).
pub(crate) fn create(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<VhdxImage> {
    let parent = match spec.kind {
        ImageKind::Differencing => Some(parent_facts(spec)?),
        _ => None,
    };
    let s = shape(spec, parent.as_ref())?;
    if !file.is_writable() {
        return Err(Error::new(
            ErrorKind::ReadOnly,
            "the target file was opened read-only",
        ));
    }
    let len = file.len()?;
    if len != 0 {
        return Err(invalid(format!(
            "the target file already holds {len} bytes; vhdx images are created in empty files"
        )));
    }
    let data_start = BAT_OFFSET + s.bat_len;
    let end = if s.fixed {
        s.data_blocks
            .checked_mul(s.block_size)
            .and_then(|d| d.checked_add(data_start))
            .ok_or_else(|| invalid("file size overflows".to_string()))?
    } else if s.differencing {
        // One zeroed (sparse) sector bitmap block per chunk, right after the BAT.
        data_start + s.data_blocks.div_ceil(s.chunk_ratio) * SECTOR_BITMAP_LEN
    } else {
        data_start
    };
    file.set_len(end)?;
    write_header_section(&*file, &s)?;
    write_metadata(&*file, &s, parent.as_ref())?;
    if s.fixed || s.differencing {
        write_bat(&*file, &s, data_start)?;
    }
    file.sync()?;
    let mut opts = OpenOptions::read_write();
    if let (Some(parent), Some(path)) = (&spec.parent, &spec.path) {
        opts.parents.explicit = Some(parent.clone());
        opts.parents.allowed_dirs.clone_from(&spec.parent_dirs);
        opts.chain = ChainContext::root(path);
    }
    VhdxImage::open_with(file, &opts)
}

/// File identifier, both headers and both region tables.
fn write_header_section(file: &dyn HostFile, s: &Shape) -> Result<()> {
    let mut ident = FileIdentifier::new_zeroed();
    ident.signature = FILE_SIGNATURE;
    for (slot, unit) in ident
        .creator
        .chunks_exact_mut(2)
        .zip(CREATOR.encode_utf16())
    {
        slot.copy_from_slice(&unit.to_le_bytes());
    }
    file.write_at(ident.as_bytes(), 0)?;

    let mut header = Header::new_zeroed();
    header.signature = HEADER_SIGNATURE;
    header.file_write_guid = uuid::Uuid::new_v4().to_bytes_le();
    header.data_write_guid = uuid::Uuid::new_v4().to_bytes_le();
    header.log_version = U16::new(LOG_VERSION);
    header.version = U16::new(HEADER_VERSION);
    header.log_length = U32::new(LOG_LEN);
    header.log_offset = U64::new(LOG_OFFSET);
    for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
        header.sequence_number = U64::new(i as u64);
        header.checksum = U32::new(0);
        let crc = crc32c::crc32c(header.as_bytes());
        header.checksum = U32::new(crc);
        file.write_at(header.as_bytes(), at)?;
    }

    let mut table = vec![0u8; REGION_TABLE_LEN];
    let mut head = RegionTableHeader::new_zeroed();
    head.signature = REGION_SIGNATURE;
    head.entry_count = U32::new(2);
    let regions = [
        (BAT_REGION, BAT_OFFSET, s.bat_len),
        (METADATA_REGION, METADATA_OFFSET, u64::from(METADATA_LEN)),
    ];
    let mut at = size_of::<RegionTableHeader>();
    for (id, offset, length) in regions {
        let mut e = RegionEntry::new_zeroed();
        e.guid = id.to_bytes_le();
        e.file_offset = U64::new(offset);
        // Checked in `shape`.
        e.length = U32::new(u32::try_from(length).unwrap_or(u32::MAX));
        e.required = U32::new(1);
        put(&mut table, at, e.as_bytes());
        at += size_of::<RegionEntry>();
    }
    put(&mut table, 0, head.as_bytes());
    let crc = crc32c::crc32c(&table);
    put(&mut table, 4, &crc.to_le_bytes());
    for &at in &REGION_TABLE_OFFSETS {
        file.write_at(&table, at)?;
    }
    Ok(())
}

/// Copies `bytes` into `buf` at `at` (callers place fixed-size items inside the buffer).
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = buf.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The metadata table, its five required items and, for a differencing image, the parent
/// locator.
#[expect(
    clippy::cast_possible_truncation,
    reason = "at most six items, all inside the 1 MiB metadata region (checked)"
)]
fn write_metadata(file: &dyn HostFile, s: &Shape, parent: Option<&ParentFacts>) -> Result<()> {
    let mut params = FileParameters::new_zeroed();
    // Checked in `shape`: at most 256 MiB.
    params.block_size = U32::new(u32::try_from(s.block_size).unwrap_or(MAX_BLOCK_SIZE));
    params.flags = U32::new(if s.fixed {
        PARAM_LEAVE_BLOCK_ALLOCATED
    } else if s.differencing {
        PARAM_HAS_PARENT
    } else {
        0
    });
    let disk_id = parent
        .map_or_else(uuid::Uuid::new_v4, |p| p.disk_id)
        .to_bytes_le();
    let mut items: Vec<(uuid::Uuid, u32, Vec<u8>)> = vec![
        (ITEM_FILE_PARAMETERS, 0, params.as_bytes().to_vec()),
        (
            ITEM_DISK_SIZE,
            META_IS_VIRTUAL_DISK,
            s.size.to_le_bytes().to_vec(),
        ),
        (ITEM_DISK_ID, META_IS_VIRTUAL_DISK, disk_id.to_vec()),
        (
            ITEM_LOGICAL_SECTOR,
            META_IS_VIRTUAL_DISK,
            s.logical_sector.to_le_bytes().to_vec(),
        ),
        (
            ITEM_PHYSICAL_SECTOR,
            META_IS_VIRTUAL_DISK,
            s.physical_sector.to_le_bytes().to_vec(),
        ),
    ];
    if let Some(parent) = parent {
        items.push((ITEM_PARENT_LOCATOR, 0, parent.locator.clone()));
    }
    let used = METADATA_TABLE_LEN + items.iter().map(|i| i.2.len()).sum::<usize>();
    if used > METADATA_LEN as usize {
        return Err(invalid(format!(
            "the metadata items need {used} bytes, more than the {METADATA_LEN}-byte region"
        )));
    }
    let mut region = vec![0u8; used.next_multiple_of(4096)];
    let mut head = MetadataTableHeader::new_zeroed();
    head.signature = METADATA_SIGNATURE;
    head.entry_count = U16::new(items.len() as u16);
    put(&mut region, 0, head.as_bytes());
    let mut item_at = METADATA_TABLE_LEN;
    for (i, (id, flags, bytes)) in items.iter().enumerate() {
        let mut e = MetadataEntry::new_zeroed();
        e.item_id = id.to_bytes_le();
        e.offset = U32::new(item_at as u32);
        e.length = U32::new(bytes.len() as u32);
        e.flags = U32::new(flags | META_IS_REQUIRED);
        put(&mut region, 32 + 32 * i, e.as_bytes());
        put(&mut region, item_at, bytes);
        item_at += bytes.len();
    }
    file.write_at(&region, METADATA_OFFSET)
}

/// Fixed: every payload entry FULLY_PRESENT, blocks in order from `data_start`, sector-bitmap
/// slots NOT_PRESENT. Differencing: payload entries NOT_PRESENT, every chunk's sector bitmap
/// PRESENT, 1 MiB each in order from `data_start` (all zero: every sector from the parent).
///
/// Why differencing images get their bitmaps up front: libvhdi reads a chunk's bitmap for any
/// block that is not FULLY_PRESENT even when the bitmap entry is NOT_PRESENT (from offset 0,
/// which holds the file identifier), so NOT_PRESENT blocks would show garbage there. The
/// blocks are made by growing the file, so they occupy no disk space on sparse-capable hosts.
fn write_bat(file: &dyn HostFile, s: &Shape, data_start: u64) -> Result<()> {
    let mut buf = Vec::with_capacity(BAT_CHUNK);
    let mut written = 0u64;
    let mut block = 0u64;
    for i in 0..s.bat_entries {
        let is_bitmap = (i + 1).is_multiple_of(s.chunk_ratio + 1);
        let entry = if is_bitmap && s.differencing {
            let host = data_start + (i / (s.chunk_ratio + 1)) * SECTOR_BITMAP_LEN;
            (host / MIB) << 20 | u64::from(SB_PRESENT)
        } else if is_bitmap || block >= s.data_blocks || s.differencing {
            0
        } else {
            let host = data_start + block * s.block_size;
            block += 1;
            (host / MIB) << 20 | u64::from(PAYLOAD_FULLY_PRESENT)
        };
        buf.extend_from_slice(&entry.to_le_bytes());
        if buf.len() >= BAT_CHUNK {
            file.write_at(&buf, BAT_OFFSET + written)?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        file.write_at(&buf, BAT_OFFSET + written)?;
    }
    Ok(())
}
