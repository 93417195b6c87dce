//! VHD 1.0 layout facts, written from the specification (not from vdisk's code), used to
//! mutate images at computed offsets and to check the structure vdisk leaves behind.

use std::path::Path;

/// Bytes in the hard disk footer.
pub const FOOTER_LEN: u64 = 512;
/// Footer: data offset (u64 BE) of the dynamic header.
pub const FOOTER_DATA_OFFSET: usize = 16;
/// Footer: checksum (u32 BE).
pub const FOOTER_CHECKSUM: usize = 64;
/// Footer: disk type (u32 BE).
pub const FOOTER_DISK_TYPE: usize = 60;
/// Footer: unique id (16 bytes).
pub const FOOTER_UNIQUE_ID: usize = 68;
/// Dynamic header: table offset (u64 BE).
pub const DYN_TABLE_OFFSET: usize = 16;
/// Dynamic header: max table entries (u32 BE).
pub const DYN_MAX_ENTRIES: usize = 28;
/// Dynamic header: block size (u32 BE).
pub const DYN_BLOCK_SIZE: usize = 32;
/// Dynamic header: checksum (u32 BE).
pub const DYN_CHECKSUM: usize = 36;
/// Unallocated BAT entry.
pub const UNALLOCATED: u32 = 0xFFFF_FFFF;

/// Reads a big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reads a big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Writes a big-endian u32 at `at`.
pub fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// One's complement of the byte sum of `s` with its checksum field (at `field`) taken as zero.
pub fn checksum(s: &[u8], field: usize) -> u32 {
    let sum: u32 = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .map(|(_, &b)| u32::from(b))
        .fold(0u32, u32::wrapping_add);
    !sum
}

/// Converts a u64 file position to an index into the file's bytes.
pub fn idx(v: u64) -> usize {
    usize::try_from(v).expect("offset fits usize")
}

/// Where the metadata of a dynamic VHD lives, as the spec defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the dynamic header.
    pub header: u64,
    /// Offset of the BAT.
    pub bat: u64,
    /// BAT entries.
    pub entries: u32,
    /// Block size.
    pub block_size: u64,
    /// Footer unique id.
    pub unique_id: [u8; 16],
    /// Disk type from the footer.
    pub disk_type: u32,
}

/// Parses the footer at EOF and the dynamic header, checking cookies and checksums.
pub fn layout(bytes: &[u8]) -> Result<Layout, String> {
    let len = bytes.len() as u64;
    if len < FOOTER_LEN {
        return Err(format!("file of {len} bytes has no footer"));
    }
    let footer = &bytes[idx(len - FOOTER_LEN)..];
    if &footer[..8] != b"conectix" {
        return Err("no footer cookie at EOF".into());
    }
    if be32(footer, FOOTER_CHECKSUM) != checksum(footer, FOOTER_CHECKSUM) {
        return Err("footer checksum is wrong".into());
    }
    let disk_type = be32(footer, FOOTER_DISK_TYPE);
    let mut unique_id = [0u8; 16];
    unique_id.copy_from_slice(&footer[FOOTER_UNIQUE_ID..FOOTER_UNIQUE_ID + 16]);
    if disk_type == 2 {
        return Ok(Layout {
            header: u64::MAX,
            bat: u64::MAX,
            entries: 0,
            block_size: 0,
            unique_id,
            disk_type,
        });
    }
    if bytes[..idx(FOOTER_LEN)] != *footer {
        return Err("the footer copy at offset 0 differs from the footer at EOF".into());
    }
    let header = be64(footer, FOOTER_DATA_OFFSET);
    if header.checked_add(1024).is_none_or(|e| e > len) {
        return Err(format!("dynamic header at {header:#x} lies past EOF"));
    }
    let h = &bytes[idx(header)..idx(header + 1024)];
    if &h[..8] != b"cxsparse" {
        return Err("no dynamic header cookie".into());
    }
    if be32(h, DYN_CHECKSUM) != checksum(h, DYN_CHECKSUM) {
        return Err("dynamic header checksum is wrong".into());
    }
    Ok(Layout {
        header,
        bat: be64(h, DYN_TABLE_OFFSET),
        entries: be32(h, DYN_MAX_ENTRIES),
        block_size: u64::from(be32(h, DYN_BLOCK_SIZE)),
        unique_id,
        disk_type,
    })
}

/// The BAT entries of a dynamic image.
pub fn bat(bytes: &[u8], l: &Layout) -> Vec<u32> {
    (0..l.entries)
        .map(|i| be32(bytes, idx(l.bat + 4 * u64::from(i))))
        .collect()
}

/// Reads `len` bytes at `offset` of `file` (positional; huge sparse files are never loaded).
fn read_at(file: &std::fs::File, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; idx(len)];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| format!("reading {len} bytes at {offset:#x}: {e}"))?;
    Ok(buf)
}

/// Spec-level consistency of a dynamic VHD: valid footer (both copies) and header, every
/// allocated block inside the file before the footer and after the BAT, no two blocks
/// overlapping, and the file ending right after the last block (no leaked tail). Returns the
/// number of allocated blocks. Reads only the metadata.
pub fn check_dynamic(file: &Path) -> Result<u64, String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < 2 * FOOTER_LEN {
        return Err(format!("file of {len} bytes is too short"));
    }
    let footer = read_at(&f, len - FOOTER_LEN, FOOTER_LEN)?;
    let copy = read_at(&f, 0, FOOTER_LEN)?;
    if &footer[..8] != b"conectix" {
        return Err("no footer cookie at EOF".into());
    }
    if be32(&footer, FOOTER_CHECKSUM) != checksum(&footer, FOOTER_CHECKSUM) {
        return Err("footer checksum is wrong".into());
    }
    if copy != footer {
        return Err("the footer copy at offset 0 differs from the footer at EOF".into());
    }
    let header_at = be64(&footer, FOOTER_DATA_OFFSET);
    if header_at.checked_add(1024).is_none_or(|e| e > len) {
        return Err(format!("dynamic header at {header_at:#x} lies past EOF"));
    }
    let h = read_at(&f, header_at, 1024)?;
    if &h[..8] != b"cxsparse" {
        return Err("no dynamic header cookie".into());
    }
    if be32(&h, DYN_CHECKSUM) != checksum(&h, DYN_CHECKSUM) {
        return Err("dynamic header checksum is wrong".into());
    }
    let disk_type = be32(&footer, FOOTER_DISK_TYPE);
    if disk_type != 3 {
        return Err(format!("disk type {disk_type} is not dynamic"));
    }
    let bat_at = be64(&h, DYN_TABLE_OFFSET);
    let entries = be32(&h, DYN_MAX_ENTRIES);
    let block_size = u64::from(be32(&h, DYN_BLOCK_SIZE));
    let table_len = (4 * u64::from(entries)).next_multiple_of(512);
    if bat_at.checked_add(table_len).is_none_or(|e| e > len) {
        return Err("BAT runs past EOF".into());
    }
    let table = read_at(&f, bat_at, 4 * u64::from(entries))?;
    let footprint = block_size + (block_size / 512).div_ceil(8).next_multiple_of(512);
    let table_end = bat_at + table_len;
    let data_end_limit = len - FOOTER_LEN;
    let mut spans: Vec<(u64, u64, usize)> = Vec::new();
    for i in 0..idx(u64::from(entries)) {
        let e = be32(&table, 4 * i);
        if e == UNALLOCATED {
            continue;
        }
        let start = u64::from(e) * 512;
        let end = start + footprint;
        if start < table_end {
            return Err(format!("block {i} at {start:#x} overlaps metadata"));
        }
        if end > data_end_limit {
            return Err(format!("block {i} at {start:#x} runs past the footer"));
        }
        spans.push((start, end, i));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("blocks {} and {} overlap", w[0].2, w[1].2));
        }
    }
    let last = spans.last().map_or(data_end_limit, |s| s.1);
    if last != data_end_limit {
        return Err(format!(
            "file has {} bytes between the last block end {last:#x} and the footer",
            data_end_limit.saturating_sub(last)
        ));
    }
    Ok(spans.len() as u64)
}
