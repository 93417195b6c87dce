//! Partition tables: where the volumes of a virtual disk lie, and which sectors hold the tables.
//!
//! [`read_layout`] reads a disk through [`BlockDevice`] (positional reads only) and answers
//! with a [`Layout`]:
//!
//! ```text
//!  sector 0 ── no 0x55AA, or entries that are not a table ──► Unpartitioned (one volume)
//!     │ 0x55AA + valid entries
//!     ├── an entry of type 0xEE ──► GPT: primary header (LBA 1) + entries, both CRC-checked;
//!     │                             backup header at its alternate LBA (normally the last);
//!     │                             a bad primary falls back to the backup, with a note
//!     └── otherwise ──► MBR: 4 primary entries; an extended entry (0x05/0x0F/0x85) starts a
//!                       chain of EBRs, each giving one logical partition and the next EBR
//! ```
//!
//! Anything hostile or inconsistent (overlapping partitions, partitions past the end of the
//! disk, EBR loops, absurd entry counts or sizes, both GPT headers damaged) gives
//! [`Layout::Unknown`] with the reason: the caller must then treat no byte of the disk as
//! file-system free. Only I/O errors of the device are `Err`. Memory stays bounded by
//! [`gpt::MAX_ENTRY_ARRAY`] and [`mbr::MAX_LOGICAL`] whatever the disk says.
//!
//! The table sectors ([`PartitionTable::metadata`]) are reported so that callers can check
//! that nothing they free overlaps them.
//!
//! # Type ids are hints
//! Every partition with a non-empty range is offered to the file-system analysers, whatever
//! its type id says (Linux 0x83 holding FAT, an ESP holding ext4, LVM on 0x83 are all common);
//! each analyser decides by its own signature. The exceptions are the few types whose content
//! is by definition not a file system of its own, where a stale signature left from an earlier
//! use must not be believed ([`PartitionKind::not_a_volume`]): hibernation images, "non-file
//! system data", boot loader code, the Microsoft reserved partition, Windows dynamic disks and
//! Storage Spaces, and Linux software RAID members (a RAID-0 or RAID-5 member starts with what
//! looks like its array's file system, whose free map does not describe the member). The
//! extended partition of an MBR is a container of EBRs, never a volume.

mod crc32;
pub mod gpt;
pub mod mbr;

use std::fmt;
use std::ops::Range;

use crate::block::BlockDevice;
use crate::error::Result;

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The number users know it by: MBR primaries 1 to 4, logical partitions from 5 in chain
    /// order, GPT entries their index in the entry array plus one (as Linux numbers them).
    pub index: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes (non-zero).
    pub len: u64,
    /// What the table says about its content.
    pub kind: PartitionKind,
}

impl Partition {
    /// The disk bytes the partition covers.
    pub fn range(&self) -> Range<u64> {
        self.start..self.start + self.len
    }
}

/// The type information of a partition, as its table gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKind {
    /// An MBR partition (primary or logical) with its system id byte.
    Mbr {
        /// The system id (0x07 NTFS/exFAT, 0x83 Linux, ...).
        type_id: u8,
        /// True for a logical partition inside the extended partition.
        logical: bool,
    },
    /// A GPT partition.
    Gpt {
        /// The partition type GUID.
        type_guid: Guid,
        /// The partition's own GUID.
        guid: Guid,
        /// The partition name (UTF-16 in the table, up to 36 units).
        name: String,
    },
}

impl PartitionKind {
    /// A short description for reports: "mbr type 0x07", "gpt Microsoft basic data".
    pub fn describe(&self) -> String {
        match self {
            PartitionKind::Mbr { type_id, logical } => {
                let l = if *logical { "logical " } else { "" };
                format!("mbr {l}type {type_id:#04x}")
            }
            PartitionKind::Gpt {
                type_guid, name, ..
            } => {
                let t = gpt::type_name(type_guid).map_or_else(|| type_guid.to_string(), Into::into);
                if name.is_empty() {
                    format!("gpt {t}")
                } else {
                    format!("gpt {t} \"{name}\"")
                }
            }
        }
    }
}

/// MBR system ids whose partitions are never offered to analysers, and why.
const MBR_NOT_VOLUMES: [(u8, &str); 5] = [
    (
        0x42,
        "a windows dynamic disk (ldm) partition, whose volumes may span or stripe disks",
    ),
    (0x84, "a hibernation partition holding a memory image"),
    (
        0xA0,
        "a laptop hibernation partition holding a memory image",
    ),
    (0xDA, "marked as holding non-file-system data"),
    (
        0xFD,
        "a linux software raid member, whose array's data it does not describe alone",
    ),
];

/// GPT type GUIDs (as displayed) whose partitions are never offered to analysers, and why.
const GPT_NOT_VOLUMES: [(&str, &str); 6] = [
    (
        "21686148-6449-6E6F-744E-656564454649",
        "a bios boot partition holding boot loader code",
    ),
    (
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        "the microsoft reserved partition, which windows may use without a file system",
    ),
    (
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
        "windows dynamic disk (ldm) metadata",
    ),
    (
        "AF9B60A0-1431-4F62-BC68-3311714A69AD",
        "a windows dynamic disk (ldm) partition, whose volumes may span or stripe disks",
    ),
    (
        "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D",
        "a windows storage spaces pool member",
    ),
    (
        "A19D880F-05FC-4D3B-A006-743F0F84911E",
        "a linux software raid member, whose array's data it does not describe alone",
    ),
];

impl PartitionKind {
    /// Why this partition must not be offered to the file-system analysers, if its type says
    /// its content is not a file system of its own (see the [module docs](self)); `None` for
    /// every other type, known or not: the analysers then decide by content.
    pub fn not_a_volume(&self) -> Option<&'static str> {
        match self {
            PartitionKind::Mbr { type_id, .. } => MBR_NOT_VOLUMES
                .iter()
                .find(|(t, _)| t == type_id)
                .map(|(_, why)| *why),
            PartitionKind::Gpt { type_guid, .. } => {
                let g = type_guid.to_string();
                GPT_NOT_VOLUMES
                    .iter()
                    .find(|(t, _)| *t == g)
                    .map(|(_, why)| *why)
            }
        }
    }
}

/// A GUID as stored in GPT (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// True for the all-zero GUID (an unused GPT entry).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which partitioning scheme a table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Master boot record, with extended/logical partitions.
    Mbr,
    /// GUID partition table (behind a protective MBR).
    Gpt,
}

impl Scheme {
    /// Lowercase name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mbr => "mbr",
            Scheme::Gpt => "gpt",
        }
    }
}

/// A partition table that was read and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// MBR or GPT.
    pub scheme: Scheme,
    /// The logical sector size the table was read with.
    pub sector_size: u32,
    /// The data partitions (never the extended container), sorted by start, disjoint, each
    /// within the disk and outside [`PartitionTable::metadata`].
    pub partitions: Vec<Partition>,
    /// Disk bytes holding the tables: the MBR sector, every EBR sector, GPT headers and entry
    /// arrays (primary and backup). Sorted, disjoint.
    pub metadata: Vec<Range<u64>>,
    /// Things the user should know that did not stop the table from being used ("the primary
    /// gpt header is damaged ...; used the backup").
    pub notes: Vec<String>,
}

/// What a disk's first sectors say about how it is divided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// No partition table: the disk is one volume (a "superfloppy").
    Unpartitioned,
    /// A valid MBR or GPT.
    Table(PartitionTable),
    /// A table is present but cannot be relied on; nothing on the disk may be treated as free.
    Unknown {
        /// Why, in words a user understands.
        reason: String,
    },
}

impl Layout {
    /// "none", "mbr", "gpt" or "unknown", for reports.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Layout::Unpartitioned => "none",
            Layout::Table(t) => t.scheme.as_str(),
            Layout::Unknown { .. } => "unknown",
        }
    }
}

/// Why a table is unusable; becomes [`Layout::Unknown`].
pub(crate) type Verdict<T> = std::result::Result<T, String>;

/// Reads the partition layout of `disk`. See the [module docs](self).
pub fn read_layout(disk: &dyn BlockDevice) -> Result<Layout> {
    let sector_size = disk.sector_size();
    if !matches!(sector_size, 512 | 4096) {
        return Ok(Layout::Unknown {
            reason: format!("unsupported logical sector size {sector_size}"),
        });
    }
    let Some(boot) = mbr::read_boot_sector(disk)? else {
        return Ok(Layout::Unpartitioned);
    };
    let table = if boot.is_protective() {
        gpt::read(disk, sector_size)?
    } else {
        mbr::read(disk, sector_size, &boot)?
    };
    Ok(match table {
        Ok(t) => Layout::Table(t),
        Err(reason) => Layout::Unknown { reason },
    })
}

/// Checks that `parts` (sorted by the caller or not) and `metadata` lie within `0..disk_size`
/// and do not overlap each other; sorts both.
pub(crate) fn check_disjoint(
    parts: &mut [Partition],
    metadata: &mut Vec<Range<u64>>,
    disk_size: u64,
) -> Verdict<()> {
    for p in parts.iter() {
        if p.start.checked_add(p.len).is_none_or(|end| end > disk_size) {
            return Err(format!(
                "partition {} ({} bytes at offset {:#x}) extends past the end of the {disk_size}-byte disk",
                p.index, p.len, p.start
            ));
        }
    }
    metadata.sort_unstable_by_key(|r| (r.start, r.end));
    metadata.dedup();
    parts.sort_unstable_by_key(|p| p.start);
    let mut all: Vec<(Range<u64>, String)> = parts
        .iter()
        .map(|p| (p.range(), format!("partition {}", p.index)))
        .chain(metadata.iter().map(|r| {
            (
                r.clone(),
                format!("the partition table at offset {:#x}", r.start),
            )
        }))
        .collect();
    all.sort_unstable_by_key(|(r, _)| (r.start, r.end));
    for w in all.windows(2) {
        if w[1].0.start < w[0].0.end {
            return Err(format!("{} overlaps {}", w[1].1, w[0].1));
        }
    }
    if let Some(r) = metadata.iter().find(|r| r.end > disk_size) {
        return Err(format!(
            "the partition table at offset {:#x} lies past the end of the {disk_size}-byte disk",
            r.start
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
