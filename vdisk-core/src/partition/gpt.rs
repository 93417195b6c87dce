//! The GUID partition table (UEFI 2.x, chapter 5.3).
//!
//! LBA 0 holds a protective MBR; LBA 1 the primary header, which names its entry array
//! (normally LBA 2..34) and the backup header (normally the last LBA, with its entry array just
//! before it). Each header carries a CRC-32 of itself (with the field zeroed) and of its entry
//! array. The primary is used when valid; otherwise the backup, found at the last LBA, and a
//! note says so. Both copies' sectors are reported as metadata whenever they can be located.

use std::ops::Range;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::crc32::crc32;
use super::{Guid, Partition, PartitionKind, PartitionTable, Scheme, Verdict, check_disjoint};
use crate::block::BlockDevice;
use crate::error::Result;

/// Largest entry array read (the usual array is 16 KiB: 128 entries of 128 bytes).
pub const MAX_ENTRY_ARRAY: u64 = 1 << 20;
/// Largest entry size accepted (the spec allows 128 * 2^n).
const MAX_ENTRY_SIZE: u32 = 4096;
/// "EFI PART".
const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Bytes of the header covered by its CRC at the minimum size.
const HEADER_SIZE: u32 = 92;

/// The GPT header (the first 92 bytes of its sector).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GptHeader {
    /// "EFI PART".
    pub signature: [u8; 8],
    /// 0x00010000 for revision 1.0.
    pub revision: U32,
    /// Bytes covered by `header_crc` (92 up to the sector size).
    pub header_size: U32,
    /// CRC-32 of the header with this field zeroed.
    pub header_crc: U32,
    /// Must be zero.
    pub reserved: U32,
    /// The LBA of this header.
    pub my_lba: U64,
    /// The LBA of the other header.
    pub alternate_lba: U64,
    /// First LBA partitions may use.
    pub first_usable_lba: U64,
    /// Last LBA partitions may use (inclusive).
    pub last_usable_lba: U64,
    /// The disk's GUID.
    pub disk_guid: [u8; 16],
    /// First LBA of this copy's entry array.
    pub entries_lba: U64,
    /// Number of entries in the array.
    pub entry_count: U32,
    /// Bytes per entry (128 * 2^n).
    pub entry_size: U32,
    /// CRC-32 of the entry array (`entry_count * entry_size` bytes).
    pub entries_crc: U32,
}

/// One partition entry (the first 128 bytes of each `entry_size` slot).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GptEntry {
    /// Partition type GUID; all zero = unused entry.
    pub type_guid: [u8; 16],
    /// Unique partition GUID.
    pub guid: [u8; 16],
    /// First LBA.
    pub first_lba: U64,
    /// Last LBA (inclusive).
    pub last_lba: U64,
    /// Attribute flags.
    pub attributes: U64,
    /// Name, UTF-16LE, NUL-padded.
    pub name: [U16; 36],
}

const _: () = assert!(size_of::<GptHeader>() == HEADER_SIZE as usize);
const _: () = assert!(size_of::<GptEntry>() == 128);

/// Well-known partition type GUIDs (as displayed) and their names.
const TYPE_NAMES: [(&str, &str); 12] = [
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
    ),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    (
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
        "Windows recovery environment",
    ),
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    (
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
        "Windows LDM metadata",
    ),
    ("AF9B60A0-1431-4F62-BC68-3311714A69AD", "Windows LDM data"),
    ("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Storage Spaces"),
];

/// The common name of a partition type GUID, if it is a well-known one.
pub fn type_name(guid: &Guid) -> Option<&'static str> {
    let s = guid.to_string();
    TYPE_NAMES.iter().find(|(g, _)| *g == s).map(|(_, n)| *n)
}

/// One copy of the table: its header's sectors, its entries' sectors, and the entries.
struct Copy {
    header: GptHeader,
    metadata: [Range<u64>; 2],
    entries: Vec<u8>,
}

/// Reads the GPT of a disk whose LBA 0 is a protective MBR.
pub(crate) fn read(disk: &dyn BlockDevice, sector_size: u32) -> Result<Verdict<PartitionTable>> {
    let ss = u64::from(sector_size);
    let lbas = disk.size() / ss;
    if lbas < 3 {
        return Ok(Err("disk too small for its gpt".into()));
    }
    let last = lbas - 1;
    let primary = read_copy(disk, ss, 1, last)?;
    let mut notes = Vec::new();
    // Where the backup should be: the primary's alternate LBA if the primary is sound (a disk
    // that was enlarged keeps its backup at the old end until repaired), else the last LBA.
    let backup_lba = match &primary {
        Ok(p) => p.header.alternate_lba.get(),
        Err(_) => last,
    };
    let backup = read_copy(disk, ss, backup_lba, last)?;
    let (used, other) = match (primary, backup) {
        (Ok(p), Ok(b)) => {
            if p.entries != b.entries {
                notes.push(
                    "the primary and backup gpt entry arrays differ; used the primary".into(),
                );
            }
            (p, Some(b))
        }
        (Ok(p), Err(why)) => {
            notes.push(format!(
                "the backup gpt header at lba {backup_lba} is damaged ({why}); used the primary"
            ));
            (p, None)
        }
        (Err(why), Ok(b)) => {
            notes.push(format!(
                "the primary gpt header is damaged ({why}); used the backup at lba {backup_lba}"
            ));
            (b, None)
        }
        (Err(p), Err(b)) => {
            return Ok(Err(format!(
                "both gpt headers are damaged (primary: {p}; backup at lba {backup_lba}: {b})"
            )));
        }
    };
    let h = &used.header;
    // The table's own sector (LBA 0).
    let mut metadata: Vec<Range<u64>> = Vec::new();
    metadata.push(0..ss);
    metadata.extend(used.metadata.iter().cloned());
    if let Some(o) = &other {
        metadata.extend(o.metadata.iter().cloned());
    } else {
        // The other copy is damaged, but its place is known from the good header: keep it.
        let alt = h.alternate_lba.get();
        if alt <= last {
            metadata.push(alt * ss..(alt + 1) * ss);
        }
    }
    let first_usable = h.first_usable_lba.get();
    let last_usable = h.last_usable_lba.get();
    if first_usable > last_usable || last_usable > last {
        return Ok(Err(format!(
            "gpt usable range lba {first_usable}..={last_usable} does not fit the {lbas}-sector disk"
        )));
    }
    let entry_size = h.entry_size.get() as usize;
    let mut parts = Vec::new();
    for (i, slot) in used.entries.chunks_exact(entry_size).enumerate() {
        let Ok((e, _)) = GptEntry::read_from_prefix(slot) else {
            continue;
        };
        if e.type_guid == [0; 16] {
            continue;
        }
        let (first, last_lba) = (e.first_lba.get(), e.last_lba.get());
        let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        if first > last_lba || first < first_usable || last_lba > last_usable {
            return Ok(Err(format!(
                "gpt partition {index} (lba {first}..={last_lba}) lies outside the usable range lba {first_usable}..={last_usable}"
            )));
        }
        let units: Vec<u16> = e
            .name
            .iter()
            .map(|u| u.get())
            .take_while(|&u| u != 0)
            .collect();
        parts.push(Partition {
            index,
            start: first * ss,
            len: (last_lba - first + 1) * ss,
            kind: PartitionKind::Gpt {
                type_guid: Guid(e.type_guid),
                guid: Guid(e.guid),
                name: String::from_utf16_lossy(&units),
            },
        });
    }
    if let Err(reason) = check_disjoint(&mut parts, &mut metadata, disk.size()) {
        return Ok(Err(reason));
    }
    Ok(Ok(PartitionTable {
        scheme: Scheme::Gpt,
        sector_size,
        partitions: parts,
        metadata,
        notes,
    }))
}

/// Reads and validates the header at `lba` and its entry array.
fn read_copy(disk: &dyn BlockDevice, ss: u64, lba: u64, last: u64) -> Result<Verdict<Copy>> {
    if lba == 0 || lba > last {
        return Ok(Err(format!("header lba {lba} is outside the disk")));
    }
    let at = lba * ss;
    let mut sector = vec![0u8; usize::try_from(ss).unwrap_or(512)];
    disk.read_at(&mut sector, at)?;
    let Ok((header, _)) = GptHeader::read_from_prefix(&sector) else {
        return Ok(Err("sector too small".into()));
    };
    if header.signature != SIGNATURE {
        return Ok(Err("no \"EFI PART\" signature".into()));
    }
    let size = header.header_size.get();
    if size < HEADER_SIZE || u64::from(size) > ss {
        return Ok(Err(format!("header size {size} is invalid")));
    }
    let mut covered = sector[..size as usize].to_vec();
    covered[16..20].fill(0);
    if crc32(&covered) != header.header_crc.get() {
        return Ok(Err("header checksum mismatch".into()));
    }
    if header.my_lba.get() != lba {
        return Ok(Err(format!(
            "header says it is at lba {}, found at lba {lba}",
            header.my_lba.get()
        )));
    }
    let (count, esize) = (header.entry_count.get(), header.entry_size.get());
    if !(128..=MAX_ENTRY_SIZE).contains(&esize) || !esize.is_power_of_two() {
        return Ok(Err(format!("entry size {esize} is invalid")));
    }
    let bytes = u64::from(count) * u64::from(esize);
    if bytes > MAX_ENTRY_ARRAY {
        return Ok(Err(format!(
            "entry array of {count} entries of {esize} bytes exceeds the {MAX_ENTRY_ARRAY}-byte limit"
        )));
    }
    let first = header.entries_lba.get();
    let sectors = bytes.div_ceil(ss).max(1);
    if first == 0 || first.checked_add(sectors).is_none_or(|end| end > last + 1) {
        return Ok(Err(format!(
            "entry array at lba {first} lies outside the disk"
        )));
    }
    // Bounded by MAX_ENTRY_ARRAY above.
    let mut entries = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
    disk.read_at(&mut entries, first * ss)?;
    if crc32(&entries) != header.entries_crc.get() {
        return Ok(Err("entry array checksum mismatch".into()));
    }
    Ok(Ok(Copy {
        header,
        metadata: [at..at + ss, first * ss..(first + sectors) * ss],
        entries,
    }))
}
