//! Where the structures of a VirtualBox VDI lie (all little-endian, no checksums), read from
//! the header without validation, and the boundary values of each header field: the values
//! at and just past every limit a reader must enforce (counts against the map, offsets
//! against the header, the map and the file's end, block size and extra against their
//! powers and multiples).
//!
//! ```text
//!   0x000 text | 0x040 signature | 0x044 version | 0x048 header size | 0x04c image type
//!   0x050 flags | 0x054 description (256) | 0x154 offset of the map | 0x158 offset of data
//!   0x15c geometry (5 x u32) | 0x170 disk size (u64) | 0x178 block size | 0x17c block extra
//!   0x180 blocks in image | 0x184 blocks allocated | 0x188 uuid image | 0x198 uuid modify
//!   0x1a8 uuid link | 0x1b8 uuid parent modify | 0x1c8 LCHS geometry (4 x u32)
//!   map: u32 per block, 0xffffffff free, 0xfffffffe zero, n = slot n of the data area
//!   slot n at offset_data + n * (block_extra + block_size): extra data, then the block
//! ```

use super::{Field, f};

use super::{Shape, Span, inside, le32, le64, span};

/// The VDI signature at 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// A free map entry (zeros, or the parent's data in a differencing image).
pub const FREE: u32 = 0xffff_ffff;
/// A zero map entry (zeros even in a differencing image).
pub const ZERO: u32 = 0xffff_fffe;
/// Offset of the image type.
pub const IMAGE_TYPE: u64 = 0x4c;
/// Offset of the link UUID, followed by the parent's modification UUID.
pub const LINKS: usize = 0x1a8;
/// Image type of a differencing image.
pub const TYPE_DIFFERENCING: u32 = 4;
/// Image type of a dynamic image.
pub const TYPE_DYNAMIC: u32 = 1;

/// The header fields a reader acts on, with a weight each (sum of a run of picks).
pub const FIELDS: [(Field, u32); 13] = [
    (f("version", 0x44, 4), 2),
    (f("header-size", 0x48, 4), 4),
    (f("image-type", 0x4c, 4), 6),
    (f("offset-bmap", 0x154, 4), 10),
    (f("offset-data", 0x158, 4), 10),
    (f("disk-size", 0x170, 8), 8),
    (f("block-size", 0x178, 4), 8),
    (f("block-extra", 0x17c, 4), 8),
    (f("blocks-in-image", 0x180, 4), 10),
    (f("blocks-allocated", 0x184, 4), 10),
    (f("uuid-image", 0x188, 8), 2),
    (f("uuid-link", 0x1a8, 8), 3),
    (f("sector-size", 0x168, 4), 1),
];

/// The image type of `b` (0 when the file is too short).
pub fn image_type(b: &[u8]) -> u32 {
    le32(b, IMAGE_TYPE).unwrap_or(0)
}

/// What the header says, read without validation (0 where the file is too short).
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    /// Offset of the block map.
    pub bmap: u64,
    /// Offset of slot 0.
    pub data: u64,
    /// Virtual size.
    pub disk_size: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// Extra bytes before each block in its slot.
    pub block_extra: u64,
    /// Map entries.
    pub blocks: u64,
    /// Slots in use.
    pub allocated: u64,
}

impl Header {
    /// Reads the header fields of `b`.
    pub fn read(b: &[u8]) -> Header {
        let u = |at| u64::from(le32(b, at).unwrap_or(0));
        Header {
            bmap: u(0x154),
            data: u(0x158),
            disk_size: le64(b, 0x170).unwrap_or(0),
            block_size: u(0x178),
            block_extra: u(0x17c),
            blocks: u(0x180),
            allocated: u(0x184),
        }
    }

    /// Where the block data of slot `slot` starts.
    pub fn data_of(&self, slot: u32) -> u64 {
        self.data
            .saturating_add(u64::from(slot).saturating_mul(self.block_size + self.block_extra))
            .saturating_add(self.block_extra)
    }
}

/// Structures of `b` read as a VDI.
pub fn spans(b: &[u8]) -> Vec<Span> {
    let len = b.len() as u64;
    let h = Header::read(b);
    let mut out = vec![
        span("pre-header", 0, 0x48, Shape::Fields, 3),
        span("header", 0x48, 0x1d8 - 0x48, Shape::VdiHeader, 40),
        span("header", 0x48, 0x1d8 - 0x48, Shape::Fields, 6),
        span("description", 0x54, 256, Shape::Data, 1),
        span("uuids", 0x188, 64, Shape::Data, 3),
    ];
    let entries = h.blocks.min(1 << 20);
    out.push(span("bmap", h.bmap, entries * 4, Shape::VdiMap, 30));
    // The first allocated slot: its extra data and its block.
    let first = (0..entries)
        .filter_map(|i| le32(b, h.bmap.saturating_add(4 * i)))
        .find(|&e| e < ZERO);
    if let Some(slot) = first {
        let at = h.data_of(slot);
        if h.block_extra > 0 {
            out.push(span(
                "block-extra",
                at - h.block_extra,
                h.block_extra.min(1 << 16),
                Shape::Data,
                2,
            ));
        }
        out.push(span(
            "block-data",
            at,
            h.block_size.min(1 << 16),
            Shape::Data,
            2,
        ));
    }
    inside(out, len)
}

/// The boundary values of `field` in an image whose header says `h`, in a `file_len`-byte
/// file: each limit a reader must check, and one past it.
pub fn boundary_values(field: &Field, h: &Header, file_len: u64) -> Vec<u64> {
    let bmap_end = h.bmap + 4 * h.blocks;
    let footprint = h.block_size + h.block_extra;
    let mut v = match field.name {
        "version" => vec![0x0001_0000, 0x0001_0002, 0x0000_0001, 0x0002_0001],
        "header-size" => vec![0x17f, 0x180, 0x181, 0x18f, 0x190, 0x191, 0x200, 0x1b8],
        "image-type" => vec![0, 1, 2, 3, 4, 5, 0x8000_0001],
        "offset-bmap" => vec![
            0x1c7,
            0x1c8,
            0x1d7,
            0x1d8,
            0x1ff,
            h.data,
            h.data.saturating_sub(4),
            file_len.saturating_sub(4 * h.blocks),
            file_len.saturating_sub(4 * h.blocks) + 1,
            file_len,
            h.bmap + 4,
        ],
        "offset-data" => vec![
            bmap_end.saturating_sub(1),
            bmap_end,
            h.bmap,
            h.data + 1,
            h.data + 512,
            h.data.saturating_sub(footprint),
            h.data + footprint,
            file_len,
            file_len.saturating_sub(footprint * h.allocated),
            0xffff_fe00,
        ],
        "disk-size" => vec![
            h.blocks * h.block_size,
            h.blocks * h.block_size + 1,
            (h.blocks + 1) * h.block_size,
            h.disk_size.wrapping_sub(1),
            1,
            1 << 40,
            u64::MAX / 2,
        ],
        "block-size" => vec![
            256,
            511,
            512,
            4096,
            1 << 19,
            (1 << 20) + 512,
            1 << 21,
            256 << 20,
            (256 << 20) + 1,
            512 << 20,
            1 << 31,
        ],
        "block-extra" => vec![
            1,
            511,
            512,
            4096,
            h.block_size,
            1 << 20,
            (1 << 20) + 512,
            1 << 30,
        ],
        "blocks-in-image" => vec![
            h.blocks.wrapping_sub(1),
            h.blocks + 1,
            h.blocks * 2,
            h.disk_size.div_ceil(h.block_size.max(1)),
            (file_len - h.bmap.min(file_len)) / 4,
            (file_len - h.bmap.min(file_len)) / 4 + 1,
            0x3fff_ffff,
            0x4000_0000,
            0xffff_fffe,
        ],
        "blocks-allocated" => vec![
            h.allocated.wrapping_sub(1),
            h.allocated + 1,
            h.blocks,
            h.blocks + 1,
            file_len.saturating_sub(h.data) / footprint.max(1),
            file_len.saturating_sub(h.data) / footprint.max(1) + 1,
            0xffff_fffe,
        ],
        // Half of a UUID: another image's, or nil (a nil link, a self link).
        _ => vec![0],
    };
    v.extend([0, u64::from(u32::MAX)]);
    let max = if field.width == 8 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    v.into_iter().map(|x| x & max).collect()
}

/// The values a hostile map entry takes: free, zero, the slots at and past the allocation
/// count, one past the last slot the file holds, and the largest slot numbers.
pub fn entry_values(h: &Header, file_len: u64) -> Vec<u32> {
    let footprint = (h.block_size + h.block_extra).max(1);
    let in_file = file_len.saturating_sub(h.data) / footprint;
    let c = |x: u64| u32::try_from(x.min(u64::from(u32::MAX))).unwrap_or(u32::MAX);
    vec![
        FREE,
        ZERO,
        0,
        c(h.allocated),
        c(h.allocated.saturating_sub(1)),
        c(h.allocated + 1),
        c(h.blocks),
        c(in_file),
        c(in_file.saturating_sub(1)),
        0xffff_fffd,
        0x7fff_ffff,
        0x3fff_ffff,
    ]
}

/// Block size, virtual size and the map of a VDI, read as the header says (`None` when the
/// map is not inside the file or the sizes are absurd).
pub fn map(b: &[u8]) -> Option<(u64, u64, Vec<u32>)> {
    let h = Header::read(b);
    if h.block_size == 0 || h.blocks > 1 << 24 {
        return None;
    }
    let entries = (0..h.blocks)
        .map(|i| le32(b, h.bmap.checked_add(4 * i)?))
        .collect::<Option<Vec<u32>>>()?;
    Some((h.block_size, h.disk_size, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dynamic VDI as qemu lays it out: map at 0x200, data at 0x1000, 4 blocks of 1 MiB,
    /// block 2 in slot 0, block 3 zero.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 0x1000 + (1 << 20)];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0x40, &SIGNATURE.to_le_bytes());
        put(0x48, &0x190u32.to_le_bytes());
        put(0x4c, &TYPE_DYNAMIC.to_le_bytes());
        put(0x154, &0x200u32.to_le_bytes());
        put(0x158, &0x1000u32.to_le_bytes());
        put(0x170, &(4u64 << 20).to_le_bytes());
        put(0x178, &(1u32 << 20).to_le_bytes());
        put(0x180, &4u32.to_le_bytes());
        put(0x184, &1u32.to_le_bytes());
        for (i, e) in [FREE, FREE, 0, ZERO].iter().enumerate() {
            put(0x200 + 4 * i, &e.to_le_bytes());
        }
        b
    }

    #[test]
    fn the_block_map_and_the_first_allocated_slot_are_found_where_the_header_puts_them() {
        let spans = spans(&image());
        let find = |n: &str| spans.iter().find(|s| s.name == n).map(|s| (s.start, s.len));
        assert_eq!(find("bmap"), Some((0x200, 16)));
        assert_eq!(find("block-data"), Some((0x1000, 1 << 16)));
        assert!(spans.iter().any(|s| s.shape == Shape::VdiHeader));
        assert_eq!(
            map(&image()),
            Some((1 << 20, 4 << 20, vec![FREE, FREE, 0, ZERO]))
        );
    }

    #[test]
    fn header_fields_get_the_values_at_and_just_past_each_limit() {
        let b = image();
        let h = Header::read(&b);
        let len = b.len() as u64;
        let of = |name: &str| {
            let (field, _) = FIELDS.iter().find(|(f, _)| f.name == name).unwrap();
            boundary_values(field, &h, len)
        };
        assert!(of("blocks-in-image").contains(&5));
        assert!(of("blocks-in-image").contains(&0x4000_0000));
        assert!(of("blocks-allocated").contains(&4));
        assert!(of("blocks-allocated").contains(&5));
        assert!(of("block-size").contains(&((256 << 20) + 1)));
        assert!(of("block-extra").contains(&((1 << 20) + 512)));
        assert!(of("offset-data").contains(&0x20f));
        assert!(of("disk-size").contains(&((4 << 20) + 1)));
        let entries = entry_values(&h, len);
        assert!(entries.contains(&1) && entries.contains(&2), "{entries:?}");
    }
}
