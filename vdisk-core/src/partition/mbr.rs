//! The master boot record and the extended boot record chain.
//!
//! The MBR is the first 512 bytes of LBA 0: boot code, four 16-byte partition entries at 446,
//! and the signature 0x55 0xAA at 510. An entry of an extended type (0x05, 0x0F, 0x85) is a
//! container whose first sector is an EBR: its entry 0 is one logical partition (start relative
//! to that EBR), its entry 1 points at the next EBR (start relative to the container). The
//! chain is followed at most [`MAX_LOGICAL`] steps, each EBR must lie strictly after the one
//! before it inside the container, so a loop or a runaway chain is refused.

use std::ops::Range;

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Partition, PartitionKind, PartitionTable, Scheme, Verdict, check_disjoint};
use crate::block::BlockDevice;
use crate::error::Result;

/// Most logical partitions followed in an EBR chain (Linux numbers at most 256 partitions).
pub const MAX_LOGICAL: usize = 252;

/// The boot signature at offset 510.
const SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// The system id of a GPT protective entry.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xEE;
/// OEM ids (bytes 3..11) of volume boot records that carry boot code in the entry area.
const VOLUME_OEM_IDS: [&[u8; 8]; 2] = [b"NTFS    ", b"EXFAT   "];
/// System ids of extended (container) partitions: CHS, LBA, Linux.
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0F, 0x85];

/// One 16-byte MBR/EBR partition entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MbrEntry {
    /// 0x80 active, 0x00 inactive; anything else means this is not a partition table.
    pub boot: u8,
    /// CHS address of the first sector (ignored; LBA fields are used).
    pub first_chs: [u8; 3],
    /// System id; 0 = unused.
    pub type_id: u8,
    /// CHS address of the last sector (ignored).
    pub last_chs: [u8; 3],
    /// First sector (LBA; relative for EBR entries).
    pub start_lba: U32,
    /// Number of sectors.
    pub sectors: U32,
}

/// The first 512 bytes of an MBR or EBR sector.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BootSector {
    /// Boot code (and, in an MBR, the disk signature).
    pub code: [u8; 446],
    /// The four partition entries.
    pub entries: [MbrEntry; 4],
    /// 0x55 0xAA.
    pub signature: [u8; 2],
}

const _: () = assert!(size_of::<MbrEntry>() == 16);
const _: () = assert!(size_of::<BootSector>() == 512);

impl MbrEntry {
    fn is_used(&self) -> bool {
        self.type_id != 0 && self.sectors.get() != 0
    }

    fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.type_id)
    }
}

impl BootSector {
    /// True if some entry is a GPT protective partition (a protective or hybrid MBR).
    pub fn is_protective(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.type_id == TYPE_GPT_PROTECTIVE)
    }

    /// True if the sector has the signature and four plausible entries (boot flags 0x00 or
    /// 0x80, at least one entry used), and is not a volume boot record: a file system at LBA 0
    /// has boot code where the entries would be.
    fn is_table(&self) -> bool {
        self.signature == SIGNATURE
            && !self.is_volume_boot_record()
            && self.entries.iter().all(|e| matches!(e.boot, 0x00 | 0x80))
            && self.entries.iter().any(MbrEntry::is_used)
    }

    /// True if the sector is a file system's own boot sector: NTFS or exFAT (their OEM id at
    /// offset 3), or FAT12/16/32 on the whole disk (a "superfloppy": an x86 jump at 0 and the
    /// file-system type "FAT" at 0x36, or "FAT32" at 0x52). Bytes a partition table never
    /// holds there, so a boot code that happens to look like entries (or an image crafted so)
    /// is not read as a table pointing into the file system's own data.
    fn is_volume_boot_record(&self) -> bool {
        let at = |range: std::ops::Range<usize>| self.code.get(range).unwrap_or(&[]);
        let jump = matches!(at(0..1), [0xEB] | [0xE9]);
        VOLUME_OEM_IDS.iter().any(|id| at(3..11) == &id[..])
            || (jump && (at(0x36..0x39) == b"FAT" || at(0x52..0x57) == b"FAT32"))
    }
}

/// Reads the first 512 bytes of the disk; `None` if they are not a partition table (a disk
/// without one, or too small to hold one).
pub fn read_boot_sector(disk: &dyn BlockDevice) -> Result<Option<BootSector>> {
    if disk.size() < 512 {
        return Ok(None);
    }
    let mut sector = BootSector::new_zeroed_sector();
    disk.read_at(sector.as_mut_bytes(), 0)?;
    Ok(sector.is_table().then_some(sector))
}

impl BootSector {
    fn new_zeroed_sector() -> BootSector {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// Reads an MBR table whose boot sector `boot` was read from LBA 0.
pub(crate) fn read(
    disk: &dyn BlockDevice,
    sector_size: u32,
    boot: &BootSector,
) -> Result<Verdict<PartitionTable>> {
    let ss = u64::from(sector_size);
    let mut parts = Vec::new();
    // The table's own sector (LBA 0).
    let mut metadata: Vec<Range<u64>> = Vec::new();
    metadata.push(0..ss);
    let mut extended: Option<(u32, Range<u64>)> = None;
    for (i, e) in boot.entries.iter().enumerate() {
        if !e.is_used() {
            continue;
        }
        let index = [1, 2, 3, 4][i];
        let range = lba_range(e.start_lba.get(), e.sectors.get(), 0, ss);
        if e.start_lba.get() == 0 {
            return Ok(Err(format!(
                "mbr partition {index} starts at sector 0, on the table itself"
            )));
        }
        if e.is_extended() {
            if extended.is_some() {
                return Ok(Err("the mbr has more than one extended partition".into()));
            }
            extended = Some((index, range));
        } else {
            parts.push(Partition {
                index,
                start: range.start,
                len: range.end - range.start,
                kind: PartitionKind::Mbr {
                    type_id: e.type_id,
                    logical: false,
                },
            });
        }
    }
    if let Some((index, container)) = &extended {
        if container.end > disk.size() {
            return Ok(Err(format!(
                "extended partition {index} extends past the end of the {}-byte disk",
                disk.size()
            )));
        }
        // Primaries must not overlap the container; logical partitions and EBRs are checked
        // against each other and the primaries below, and must lie inside the container.
        if let Some(p) = parts
            .iter()
            .find(|p| p.start < container.end && container.start < p.start + p.len)
        {
            return Ok(Err(format!(
                "partition {} overlaps extended partition {index}",
                p.index
            )));
        }
        match read_chain(disk, ss, container)? {
            Ok((logical, ebrs)) => {
                parts.extend(logical);
                metadata.extend(ebrs);
            }
            Err(reason) => return Ok(Err(reason)),
        }
    }
    if let Err(reason) = check_disjoint(&mut parts, &mut metadata, disk.size()) {
        return Ok(Err(reason));
    }
    Ok(Ok(PartitionTable {
        scheme: Scheme::Mbr,
        sector_size,
        partitions: parts,
        metadata,
        notes: Vec::new(),
    }))
}

/// Byte range of `sectors` sectors at `base + start` (LBAs); u64 arithmetic cannot overflow
/// for u32 inputs and sector sizes up to 4096.
fn lba_range(start: u32, sectors: u32, base: u64, ss: u64) -> Range<u64> {
    let first = (base + u64::from(start)) * ss;
    first..first + u64::from(sectors) * ss
}

/// The logical partitions of an extended partition and the sectors of its EBRs.
type Chain = (Vec<Partition>, Vec<Range<u64>>);

/// Follows the EBR chain of the extended partition `container`; returns the logical
/// partitions (numbered from 5) and the EBR sectors.
fn read_chain(disk: &dyn BlockDevice, ss: u64, container: &Range<u64>) -> Result<Verdict<Chain>> {
    let base = container.start / ss;
    let mut logical = Vec::new();
    let mut ebrs = Vec::new();
    let mut rel: u64 = 0;
    for step in 0..=MAX_LOGICAL {
        let ebr_at = (base + rel) * ss;
        if ebr_at + ss > container.end {
            return Ok(Err(format!(
                "extended boot record at offset {ebr_at:#x} lies outside the extended partition"
            )));
        }
        let mut ebr: BootSector = zerocopy::FromZeros::new_zeroed();
        disk.read_at(ebr.as_mut_bytes(), ebr_at)?;
        if ebr.signature != SIGNATURE {
            if step == 0 {
                // An extended partition without logical partitions need not hold an EBR.
                return Ok(Ok((logical, ebrs)));
            }
            return Ok(Err(format!(
                "extended boot record at offset {ebr_at:#x} has no 0x55aa signature"
            )));
        }
        if step == MAX_LOGICAL {
            return Ok(Err(format!(
                "the extended partition holds more than {MAX_LOGICAL} logical partitions"
            )));
        }
        ebrs.push(ebr_at..ebr_at + ss);
        let [this, next, ..] = ebr.entries;
        if this.is_used() {
            if this.start_lba.get() == 0 {
                return Ok(Err(format!(
                    "logical partition at offset {ebr_at:#x} starts on its own boot record"
                )));
            }
            let r = lba_range(this.start_lba.get(), this.sectors.get(), base + rel, ss);
            if r.end > container.end {
                return Ok(Err(format!(
                    "logical partition {} extends past the end of the extended partition",
                    logical.len() + 5
                )));
            }
            logical.push(Partition {
                index: u32::try_from(logical.len() + 5).unwrap_or(u32::MAX),
                start: r.start,
                len: r.end - r.start,
                kind: PartitionKind::Mbr {
                    type_id: this.type_id,
                    logical: true,
                },
            });
        }
        if !next.is_used() {
            return Ok(Ok((logical, ebrs)));
        }
        let next_rel = u64::from(next.start_lba.get());
        if next_rel <= rel {
            return Ok(Err(format!(
                "extended boot record at offset {ebr_at:#x} points back into the chain (a loop)"
            )));
        }
        rel = next_rel;
    }
    Ok(Err(format!(
        "the extended partition holds more than {MAX_LOGICAL} logical partitions"
    )))
}
