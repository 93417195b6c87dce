//! The swap header page (Linux `union swap_header`): 1024 bytes of boot bits, then version,
//! last page, bad-page count, UUID, label, and the bad-page list at byte 1536; the signature
//! fills the page's last ten bytes. Hibernation replaces that signature with its own (the
//! kernel's "S1SUSPEND"/"S2SUSPEND", uswsusp's "ULSUSPEND", "LINHIB0001", TuxOnIce's), keeping
//! the original at page_size - 20.

use vdisk_core::{BlockDevice, Result};

/// Page sizes tried, smallest first (x86 4 KiB; arm64/ppc64 up to 64 KiB).
const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];
const SIGNATURE_LEN: usize = 10;
/// Signatures a hibernation image writes in place of the swap signature.
const HIBERNATION: [&[u8]; 5] = [
    b"S1SUSPEND",
    b"S2SUSPEND",
    b"ULSUSPEND",
    b"LINHIB0001",
    b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c",
];
/// Byte offset of the version field.
const INFO: u64 = 1024;
/// Byte offset of the bad-page list.
const BAD_PAGES: u64 = 1536;

/// What the signature says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signature {
    Version1,
    Version0,
    Hibernation,
}

/// The page size and signature of a swap area, if `volume` holds one.
pub(crate) fn find_signature(volume: &dyn BlockDevice) -> Result<Option<(u64, Signature)>> {
    for page in PAGE_SIZES {
        if volume.size() < page {
            break;
        }
        let mut sig = [0u8; SIGNATURE_LEN];
        volume.read_at(&mut sig, page - SIGNATURE_LEN as u64)?;
        let found = if &sig == b"SWAPSPACE2" {
            Signature::Version1
        } else if &sig == b"SWAP-SPACE" {
            Signature::Version0
        } else if HIBERNATION.iter().any(|h| sig.starts_with(h)) {
            Signature::Hibernation
        } else {
            continue;
        };
        return Ok(Some((page, found)));
    }
    Ok(None)
}

/// A version 1 header whose fields passed the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The last page of the area (pages `0..=last_page`; page 0 is the header).
    pub last_page: u64,
    /// Pages the kernel must not use, each within `1..=last_page`.
    pub bad_pages: Vec<u64>,
    pub label: String,
    pub uuid: String,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Reads the header page of a version 1 area; `Ok(Err(reason))` when a field is out of
    /// bounds.
    pub(crate) fn read(
        volume: &dyn BlockDevice,
        page: u64,
    ) -> Result<std::result::Result<Header, String>> {
        let mut b = vec![0u8; usize::try_from(page).unwrap_or(4096)];
        volume.read_at(&mut b, 0)?;
        let at = |o: u64| usize::try_from(o).unwrap_or(0);
        let version = le32(&b, at(INFO));
        if version != 1 {
            return Ok(Err(if version.swap_bytes() == 1 {
                "it was written by a system of the other byte order".into()
            } else {
                format!("it gives version {version}")
            }));
        }
        let last_page = u64::from(le32(&b, at(INFO + 4)));
        let pages = volume.size() / page;
        if last_page == 0 || last_page >= pages {
            return Ok(Err(format!(
                "its last page is {last_page}, but the volume holds {pages} pages"
            )));
        }
        let count = u64::from(le32(&b, at(INFO + 8)));
        let max = (page - BAD_PAGES - SIGNATURE_LEN as u64) / 4;
        if count > max {
            return Ok(Err(format!(
                "it lists {count} bad pages (at most {max} fit)"
            )));
        }
        let mut bad_pages = Vec::new();
        for i in 0..count {
            let p = u64::from(le32(&b, at(BAD_PAGES + 4 * i)));
            if p == 0 || p > last_page {
                return Ok(Err(format!("it lists bad page {p}, outside the area")));
            }
            bad_pages.push(p);
        }
        let uuid: String = b[at(INFO + 12)..at(INFO + 28)]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        let label = String::from_utf8_lossy(&b[at(INFO + 28)..at(INFO + 44)])
            .trim_end_matches('\0')
            .to_string();
        Ok(Ok(Header {
            last_page,
            bad_pages,
            label,
            uuid,
        }))
    }
}

/// The name of a file system whose boot sector sits in the swap header's boot bits (a FAT,
/// NTFS or exFAT boot sector: jump, OEM id or BPB, end marker).
pub(crate) fn boot_sector_in_boot_bits(volume: &dyn BlockDevice) -> Result<Option<&'static str>> {
    let mut b = [0u8; 512];
    volume.read_at(&mut b, 0)?;
    if b[510..512] != [0x55, 0xAA] || !matches!(b[0], 0xEB | 0xE9) {
        return Ok(None);
    }
    Ok(Some(match &b[3..11] {
        b"NTFS    " => "ntfs",
        b"EXFAT   " => "exfat",
        _ => "fat",
    }))
}
