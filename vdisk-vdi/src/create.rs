//! Creating fixed, dynamic and differencing images.
//!
//! Layout written: the header (VDIHEADER1PLUS, as VirtualBox writes it) in the first sector,
//! the block map from 0x200 (as qemu), the data area from the next 4 KiB boundary (so that a
//! block punched out of the host file frees whole host pages). Fixed images map block i to
//! slot i and have every slot in the file (sparse where the host allows); dynamic and
//! differencing images start with every entry free. The virtual size is the requested size
//! rounded up to a sector. A differencing image takes its size and (unless asked otherwise)
//! block size from its parent and records the parent's UUID and modification UUID: VDI stores
//! no parent path, so the child finds its parent by UUID among the `.vdi` files of its own
//! folder (or of a folder the user allows).

use vdisk_core::parent::MAX_CHAIN_DEPTH;
use vdisk_core::{
    BlockDevice, CreateSpec, DiskImage, Error, ErrorKind, HostFile, ImageKind, Result,
};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::bmap::{BlockMap, Entry};
use crate::chain;
use crate::format::{
    CREATE_BMAP_OFFSET, DEFAULT_BLOCK_SIZE, HEADER1_PLUS_SIZE, Header, MAX_BLOCK_SIZE,
    MAX_CREATE_BLOCKS, MIN_BLOCK_SIZE, SECTOR, SIGNATURE, TEXT, TYPE_DIFFERENCING, TYPE_DYNAMIC,
    TYPE_FIXED, VERSION_1_1,
};
use crate::image::VdiImage;

/// Alignment of the data area in created images.
const DATA_ALIGN: u64 = 4096;

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Checks what can be checked of `spec` without opening a file (a differencing parent is
/// looked at only by [`create`]).
pub(crate) fn check_spec(spec: &CreateSpec) -> Result<()> {
    if let Some(s) = spec.logical_sector_size.filter(|&s| s != 512) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("vdi images have 512-byte sectors; {s}-byte sectors are not possible"),
        ));
    }
    if let Some(b) = spec.block_size {
        check_block_size(b)?;
    }
    if spec.kind == ImageKind::Differencing {
        if spec.parent.is_none() || spec.path.is_none() {
            return Err(invalid(
                "a differencing image needs its parent's path and its own path".to_string(),
            ));
        }
        return Ok(());
    }
    blocks_for(spec.size, spec.block_size.unwrap_or(DEFAULT_BLOCK_SIZE)).map(|_| ())
}

fn check_block_size(block_size: u64) -> Result<()> {
    if !block_size.is_power_of_two()
        || !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
    {
        return Err(invalid(format!(
            "block size of {block_size} bytes is not a power of two between 512 bytes and 256 MiB"
        )));
    }
    Ok(())
}

/// The virtual size (rounded up to a sector) and block count for `requested` bytes.
fn blocks_for(requested: u64, block_size: u64) -> Result<(u64, u64)> {
    check_block_size(block_size)?;
    let size = requested
        .checked_next_multiple_of(SECTOR)
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            invalid(format!(
                "a vdi must hold at least 1 byte and fit in 64 bits; {requested} bytes were asked for"
            ))
        })?;
    let blocks = size.div_ceil(block_size);
    if blocks > MAX_CREATE_BLOCKS {
        return Err(invalid(format!(
            "a {size}-byte disk in {block_size}-byte blocks needs {blocks} blocks, more than \
             the {MAX_CREATE_BLOCKS} a vdi block map holds; choose a larger block size"
        )));
    }
    Ok((size, blocks))
}

/// Creates an image as `spec` says in the empty `file`, durable on return.
pub(crate) fn create(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<VdiImage> {
    check_spec(spec)?;
    let len = file.len()?;
    if len != 0 {
        return Err(invalid(format!(
            "the target file already holds {len} bytes; vdi images are created in empty files"
        )));
    }
    if spec.kind == ImageKind::Differencing {
        return create_differencing(file, spec);
    }
    let block_size = spec.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    let (size, blocks) = blocks_for(spec.size, block_size)?;
    let header = new_header(spec.kind, size, block_size, blocks)?;
    write_new(&*file, &header, spec.kind)?;
    VdiImage::open_unlinked(file, true)
}

/// A header for a new image (UUIDs fresh; a child's parent fields still to set).
fn new_header(kind: ImageKind, size: u64, block_size: u64, blocks: u64) -> Result<Header> {
    let image_type = match kind {
        ImageKind::Fixed => TYPE_FIXED,
        ImageKind::Dynamic => TYPE_DYNAMIC,
        ImageKind::Differencing => TYPE_DIFFERENCING,
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "vdi images are fixed, dynamic or differencing; a {} image cannot be created",
                    other.as_str()
                ),
            ));
        }
    };
    let mut h = Header::new_zeroed();
    h.text[..TEXT.len()].copy_from_slice(TEXT);
    h.signature = U32::new(SIGNATURE);
    h.version = U32::new(VERSION_1_1);
    h.header_size = U32::new(HEADER1_PLUS_SIZE);
    h.image_type = U32::new(image_type);
    let bmap_end = CREATE_BMAP_OFFSET + blocks * 4;
    let data = bmap_end.next_multiple_of(DATA_ALIGN);
    // Both fit: blocks <= MAX_CREATE_BLOCKS, so data < 4 GiB + 4 KiB... and the map offset
    // is a constant; block_size <= MAX_BLOCK_SIZE.
    h.offset_bmap = U32::new(u32::try_from(CREATE_BMAP_OFFSET).unwrap_or(u32::MAX));
    h.offset_data = U32::new(u32::try_from(data).unwrap_or(u32::MAX));
    h.sector_size = U32::new(512);
    h.disk_size = U64::new(size);
    h.block_size = U32::new(u32::try_from(block_size).unwrap_or(u32::MAX));
    h.blocks_in_image = U32::new(u32::try_from(blocks).unwrap_or(u32::MAX));
    if kind == ImageKind::Fixed {
        h.blocks_allocated = h.blocks_in_image;
    }
    h.uuid_image = *uuid::Uuid::new_v4().as_bytes();
    h.uuid_modify = *uuid::Uuid::new_v4().as_bytes();
    Ok(h)
}

/// Writes the header, the map and (fixed) the data area, durably.
fn write_new(file: &dyn HostFile, header: &Header, kind: ImageKind) -> Result<()> {
    let blocks = u64::from(header.blocks_in_image.get());
    let map = BlockMap::filled(blocks, u64::from(header.offset_bmap.get()), |i| {
        if kind == ImageKind::Fixed {
            Entry::Slot(u32::try_from(i).unwrap_or(u32::MAX))
        } else {
            Entry::Free
        }
    });
    file.write_at(header.as_bytes(), 0)?;
    map.write_all(file)?;
    let data = u64::from(header.offset_data.get());
    let end = match kind {
        ImageKind::Fixed => data + blocks * u64::from(header.block_size.get()),
        _ => data,
    };
    file.set_len(end)?;
    file.sync()
}

/// Creates a differencing image over `spec.parent` (a VDI).
fn create_differencing(file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<VdiImage> {
    let (Some(parent_path), Some(_)) = (&spec.parent, spec.path.as_ref()) else {
        return Err(invalid(
            "a differencing image needs its parent's path and its own path".to_string(),
        ));
    };
    let parent = chain::open_for_create(parent_path, &spec.parent_dirs)?;
    let depth = std::iter::successors(Some(&parent as &dyn DiskImage), |p| p.parent()).count();
    if depth >= MAX_CHAIN_DEPTH {
        return Err(invalid(format!(
            "{} heads a chain of {depth} images; a child would make it deeper than the \
             {MAX_CHAIN_DEPTH} vdisk opens",
            parent_path.display()
        )));
    }
    let block_size = spec.block_size.unwrap_or_else(|| match parent.kind() {
        ImageKind::Fixed => DEFAULT_BLOCK_SIZE,
        _ => parent.block_size(),
    });
    let (size, blocks) = blocks_for(parent.size(), block_size)?;
    let mut header = new_header(ImageKind::Differencing, size, block_size, blocks)?;
    header.uuid_link = parent.header.uuid_image;
    header.uuid_parent_modify = parent.header.uuid_modify;
    write_new(&*file, &header, ImageKind::Differencing)?;
    let mut image = VdiImage::open_unlinked(file, true)?;
    image.attach_parent(parent, Some(parent_path.clone()))?;
    Ok(image)
}
