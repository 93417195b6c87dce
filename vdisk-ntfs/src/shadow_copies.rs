//! Volume Shadow Copies (VSS: System Restore points, "Previous Versions") of the volume.
//!
//! A shadow copy reads every block nobody wrote since the snapshot straight from the live
//! volume. A file deleted after the snapshot keeps its clusters, which `$Bitmap` now calls
//! free, and the snapshot still reads them there until they are overwritten: reclaiming them
//! destroys the snapshot's copy. So a volume whose catalog lists shadow copies is guarded.
//!
//! ```text
//!  volume offset 0x1e00: volume header (128 B)
//!    identifier {3808876b-c176-4e48-b7ae-04046e6cc752}, version 1, record type 1,
//!    catalog offset ── 0: no shadow copies (the header stays after the last is deleted)
//!  catalog: 16 KiB blocks linked by next offset; each a 128-byte header (same identifier,
//!    record type 2) and 127 entries of 128 bytes, the first u64 of each its type:
//!    0 empty, 1 unused, 2 a shadow copy of THIS volume (size, store id, creation time),
//!    3 where a store lives (present on the volume that holds the store files, which may be
//!      another volume's: those files are ordinary allocated files here, nothing to guard)
//! ```
//!
//! Where the snapshots' own data (the "diff area") lives does not matter: even when it is on
//! another volume, unchanged blocks are still read from this one, so type-2 entries alone
//! decide. Which blocks a snapshot still reads would take its store bitmaps and block lists,
//! which may be on another volume (another disk, even): they are not read here, so the whole
//! free space of such a volume is kept unless the user accepts the loss.
//!
//! Layout as documented by libvshadow (Joachim Metz, "Volume Shadow Snapshot (VSS) format")
//! and checked against the dfvfs and dfir_ntfs test volumes made by Windows 7 and 10.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use vdisk_core::{BlockDevice, Result};

/// Where the VSS volume header sits on an NTFS volume.
const HEADER_OFFSET: u64 = 0x1e00;
/// `{3808876b-c176-4e48-b7ae-04046e6cc752}` as stored (first three fields little-endian).
const VSS_ID: [u8; 16] = [
    0x6b, 0x87, 0x08, 0x38, 0x76, 0xc1, 0x48, 0x4e, 0xb7, 0xae, 0x04, 0x04, 0x6e, 0x6c, 0xc7, 0x52,
];
/// Record type of the volume header.
const VOLUME_HEADER: u32 = 1;
/// Record type of a catalog block header.
const CATALOG_HEADER: u32 = 2;
/// Bytes of a catalog block.
const CATALOG_BLOCK: usize = 16 << 10;
/// Bytes of a record header and of a catalog entry.
const ENTRY: usize = 128;
/// Catalog entry type: information about one shadow copy of this volume.
const STORE_INFORMATION: u64 = 2;
/// Most catalog blocks followed (Windows keeps at most 512 shadow copies: 5 blocks).
const MAX_CATALOG_BLOCKS: usize = 64;

/// A VSS record header (the volume header's first fields are the same).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RecordHeader {
    /// [`VSS_ID`].
    identifier: [u8; 16],
    /// Format version (1).
    version: U32,
    /// [`VOLUME_HEADER`] or [`CATALOG_HEADER`] here.
    record_type: U32,
    /// Volume header: its own offset; catalog block: offset relative to the catalog.
    field_24: U64,
    /// Volume header: unknown; catalog block: its own offset.
    field_32: U64,
    /// Volume header: unknown; catalog block: the next block's offset, 0 at the end.
    field_40: U64,
    /// Volume header: the first catalog block's offset, 0 when there is no catalog.
    field_48: U64,
    /// Volume header: maximum size of the diff area, volume and storage volume ids, flags.
    rest: [u8; 72],
}

const _: () = assert!(size_of::<RecordHeader>() == ENTRY);

/// What the VSS structures of a volume say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShadowCopies {
    /// No VSS header, or no catalog, or a catalog listing no shadow copy of this volume.
    None,
    /// This many shadow copies of this volume.
    Present(usize),
    /// A VSS header whose catalog cannot be read: there may be shadow copies.
    Unreadable(String),
}

/// Reads the VSS volume header and catalog of `volume` (offset 0 = the NTFS volume's start).
/// `Err` only for device failures.
pub(crate) fn find(volume: &dyn BlockDevice) -> Result<ShadowCopies> {
    let size = volume.size();
    if size < HEADER_OFFSET + ENTRY as u64 {
        return Ok(ShadowCopies::None);
    }
    let mut raw = [0u8; ENTRY];
    volume.read_at(&mut raw, HEADER_OFFSET)?;
    let Ok(header) = RecordHeader::read_from_bytes(&raw) else {
        return Ok(ShadowCopies::None);
    };
    if header.identifier != VSS_ID {
        return Ok(ShadowCopies::None);
    }
    if header.record_type.get() != VOLUME_HEADER {
        return Ok(ShadowCopies::Unreadable(format!(
            "its header has record type {}",
            header.record_type
        )));
    }
    let mut next = header.field_48.get();
    if next == 0 {
        return Ok(ShadowCopies::None);
    }
    let mut count = 0;
    let mut seen = Vec::new();
    let mut block = vec![0u8; CATALOG_BLOCK];
    while next != 0 {
        if seen.len() == MAX_CATALOG_BLOCKS || seen.contains(&next) {
            return Ok(ShadowCopies::Unreadable(
                "its catalog does not end".to_string(),
            ));
        }
        if next
            .checked_add(CATALOG_BLOCK as u64)
            .is_none_or(|end| end > size)
        {
            return Ok(ShadowCopies::Unreadable(format!(
                "its catalog at offset {next:#x} is outside the volume"
            )));
        }
        seen.push(next);
        volume.read_at(&mut block, next)?;
        let Ok((head, entries)) = RecordHeader::read_from_prefix(&block) else {
            return Ok(ShadowCopies::Unreadable("its catalog is cut short".into()));
        };
        if head.identifier != VSS_ID || head.record_type.get() != CATALOG_HEADER {
            return Ok(ShadowCopies::Unreadable(format!(
                "its catalog block at offset {next:#x} has no catalog header"
            )));
        }
        count += entries
            .chunks_exact(ENTRY)
            .filter(|e| U64::read_from_prefix(e).is_ok_and(|(t, _)| t.get() == STORE_INFORMATION))
            .count();
        next = head.field_40.get();
    }
    Ok(if count == 0 {
        ShadowCopies::None
    } else {
        ShadowCopies::Present(count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::fs::MemDevice;

    fn record(at: usize, vol: &mut [u8], record_type: u32, f40: u64, f48: u64) {
        vol[at..at + 16].copy_from_slice(&VSS_ID);
        vol[at + 16..at + 20].copy_from_slice(&1u32.to_le_bytes());
        vol[at + 20..at + 24].copy_from_slice(&record_type.to_le_bytes());
        vol[at + 40..at + 48].copy_from_slice(&f40.to_le_bytes());
        vol[at + 48..at + 56].copy_from_slice(&f48.to_le_bytes());
    }

    /// A volume with a VSS header whose catalog is two blocks at 64 KiB and 96 KiB.
    fn volume(entry_types: &[(usize, u64)]) -> Vec<u8> {
        let mut v = vec![0u8; 128 << 10];
        record(0x1e00, &mut v, VOLUME_HEADER, 0, 64 << 10);
        record(64 << 10, &mut v, CATALOG_HEADER, 96 << 10, 0);
        record(96 << 10, &mut v, CATALOG_HEADER, 0, 0);
        for &(at, t) in entry_types {
            v[at..at + 8].copy_from_slice(&t.to_le_bytes());
        }
        v
    }

    #[test]
    fn store_information_entries_in_every_catalog_block_count_as_shadow_copies() {
        let two = volume(&[(65536 + 128, 2), (65536 + 256, 3), (98304 + 128 * 5, 2)]);
        assert_eq!(
            find(&MemDevice::new(two)).unwrap(),
            ShadowCopies::Present(2)
        );
        // Store locations alone: this volume only holds another volume's store files.
        let none = volume(&[(65536 + 128, 3), (98304 + 128, 1)]);
        assert_eq!(find(&MemDevice::new(none)).unwrap(), ShadowCopies::None);
        assert_eq!(
            find(&MemDevice::new(vec![0; 1 << 16])).unwrap(),
            ShadowCopies::None
        );
    }

    #[test]
    fn a_catalog_that_loops_or_leaves_the_volume_is_unreadable_not_absent() {
        let mut looped = volume(&[]);
        looped[(96 << 10) + 40..(96 << 10) + 48].copy_from_slice(&(64u64 << 10).to_le_bytes());
        assert!(matches!(
            find(&MemDevice::new(looped)).unwrap(),
            ShadowCopies::Unreadable(r) if r.contains("does not end")
        ));
        let mut outside = volume(&[]);
        outside[0x1e00 + 48..0x1e00 + 56].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            find(&MemDevice::new(outside)).unwrap(),
            ShadowCopies::Unreadable(r) if r.contains("outside")
        ));
        let mut not_catalog = volume(&[]);
        not_catalog[(64 << 10) + 20] = 9;
        assert!(matches!(
            find(&MemDevice::new(not_catalog)).unwrap(),
            ShadowCopies::Unreadable(_)
        ));
    }
}
