//! Where the format-owned structures of a VHD, VHDX, VDI or qcow2 file lie, read with a few header fields
//! (no validation: the mutator wants the ranges even of a half-broken file), and the checksums
//! that guard them.

pub mod qcow2;
pub mod vdi;

/// One integer field of a format's header (VDI, qcow2).
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Field name, for reports.
    pub name: &'static str,
    /// File offset.
    pub at: u64,
    /// Width in bytes (4 or 8).
    pub width: usize,
}

/// A [`Field`] named `name`, `width` bytes at `at`.
const fn f(name: &'static str, at: u64, width: usize) -> Field {
    Field { name, at, width }
}

/// One structure of an image file: a byte range and how the mutator treats it.
#[derive(Debug, Clone)]
pub struct Span {
    /// Structure name (for reports): `footer`, `bat`, `header1`, ...
    pub name: &'static str,
    /// First byte in the file.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// How entries of this structure look.
    pub shape: Shape,
    /// Relative weight when the mutator picks a structure.
    pub weight: u32,
}

/// The entry layout of a structure, for field-aware mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Header-like: integer fields of 2/4/8 bytes at aligned offsets.
    Fields,
    /// VHD BAT: big-endian u32 sector numbers.
    VhdBat,
    /// VHDX BAT: little-endian u64 entries (state bits 0-2, FileOffsetMB bits 20-63).
    VhdxBat,
    /// VDI header: its named fields, each set to one of its boundary values.
    VdiHeader,
    /// VDI block map: little-endian u32 slot numbers, free or zero.
    VdiMap,
    /// qcow2 header: its named fields, each set to one of its boundary values.
    Qcow2Header,
    /// qcow2 L1 table: big-endian u64 L2 table offsets with the COPIED flag.
    Qcow2L1,
    /// qcow2 L2 table: big-endian u64 cluster entries (COPIED, compressed, zero).
    Qcow2L2,
    /// qcow2 refcount table: big-endian u64 refcount block offsets.
    Qcow2RefcountTable,
    /// qcow2 refcount block: big-endian refcounts of 2^refcount_order bits.
    Qcow2RefcountBlock,
    /// Guest data: only bytes, no fields.
    Data,
}

/// The formats the mutator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// VHD 1.0 (qemu's `vpc`).
    Vhd,
    /// VHDX.
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// qemu's qcow2 (versions 2 and 3).
    Qcow2,
}

impl Format {
    /// The name used by vdisk and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Qcow2 => "qcow2",
        }
    }

    /// qemu's driver name.
    pub fn qemu(self) -> &'static str {
        match self {
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Qcow2 => "qcow2",
        }
    }

    /// File extension.
    pub fn ext(self) -> &'static str {
        self.name()
    }
}

/// Structures of `bytes` read as `format`.
pub fn spans(format: Format, bytes: &[u8]) -> Vec<Span> {
    match format {
        Format::Vhd => vhd_spans(bytes),
        Format::Vhdx => vhdx_spans(bytes),
        Format::Vdi => vdi::spans(bytes),
        Format::Qcow2 => qcow2::spans(bytes),
    }
}

fn be32(b: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be64(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn le16(b: &[u8], at: u64) -> Option<u16> {
    let at = usize::try_from(at).ok()?;
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le32(b: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn span(name: &'static str, start: u64, len: u64, shape: Shape, weight: u32) -> Span {
    Span {
        name,
        start,
        len,
        shape,
        weight,
    }
}

/// Keeps spans that lie inside the file (clipped), drops empty ones.
fn inside(mut spans: Vec<Span>, file_len: u64) -> Vec<Span> {
    spans.retain_mut(|s| {
        if s.start >= file_len {
            return false;
        }
        s.len = s.len.min(file_len - s.start);
        s.len > 0
    });
    spans
}

fn vhd_spans(b: &[u8]) -> Vec<Span> {
    let len = b.len() as u64;
    let mut out = Vec::new();
    if len < 512 {
        return out;
    }
    let end = len - 512;
    out.push(span("footer", end, 512, Shape::Fields, 20));
    let footer_at = if &b[b.len() - 512..b.len() - 504] == b"conectix" {
        end
    } else {
        0
    };
    let disk_type = be32(b, footer_at + 60).unwrap_or(0);
    if disk_type == 2 {
        out.push(span("guest-first-sector", 0, 512, Shape::Data, 2));
        out.push(span(
            "guest-data",
            512,
            end.saturating_sub(512),
            Shape::Data,
            2,
        ));
        return inside(out, len);
    }
    out.push(span("footer-copy", 0, 512, Shape::Fields, 8));
    let Some(dyn_at) = be64(b, footer_at + 16).filter(|&d| d < len) else {
        return inside(out, len);
    };
    out.push(span("dynamic-header", dyn_at, 1024, Shape::Fields, 20));
    out.push(span("parent-name", dyn_at + 64, 512, Shape::Data, 2));
    let table = be64(b, dyn_at + 16).unwrap_or(0);
    let entries = u64::from(be32(b, dyn_at + 28).unwrap_or(0)).min(1 << 20);
    let block = u64::from(be32(b, dyn_at + 32).unwrap_or(0));
    out.push(span("bat", table, entries * 4, Shape::VhdBat, 25));
    for i in 0..8 {
        let at = dyn_at.saturating_add(576 + 24 * i);
        if be32(b, at).unwrap_or(0) == 0 {
            continue;
        }
        out.push(span("parent-locator", at, 24, Shape::Fields, 6));
        let data_len = u64::from(be32(b, at + 8).unwrap_or(0)).min(1 << 16);
        let data_at = be64(b, at + 16).unwrap_or(u64::MAX);
        out.push(span("locator-data", data_at, data_len, Shape::Data, 4));
    }
    // The first allocated block: its sector bitmap and data.
    let bitmap = (block / 512).div_ceil(8).next_multiple_of(512);
    let first = (0..entries)
        .filter_map(|i| be32(b, table.saturating_add(4 * i)))
        .find(|&e| e != u32::MAX);
    if let Some(sector) = first {
        let at = u64::from(sector) * 512;
        out.push(span("block-bitmap", at, bitmap, Shape::Data, 5));
        out.push(span(
            "block-data",
            at.saturating_add(bitmap),
            block.min(1 << 16),
            Shape::Data,
            2,
        ));
    }
    inside(out, len)
}

/// The 16 on-disk bytes of a GUID written `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    let mut raw = [0u8; 16];
    for (i, r) in raw.iter_mut().enumerate() {
        *r = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    out
}

const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const PARENT_LOCATOR_GUID: &str = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C";

/// The VHDX header with the higher sequence number (header 1 when neither parses).
pub fn vhdx_current_header(b: &[u8]) -> u64 {
    let seq = |at: u64| {
        (b.get(at as usize..at as usize + 4) == Some(b"head")).then(|| le64(b, at + 8).unwrap_or(0))
    };
    match (seq(64 << 10), seq(128 << 10)) {
        (Some(a), Some(c)) if c > a => 128 << 10,
        (None, Some(_)) => 128 << 10,
        _ => 64 << 10,
    }
}

fn vhdx_spans(b: &[u8]) -> Vec<Span> {
    let len = b.len() as u64;
    let mut out = vec![
        span("file-identifier", 0, 512, Shape::Fields, 2),
        span("header1", 64 << 10, 4096, Shape::Fields, 12),
        span("header2", 128 << 10, 4096, Shape::Fields, 8),
    ];
    let head = vhdx_current_header(b);
    let log_len = u64::from(le32(b, head + 68).unwrap_or(0)).min(1 << 30);
    let log_at = le64(b, head + 72).unwrap_or(0);
    out.push(span("log", log_at, log_len.min(64 << 10), Shape::Fields, 6));
    for (name, rt) in [
        ("region-table1", 192u64 << 10),
        ("region-table2", 256 << 10),
    ] {
        let n = u64::from(le32(b, rt + 8).unwrap_or(0)).min(16);
        out.push(span(name, rt, 16 + 32 * n.max(2), Shape::Fields, 10));
    }
    let rt = 192u64 << 10;
    let n = u64::from(le32(b, rt + 8).unwrap_or(0)).min(2047);
    let (mut bat, mut meta) = (None, None);
    for i in 0..n {
        let at = rt + 16 + 32 * i;
        let Some(id) = b.get(at as usize..at as usize + 16) else {
            break;
        };
        let off = le64(b, at + 16).unwrap_or(0);
        let rlen = u64::from(le32(b, at + 24).unwrap_or(0));
        if id == guid(BAT_GUID) {
            bat = Some((off, rlen));
        } else if id == guid(METADATA_GUID) {
            meta = Some((off, rlen));
        }
    }
    if let Some((off, rlen)) = bat {
        out.push(span("bat", off, rlen.min(1 << 20), Shape::VhdxBat, 25));
    }
    if let Some((moff, _)) = meta {
        let count = u64::from(le16(b, moff.saturating_add(10)).unwrap_or(0)).min(2047);
        out.push(span(
            "metadata-table",
            moff,
            32 + 32 * count,
            Shape::Fields,
            12,
        ));
        for i in 0..count {
            let at = moff.saturating_add(32 + 32 * i);
            let item_off = u64::from(le32(b, at.saturating_add(16)).unwrap_or(0));
            let item_len = u64::from(le32(b, at.saturating_add(20)).unwrap_or(0)).min(1 << 16);
            let is_locator = usize::try_from(at)
                .ok()
                .and_then(|a| b.get(a..a.checked_add(16)?))
                == Some(&guid(PARENT_LOCATOR_GUID)[..]);
            let (name, weight) = if is_locator {
                ("parent-locator", 8)
            } else {
                ("metadata-item", 4)
            };
            out.push(span(
                name,
                moff.saturating_add(item_off),
                item_len,
                Shape::Fields,
                weight,
            ));
        }
    }
    // The first payload block a BAT entry points at.
    if let Some((off, rlen)) = bat {
        let first = (0..rlen.min(1 << 20) / 8)
            .filter_map(|i| le64(b, off.saturating_add(8 * i)))
            .find(|e| e & 7 == 6 || e & 7 == 7);
        if let Some(e) = first {
            out.push(span("block-data", (e >> 20) << 20, 1 << 16, Shape::Data, 2));
        }
    }
    inside(out, len)
}

/// VHD checksum: one's complement of the byte sum of `bytes` (the field already zeroed).
fn vhd_sum(bytes: &[u8]) -> u32 {
    !bytes
        .iter()
        .fold(0u32, |s, &x| s.wrapping_add(u32::from(x)))
}

/// Recomputes every checksum a mutation may have broken, so it reaches the code behind the
/// checksum gate: VHD footers (end and copy) and dynamic header; VHDX headers and region
/// tables (CRC-32C), and the log entry at the head of the log. VDI has none.
pub fn fix_checksums(format: Format, b: &mut [u8]) {
    match format {
        Format::Vdi | Format::Qcow2 => {}
        Format::Vhd => {
            let len = b.len();
            let mut footers = vec![0usize];
            if len >= 1024 {
                footers.push(len - 512);
            }
            let mut dyn_at = None;
            for f in footers {
                if b.get(f..f.saturating_add(8)) == Some(b"conectix") {
                    set_vhd_sum(&mut b[f..f + 512], 64);
                    dyn_at = be64(b, f as u64 + 16).and_then(|d| usize::try_from(d).ok());
                }
            }
            if let Some(d) = dyn_at
                && b.get(d..d.saturating_add(8)) == Some(b"cxsparse")
                && d.saturating_add(1024) <= len
            {
                set_vhd_sum(&mut b[d..d + 1024], 36);
            }
        }
        Format::Vhdx => {
            for (at, n) in [
                (64usize << 10, 4096usize),
                (128 << 10, 4096),
                (192 << 10, 64 << 10),
                (256 << 10, 64 << 10),
            ] {
                if at + n <= b.len() {
                    set_crc32c(&mut b[at..at + n]);
                }
            }
            let head = vhdx_current_header(b);
            if let Some(log_at) = le64(b, head + 72).and_then(|l| usize::try_from(l).ok())
                && b.get(log_at..log_at.saturating_add(4)) == Some(b"loge")
                && let Some(n) = le32(b, (log_at as u64).saturating_add(8)).map(|n| n as usize)
                && n >= 64
                && log_at.saturating_add(n) <= b.len()
            {
                set_crc32c(&mut b[log_at..log_at + n]);
            }
        }
    }
}

fn set_vhd_sum(s: &mut [u8], field: usize) {
    s[field..field + 4].fill(0);
    let sum = vhd_sum(s);
    s[field..field + 4].copy_from_slice(&sum.to_be_bytes());
}

fn set_crc32c(s: &mut [u8]) {
    s[4..8].fill(0);
    let crc = crc32c::crc32c(s);
    s[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A valid VHD footer (cookie, checksum) of `disk_type` for a disk of `size` bytes whose
/// dynamic header is at `data_offset` (`u64::MAX` for fixed): what a guest could write.
pub fn vhd_footer(disk_type: u32, size: u64, data_offset: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    f[28..32].copy_from_slice(b"gues");
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let sectors = size / 512;
    let cyl = u16::try_from((sectors / (16 * 63)).min(65535)).unwrap_or(u16::MAX);
    f[56..58].copy_from_slice(&cyl.to_be_bytes());
    f[58] = 16;
    f[59] = 63;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&[0x5a; 16]);
    set_vhd_sum(&mut f, 64);
    f
}

/// A VHD dynamic header with a table at `table` of `entries` entries of `block` bytes.
pub fn vhd_dynamic_header(table: u64, entries: u32, block: u32) -> [u8; 1024] {
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&table.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&entries.to_be_bytes());
    h[32..36].copy_from_slice(&block.to_be_bytes());
    set_vhd_sum(&mut h, 36);
    h
}

/// The current VHDX header (valid CRC-32C, higher sequence number) has a non-zero LogGuid:
/// a reader must replay the log first. libvhdi does not, so its view of such a file is not
/// the image's content.
pub fn vhdx_log_pending(b: &[u8]) -> bool {
    let valid = |at: usize| -> Option<(u64, bool)> {
        let h = b.get(at..at + 4096)?;
        if &h[0..4] != b"head" {
            return None;
        }
        let mut copy = h.to_vec();
        copy[4..8].fill(0);
        let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
        (crc32c::crc32c(&copy) == crc).then(|| {
            let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
            (seq, h[48..64].iter().any(|&x| x != 0))
        })
    };
    match (valid(64 << 10), valid(128 << 10)) {
        (Some(a), Some(c)) => {
            if c.0 > a.0 {
                c.1
            } else {
                a.1
            }
        }
        (Some(x), None) | (None, Some(x)) => x.1,
        (None, None) => false,
    }
}

const FILE_PARAMETERS_GUID: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const LOGICAL_SECTOR_GUID: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";

/// Block size and the payload blocks in state ZERO of a VHDX (read as the file says, no
/// validation). ZERO reads zeros even in a differencing image (the spec defines the block's
/// content as zero); libvhdi reads such a block of a child through to the parent, so the
/// oracle reads these blocks as zeros itself. `None` when the tables cannot be found.
pub fn vhdx_zero_blocks(b: &[u8]) -> Option<(u64, Vec<u64>)> {
    let rt = 192u64 << 10;
    let n = u64::from(le32(b, rt + 8)?).min(2047);
    let (mut bat, mut meta) = (None, None);
    for i in 0..n {
        let at = rt + 16 + 32 * i;
        let id = b.get(usize::try_from(at).ok()?..usize::try_from(at.saturating_add(16)).ok()?)?;
        let off = le64(b, at + 16)?;
        let len = u64::from(le32(b, at + 24)?);
        if id == guid(BAT_GUID) {
            bat = Some((off, len));
        } else if id == guid(METADATA_GUID) {
            meta = Some(off);
        }
    }
    let (moff, (boff, blen)) = (meta?, bat?);
    let (mut block, mut sector) = (None, None);
    for i in 0..u64::from(le16(b, moff.saturating_add(10))?).min(2047) {
        let at = moff.saturating_add(32 + 32 * i);
        let id = b.get(usize::try_from(at).ok()?..usize::try_from(at.saturating_add(16)).ok()?)?;
        let item = moff.saturating_add(u64::from(le32(b, at.saturating_add(16))?));
        if id == guid(FILE_PARAMETERS_GUID) {
            block = le32(b, item).map(u64::from);
        } else if id == guid(LOGICAL_SECTOR_GUID) {
            sector = le32(b, item).map(u64::from);
        }
    }
    let (block, sector) = (block.filter(|&x| x > 0)?, sector.filter(|&x| x > 0)?);
    let chunk = ((1u64 << 23) * sector / block).max(1);
    let mut zero = Vec::new();
    let (mut index, mut payload) = (0u64, 0u64);
    while index < blen.min(1 << 24) / 8 {
        if (index + 1) % (chunk + 1) == 0 {
            index += 1;
            continue;
        }
        if le64(b, boff.saturating_add(8 * index))? & 7 == 2 {
            zero.push(payload);
        }
        index += 1;
        payload += 1;
    }
    Some((block, zero))
}
