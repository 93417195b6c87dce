//! `$LogFile` (MFT record 2): was the volume shut down cleanly?
//!
//! Follows the decision ntfs-3g makes before it writes to a volume (`ntfs_check_logfile` and
//! `ntfs_is_logfile_clean`), in our own code: probe the journal at offsets 0, 512, 1024, 2048, ...
//! for restart pages ("RSTR", or "CHKD" after chkdsk); a journal whose probed blocks are all
//! 0xFF-filled is empty, hence clean. Otherwise at least one restart page must pass the
//! consistency checks, the most recent one (higher LSN) is used, and the volume is clean when its
//! restart area has no client in use or carries the "volume is clean" flag.
//!
//! Only the two restart pages are read, never the log records. A journal version other than
//! 1.1 counts as an invalid restart page, as in ntfs-3g: Windows 8 and later leave version 2.0
//! behind when the volume was not shut down fully (fast startup).

use zerocopy::byteorder::little_endian::{I16, I64, U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Bytes of one probe (the NTFS block size; a restart page header and area fit in it).
const BLOCK: usize = 512;
/// The journal's default log page size; its length is rounded down to a multiple of it.
const LOG_PAGE: u64 = 4096;
/// Fewest log record pages a journal needs besides the two restart pages.
const MIN_LOG_RECORD_PAGES: u64 = 48;
/// Longest journal looked at (ntfs-3g's limit too).
const MAX_LOG_FILE: u64 = 1 << 32;
/// Largest restart page accepted (Windows writes 4096; bounds the page buffer).
const MAX_SYSTEM_PAGE: u32 = 64 << 10;
/// "No client" marker in client lists.
const NO_CLIENT: u16 = 0xFFFF;
/// Restart area flag: the volume was shut down cleanly.
const VOLUME_IS_CLEAN: u16 = 0x0002;
/// Size of a log client record.
const CLIENT_RECORD_LEN: usize = 0xA0;

/// Restart page header at offset 0 (and at the system page size) of the journal.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RestartPageHeader {
    /// "RSTR", or "CHKD" when chkdsk modified it.
    magic: [u8; 4],
    /// Offset of the update sequence array.
    usa_ofs: U16,
    /// Entries in the update sequence array, including the sequence number itself.
    usa_count: U16,
    /// LSN of the chkdsk run ("CHKD" pages only).
    chkdsk_lsn: I64,
    /// Page size of the system that wrote the journal; the second restart page is here.
    system_page_size: U32,
    /// Log page size.
    log_page_size: U32,
    /// Offset of the restart area.
    restart_area_offset: U16,
    /// Journal minor version.
    minor_ver: I16,
    /// Journal major version.
    major_ver: I16,
}

/// Restart area, at `restart_area_offset` within a restart page.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RestartArea {
    /// LSN of the current restart point.
    current_lsn: I64,
    /// Entries in the client array.
    log_clients: U16,
    /// First free client, or [`NO_CLIENT`].
    client_free_list: U16,
    /// First client in use, or [`NO_CLIENT`] when the journal is closed.
    client_in_use_list: U16,
    /// [`VOLUME_IS_CLEAN`], ...
    flags: U16,
    /// Bits of an LSN used for the sequence number (67 - bits of the file size).
    seq_number_bits: U32,
    /// Length of the restart area including the client array.
    restart_area_length: U16,
    /// Offset of the client array from the restart area.
    client_array_offset: U16,
    /// Usable size of the journal.
    file_size: I64,
    /// Length of the last LSN's data.
    last_lsn_data_length: U32,
    /// Length of a log record header (a multiple of 8).
    log_record_header_length: U16,
    /// Offset of the data in a log page (a multiple of 8).
    log_page_data_offset: U16,
    /// Counter of journal opens.
    restart_log_open_count: U32,
    /// Reserved.
    reserved: U32,
}

/// Offset of `RestartArea::file_size`: everything before it is read before the area is checked.
const RA_FILE_SIZE_OFFSET: usize = 24;
const _: () = assert!(size_of::<RestartPageHeader>() == 30);
const _: () = assert!(size_of::<RestartArea>() == 48);

/// The journal's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogState {
    /// Reset (all 0xFF): clean.
    Empty,
    /// A consistent restart page says the volume was shut down cleanly.
    Clean,
    /// A consistent restart page says transactions may be pending.
    Unclean,
    /// No consistent restart page: the reason says what was wrong.
    Inconsistent(String),
}

/// A consistent restart page and its LSN.
struct Page {
    lsn: i64,
    in_use: u16,
    flags: u16,
}

/// Decides on a journal of `size` bytes whose bytes `read(offset, buf)` fills in. Errors of
/// `read` are passed through.
pub(crate) fn assess<E>(
    size: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<LogState, E> {
    let size = size.min(MAX_LOG_FILE) & !(LOG_PAGE - 1);
    if size < LOG_PAGE * (2 + MIN_LOG_RECORD_PAGES) {
        return Ok(LogState::Inconsistent(format!(
            "$LogFile is too small ({size} bytes)"
        )));
    }
    let mut empty = true;
    let mut pages: Vec<Page> = Vec::new();
    let mut first_problem: Option<String> = None;
    let mut block = [0u8; BLOCK];
    let mut pos = 0u64;
    while pos < size {
        read(pos, &mut block)?;
        let magic = &block[..4];
        if magic != [0xFF; 4] {
            empty = false;
        } else if !empty {
            break;
        }
        if magic == b"RCRD" {
            break;
        }
        if magic == b"RSTR" || magic == b"CHKD" {
            match check_page(&mut read, pos, &block)? {
                Ok(page) => {
                    pages.push(page);
                    if pages.len() == 2 {
                        break;
                    }
                }
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        pos = if pos == 0 { BLOCK as u64 } else { pos * 2 };
    }
    if empty {
        return Ok(LogState::Empty);
    }
    let current = match (pages.first(), pages.get(1)) {
        (Some(a), Some(b)) if b.lsn > a.lsn => b,
        (Some(a), _) => a,
        (None, _) => {
            let why = first_problem.unwrap_or_else(|| "no restart page was found".into());
            return Ok(LogState::Inconsistent(format!(
                "$LogFile is not usable: {why}"
            )));
        }
    };
    if current.in_use == NO_CLIENT || current.flags & VOLUME_IS_CLEAN != 0 {
        Ok(LogState::Clean)
    } else {
        Ok(LogState::Unclean)
    }
}

/// Checks the restart page whose first block is `block`, at journal offset `pos`.
fn check_page<E>(
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    pos: u64,
    block: &[u8; BLOCK],
) -> Result<Result<Page, String>, E> {
    let (rp, ra_ofs) = match check_header(pos, block) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let ra = match check_area(&rp, ra_ofs, block) {
        Ok(ra) => ra,
        Err(e) => return Ok(Err(e)),
    };
    let chkd = &rp.magic == b"CHKD";
    let page_len = rp.system_page_size.get() as usize;
    let mut page = vec![0u8; page_len];
    read(pos, &mut page)?;
    let protected = !chkd || rp.usa_count.get() != 0;
    if protected
        && !unprotect(&mut page, &rp)
        && ra_ofs + usize::from(ra.restart_area_length.get()) > BLOCK - 2
    {
        return Ok(Err(format!(
            "the restart page at offset {pos} fails its update sequence check"
        )));
    }
    if !chkd && ra.client_in_use_list.get() != NO_CLIENT && !clients_consistent(&page, ra_ofs, &ra)
    {
        return Ok(Err(format!(
            "the log client array of the restart page at offset {pos} is damaged"
        )));
    }
    let lsn = if chkd {
        rp.chkdsk_lsn.get()
    } else {
        ra.current_lsn.get()
    };
    Ok(Ok(Page {
        lsn,
        in_use: ra.client_in_use_list.get(),
        flags: ra.flags.get(),
    }))
}

fn check_header(pos: u64, block: &[u8; BLOCK]) -> Result<(RestartPageHeader, usize), String> {
    let Ok((rp, _)) = RestartPageHeader::read_from_prefix(block.as_slice()) else {
        return Err("restart page header is short".into());
    };
    let sps = rp.system_page_size.get();
    let lps = rp.log_page_size.get();
    let pow2 = |v: u32| v as usize >= BLOCK && v.is_power_of_two();
    if !pow2(sps) || !pow2(lps) || sps > MAX_SYSTEM_PAGE {
        return Err(format!(
            "unsupported journal page sizes ({sps} and {lps} bytes)"
        ));
    }
    if pos != 0 && pos != u64::from(sps) {
        return Err(format!("a restart page lies at unexpected offset {pos}"));
    }
    let (major, minor) = (rp.major_ver.get(), rp.minor_ver.get());
    if (major, minor) != (1, 1) {
        return Err(format!(
            "journal version {major}.{minor} is in use (Windows 8 or later did not shut \
             down fully)"
        ));
    }
    let chkd = &rp.magic == b"CHKD";
    let header_end = if chkd && rp.usa_count.get() == 0 {
        size_of::<RestartPageHeader>()
    } else {
        let count = usize::from(rp.usa_count.get());
        if count != 1 + sps as usize / BLOCK {
            return Err("restart page has a wrong update sequence array count".into());
        }
        let ofs = usize::from(rp.usa_ofs.get());
        let end = ofs + 2 * count;
        if ofs < size_of::<RestartPageHeader>() || end > BLOCK - 2 {
            return Err("restart page has a wrong update sequence array offset".into());
        }
        end
    };
    let ra_ofs = usize::from(rp.restart_area_offset.get());
    if ra_ofs % 8 != 0 || ra_ofs < header_end || ra_ofs > sps as usize {
        return Err("restart page has a wrong restart area offset".into());
    }
    if !chkd && rp.chkdsk_lsn.get() != 0 {
        return Err("restart page not written by chkdsk has a chkdsk lsn".into());
    }
    Ok((rp, ra_ofs))
}

fn check_area(
    rp: &RestartPageHeader,
    ra_ofs: usize,
    block: &[u8; BLOCK],
) -> Result<RestartArea, String> {
    if ra_ofs + RA_FILE_SIZE_OFFSET > BLOCK - 2 {
        return Err("restart area starts too late in its page".into());
    }
    // Fields past `file_size` may lie beyond the first block: zero-fill, then check bounds.
    let mut raw = [0u8; size_of::<RestartArea>()];
    let avail = (BLOCK - ra_ofs).min(raw.len());
    raw[..avail].copy_from_slice(&block[ra_ofs..ra_ofs + avail]);
    let Ok(ra) = RestartArea::read_from_bytes(&raw[..]) else {
        return Err("restart area is short".into());
    };
    let ca_ofs = usize::from(ra.client_array_offset.get());
    if ca_ofs % 8 != 0 || ra_ofs + ca_ofs > BLOCK - 2 {
        return Err("restart area has a wrong client array offset".into());
    }
    let sps = rp.system_page_size.get() as usize;
    let clients = usize::from(ra.log_clients.get());
    let computed = ca_ofs + clients * CLIENT_RECORD_LEN;
    let stated = usize::from(ra.restart_area_length.get());
    if ra_ofs + computed > sps || ra_ofs + stated > sps || computed > stated {
        return Err("restart area does not fit its page".into());
    }
    let bad_list = |v: u16| v != NO_CLIENT && usize::from(v) >= clients;
    if bad_list(ra.client_free_list.get()) || bad_list(ra.client_in_use_list.get()) {
        return Err("restart area client lists point past the client array".into());
    }
    let file_bits = 64 - ra.file_size.get().cast_unsigned().leading_zeros();
    if ra.seq_number_bits.get() != 67u32.wrapping_sub(file_bits) {
        return Err("restart area sequence number bits do not match the journal size".into());
    }
    if ra.log_record_header_length.get() % 8 != 0 || ra.log_page_data_offset.get() % 8 != 0 {
        return Err("restart area lengths are not multiples of 8".into());
    }
    Ok(ra)
}

/// Applies the update sequence fixups of a multi-sector protected page; false if a sector's
/// last two bytes do not carry the sequence number (a torn write).
fn unprotect(page: &mut [u8], rp: &RestartPageHeader) -> bool {
    let ofs = usize::from(rp.usa_ofs.get());
    let count = usize::from(rp.usa_count.get());
    let Some(usa) = page.get(ofs..ofs + 2 * count).map(<[u8]>::to_vec) else {
        return false;
    };
    let (usn, entries) = usa.split_at(2);
    for (i, entry) in entries.chunks_exact(2).enumerate() {
        let end = (i + 1) * BLOCK;
        let Some(tail) = page.get_mut(end - 2..end) else {
            return false;
        };
        if tail != usn {
            return false;
        }
        tail.copy_from_slice(entry);
    }
    true
}

/// Walks the free and in-use client lists: indices within the array, no loops, the first
/// record of each list without a predecessor.
fn clients_consistent(page: &[u8], ra_ofs: usize, ra: &RestartArea) -> bool {
    let clients = ra.log_clients.get();
    let base = ra_ofs + usize::from(ra.client_array_offset.get());
    let links = |idx: u16| -> Option<(u16, u16)> {
        let at = base + usize::from(idx) * CLIENT_RECORD_LEN + 16;
        let b = page.get(at..at + 4)?;
        Some((
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        ))
    };
    let mut budget = clients;
    for head in [ra.client_free_list.get(), ra.client_in_use_list.get()] {
        let mut idx = head;
        let mut first = true;
        while idx != NO_CLIENT {
            if budget == 0 || idx >= clients {
                return false;
            }
            let Some((prev, next)) = links(idx) else {
                return false;
            };
            if first && prev != NO_CLIENT {
                return false;
            }
            first = false;
            budget -= 1;
            idx = next;
        }
    }
    true
}

#[cfg(test)]
#[path = "logfile_tests.rs"]
mod tests;
