//! A metadata area: a 512-byte header, then a circular buffer of volume group metadata texts,
//! the current one named by the header's first raw location.
//!
//! ```text
//!  area start: mda_header  0 crc of bytes 4..512 │ 4 " LVM2 x[5A%r0N*>" │ 20 version 1
//!                          24 u64 start (the area's offset on the PV) │ 32 u64 size
//!                          40 raw locations {u64 offset in the area, u64 size,
//!                             u32 crc of the text, u32 flags (1 = ignored)}... {0, ...}
//!  area start + 512 ..     the buffer; a text reaching the area's end wraps to +512
//! ```

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::crc;
use crate::label::Area;
use crate::text::MAX_TEXT;

/// The header's size; the buffer starts after it.
pub const HEADER_SIZE: u64 = 512;
/// [`HEADER_SIZE`] as a buffer length.
const HEADER_LEN: usize = 512;
/// The header's magic.
const MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Raw location flag: this area's metadata is not kept up to date (`pvchange
/// --metadataignore`).
const RAW_LOCN_IGNORED: u32 = 1;

/// The metadata area header (`struct mda_header`) without its raw locations.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MdaHeader {
    /// LVM's CRC of bytes 4..512.
    checksum: U32,
    /// " LVM2 x[5A%r0N*>".
    magic: [u8; 16],
    /// 1.
    version: U32,
    /// The area's offset on the PV.
    start: U64,
    /// The area's size.
    size: U64,
}

/// A raw location (`struct raw_locn`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawLocn {
    /// Offset of the text from the area's start.
    offset: U64,
    /// Bytes of text (including its final NUL).
    size: U64,
    /// LVM's CRC of the text.
    checksum: U32,
    /// [`RAW_LOCN_IGNORED`] or 0.
    flags: U32,
}

const _: () = assert!(size_of::<MdaHeader>() == 40);
const _: () = assert!(size_of::<RawLocn>() == 24);

/// What a metadata area holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Marked ignored: its text, if any, may be stale.
    Ignored,
    /// No metadata (a PV in no volume group).
    Empty,
    /// The current metadata text, checksum verified.
    Text(Vec<u8>),
}

/// Reads the current metadata of the area `area`.
pub fn read(reader: &MetaReader<'_>, area: Area) -> Examined<Content> {
    let what = "the lvm metadata area header";
    if area.size < HEADER_SIZE * 2 {
        return damaged(format!(
            "the lvm metadata area at offset {} is only {} bytes",
            area.offset, area.size
        ));
    }
    let bytes = reader.read(area.offset, HEADER_LEN, what)?;
    let Ok((h, rest)) = MdaHeader::read_from_prefix(&bytes) else {
        return damaged("the lvm metadata area header is short");
    };
    if &h.magic != MAGIC {
        return damaged(format!(
            "the lvm metadata area at offset {} has no header",
            area.offset
        ));
    }
    if crc::crc(&bytes[4..]) != h.checksum.get() {
        return damaged(format!(
            "the lvm metadata area header at offset {} is damaged (checksum mismatch)",
            area.offset
        ));
    }
    if h.version.get() != 1 || h.start.get() != area.offset || h.size.get() != area.size {
        return damaged(format!(
            "the lvm metadata area header at offset {} does not match the pv header",
            area.offset
        ));
    }
    let Ok((loc, _)) = RawLocn::read_from_prefix(rest) else {
        return damaged("the lvm metadata area header is short");
    };
    if loc.flags.get() & RAW_LOCN_IGNORED != 0 {
        return Ok(Content::Ignored);
    }
    let (offset, size) = (loc.offset.get(), loc.size.get());
    if offset == 0 {
        return Ok(Content::Empty);
    }
    let buffer = area.size - HEADER_SIZE;
    if offset < HEADER_SIZE || offset >= area.size || size == 0 || size > buffer {
        return damaged(format!(
            "the lvm metadata text ({size} bytes at {offset}) does not fit its {}-byte area",
            area.size
        ));
    }
    if size > MAX_TEXT as u64 {
        return damaged(format!(
            "the lvm metadata text of {size} bytes is larger than {MAX_TEXT}"
        ));
    }
    // Both lengths are bounded by MAX_TEXT above.
    let len = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let first = size.min(area.size - offset);
    let mut text = reader.read(area.offset + offset, len(first), "the lvm metadata")?;
    if first < size {
        let wrapped = reader.read(
            area.offset + HEADER_SIZE,
            len(size - first),
            "the lvm metadata",
        )?;
        text.extend_from_slice(&wrapped);
    }
    if crc::crc(&text) != loc.checksum.get() {
        return damaged(format!(
            "the lvm metadata text in the area at offset {} is damaged (checksum mismatch)",
            area.offset
        ));
    }
    Ok(Content::Text(text))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vdisk_core::fs::{Doubt, MemDevice};

    /// Writes into `disk` a metadata area at `area` whose current text `text` starts at
    /// `offset` in the area (wrapping if it reaches the end), with `flags`.
    pub(crate) fn put_area(disk: &mut [u8], area: Area, offset: u64, text: &[u8], flags: u32) {
        let a = area.offset as usize;
        let mut h = vec![0u8; 512];
        h[4..20].copy_from_slice(MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&area.offset.to_le_bytes());
        h[32..40].copy_from_slice(&area.size.to_le_bytes());
        h[40..48].copy_from_slice(&offset.to_le_bytes());
        h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&crc::crc(text).to_le_bytes());
        h[60..64].copy_from_slice(&flags.to_le_bytes());
        let c = crc::crc(&h[4..]);
        h[..4].copy_from_slice(&c.to_le_bytes());
        let room = (area.size - offset) as usize;
        let (one, two) = text.split_at(text.len().min(room));
        let at = a + offset as usize;
        disk[at..at + one.len()].copy_from_slice(one);
        disk[a + 512..a + 512 + two.len()].copy_from_slice(two);
        disk[a..a + 512].copy_from_slice(&h);
    }

    fn content(disk: Vec<u8>, area: Area) -> Examined<Content> {
        let dev = MemDevice::new(disk);
        read(&MetaReader::new(&dev, 1 << 20), area)
    }

    #[test]
    fn the_current_text_is_read_across_the_buffer_wrap_and_checked() {
        let area = Area {
            offset: 4096,
            size: 4096,
        };
        let text: Vec<u8> = (0..1500u32).map(|i| b'a' + (i % 26) as u8).collect();
        for offset in [512, 1000, 3000, 4095] {
            let mut disk = vec![0u8; 16384];
            put_area(&mut disk, area, offset, &text, 0);
            assert_eq!(
                content(disk.clone(), area).unwrap(),
                Content::Text(text.clone())
            );
            // A flipped byte of the text, wherever it lies, is damage.
            let at = 4096 + 512 + 1;
            disk[if offset + 1500 > 4096 {
                at
            } else {
                4096 + offset as usize
            }] ^= 1;
            assert!(
                matches!(content(disk, area), Err(Doubt::Damaged(w)) if w.contains("checksum"))
            );
        }
        let mut disk = vec![0u8; 16384];
        put_area(&mut disk, area, 512, &text, RAW_LOCN_IGNORED);
        assert_eq!(content(disk, area).unwrap(), Content::Ignored);
        let mut disk = vec![0u8; 16384];
        put_area(&mut disk, area, 0, b"", 0);
        assert_eq!(content(disk, area).unwrap(), Content::Empty);
        // A text larger than the buffer, or starting inside the header.
        for (offset, len) in [(512, 3585), (100, 10)] {
            let mut disk = vec![0u8; 16384];
            put_area(&mut disk, area, offset, &vec![b'x'; len], 0);
            assert!(matches!(content(disk, area), Err(Doubt::Damaged(w)) if w.contains("fit")));
        }
    }
}
