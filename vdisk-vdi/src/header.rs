//! Reading and validating the header: every length and offset is bounded here, against the
//! format's limits and the file's length, before anything is sized or read from it.

use vdisk_core::{Confidence, Error, ErrorKind, HostFile, ImageKind, Result};
use zerocopy::FromBytes;

use crate::format::{
    HEADER_LEN, HEADER_START, HEADER1_PLUS_SIZE, HEADER1_SIZE, Header, MAX_BLOCK_EXTRA,
    MAX_BLOCK_SIZE, MAX_BLOCKS, MIN_BLOCK_SIZE, SIGNATURE, SIGNATURE_OFFSET, TYPE_DIFFERENCING,
    TYPE_DYNAMIC, TYPE_FIXED, TYPE_UNDO, VERSION_1_1,
};

/// Where everything lies, derived from a header that passed [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Fixed, dynamic or differencing.
    pub kind: ImageKind,
    /// Virtual size in bytes.
    pub disk_size: u64,
    /// Bytes of data per block.
    pub block_size: u64,
    /// Bytes of extra data before each block's data.
    pub block_extra: u64,
    /// Entries in the block map.
    pub blocks: u64,
    /// Slots in use according to the header.
    pub blocks_allocated: u64,
    /// Byte offset of the block map.
    pub bmap_offset: u64,
    /// Byte offset of slot 0.
    pub data_offset: u64,
    /// End of the header proper (0x48 + header size).
    pub header_end: u64,
}

impl Layout {
    /// Host bytes of one slot: the extra data, then the block's data.
    pub fn footprint(&self) -> u64 {
        self.block_extra + self.block_size
    }

    /// Bytes of the block map.
    pub fn bmap_len(&self) -> u64 {
        self.blocks * 4
    }

    /// Where slot `slot` starts (its extra data).
    pub fn slot_offset(&self, slot: u32) -> u64 {
        self.data_offset + u64::from(slot) * self.footprint()
    }

    /// Where the data of the block in slot `slot` starts.
    pub fn data_of(&self, slot: u32) -> u64 {
        self.slot_offset(slot) + self.block_extra
    }
}

/// Reads the first sector. A file shorter than that is not a whole VDI.
pub(crate) fn read_header(file: &dyn HostFile) -> Result<Header> {
    let len = file.len()?;
    if len < HEADER_LEN {
        return Err(Error::invalid(
            format!(
                "the file is {len} bytes, shorter than the {HEADER_LEN}-byte vdi header (truncated)"
            ),
            0,
        ));
    }
    let mut buf = [0u8; 512];
    const _: () = assert!(HEADER_LEN == 512);
    file.read_at(&mut buf, 0)?;
    Ok(Header::read_from_bytes(&buf).unwrap_or_else(|_| unreachable!("size asserted")))
}

/// Whether the text at offset 0 looks like a VDI's ("<<< ... >>>").
fn text_is_vdi(text: &[u8; 64]) -> bool {
    text.starts_with(b"<<< ") && text.windows(4).any(|w| w == b" >>>")
}

/// How sure the bytes at offset 0 make us that this is a VDI: text, signature and version 1.1
/// there are the format's own ([`Confidence::Yes`]); the signature alone, [`Confidence::Maybe`]
/// (a damaged image gets this driver's precise error, unless something claims more).
pub(crate) fn probe(file: &dyn HostFile) -> Result<Confidence> {
    if file.len()? < HEADER_START {
        return Ok(Confidence::No);
    }
    let mut buf = [0u8; 0x48];
    const _: () = assert!(HEADER_START == 0x48);
    file.read_at(&mut buf, 0)?;
    let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    if word(0x40) != SIGNATURE {
        const _: () = assert!(SIGNATURE_OFFSET == 0x40);
        return Ok(Confidence::No);
    }
    let mut text = [0u8; 64];
    text.copy_from_slice(&buf[..64]);
    if text_is_vdi(&text) && word(0x44) == VERSION_1_1 {
        Ok(Confidence::Yes)
    } else {
        Ok(Confidence::Maybe)
    }
}

/// Validates `h` against the format and a file of `file_len` bytes. Every error is
/// [`ErrorKind::InvalidImage`] (or [`ErrorKind::Unsupported`] for a real VDI of a kind this
/// driver does not handle) and names the field.
pub(crate) fn parse(h: &Header, file_len: u64) -> Result<Layout> {
    if h.signature.get() != SIGNATURE {
        return Err(Error::invalid(
            format!(
                "not a vdi image: signature {:#010x} at 0x40, expected {SIGNATURE:#010x}",
                h.signature.get()
            ),
            SIGNATURE_OFFSET,
        ));
    }
    let version = h.version.get();
    if version != VERSION_1_1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "vdi version {}.{} is not supported (only 1.1, which every current VirtualBox \
                 writes)",
                version >> 16,
                version & 0xffff
            ),
        )
        .with_offset(0x44));
    }
    let header_size = h.header_size.get();
    if header_size != HEADER1_SIZE && header_size != HEADER1_PLUS_SIZE {
        return Err(Error::invalid(
            format!(
                "vdi header size {header_size:#x} is neither {HEADER1_SIZE:#x} nor \
                 {HEADER1_PLUS_SIZE:#x}"
            ),
            HEADER_START,
        ));
    }
    let header_end = HEADER_START + u64::from(header_size);
    let kind = match h.image_type.get() {
        TYPE_DYNAMIC => ImageKind::Dynamic,
        TYPE_FIXED => ImageKind::Fixed,
        TYPE_DIFFERENCING => ImageKind::Differencing,
        TYPE_UNDO => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "vdi undo images (image type 3) are not supported",
            )
            .with_offset(0x4c));
        }
        other => {
            return Err(Error::invalid(
                format!("unknown vdi image type {other}"),
                0x4c,
            ));
        }
    };
    let block_size = h.block_size.get();
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(Error::invalid(
            format!(
                "vdi block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and \
                 {MAX_BLOCK_SIZE}"
            ),
            0x178,
        ));
    }
    let block_extra = h.block_extra.get();
    if block_extra > MAX_BLOCK_EXTRA || !block_extra.is_multiple_of(512) {
        return Err(Error::invalid(
            format!(
                "vdi block extra data of {block_extra} bytes is not a multiple of 512 up to \
                 {MAX_BLOCK_EXTRA}"
            ),
            0x17c,
        ));
    }
    let blocks = h.blocks_in_image.get();
    if blocks > MAX_BLOCKS {
        return Err(Error::invalid(
            format!("the block map has {blocks} entries, more than the {MAX_BLOCKS} allowed"),
            0x180,
        ));
    }
    let blocks = u64::from(blocks);
    let disk_size = h.disk_size.get();
    let block_size = u64::from(block_size);
    if disk_size == 0 || disk_size > blocks * block_size {
        return Err(Error::invalid(
            format!(
                "virtual size {disk_size} does not fit the block map ({blocks} blocks of \
                 {block_size} bytes)"
            ),
            0x170,
        ));
    }
    let allocated = u64::from(h.blocks_allocated.get());
    if allocated > blocks {
        return Err(Error::invalid(
            format!("the header counts {allocated} allocated blocks, but the map has {blocks}"),
            0x184,
        ));
    }
    let bmap_offset = u64::from(h.offset_bmap.get());
    let data_offset = u64::from(h.offset_data.get());
    let bmap_end = bmap_offset + blocks * 4;
    if bmap_offset < header_end {
        return Err(Error::invalid(
            format!(
                "the block map at {bmap_offset:#x} overlaps the header (which ends at \
                 {header_end:#x})"
            ),
            0x154,
        ));
    }
    if bmap_end > file_len {
        return Err(Error::invalid(
            format!(
                "the block map ({bmap_offset:#x}..{bmap_end:#x}) reaches past the end of the \
                 {file_len}-byte file (truncated?)"
            ),
            0x154,
        ));
    }
    if data_offset < bmap_end {
        return Err(Error::invalid(
            format!(
                "the data area at {data_offset:#x} overlaps the block map (which ends at \
                 {bmap_end:#x})"
            ),
            0x158,
        ));
    }
    Ok(Layout {
        kind,
        disk_size,
        block_size,
        block_extra: u64::from(block_extra),
        blocks,
        blocks_allocated: allocated,
        bmap_offset,
        data_offset,
        header_end,
    })
}

/// Reads and validates the header of `file`.
pub(crate) fn inspect(file: &dyn HostFile) -> Result<(Header, Layout)> {
    let header = read_header(file)?;
    let layout = parse(&header, file.len()?)?;
    Ok((header, layout))
}
