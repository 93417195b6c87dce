//! The block allocation table: one big-endian u32 sector offset per block, loaded whole at open
//! (STYLE.md pitfall: no per-entry reads) and written back one 512-byte sector at a time.

use std::collections::BTreeSet;

use vdisk_core::{Error, HostFile, Result};
use zerocopy::IntoBytes;
use zerocopy::byteorder::big_endian::U32;

use crate::format::{BAT_UNALLOCATED, SECTOR};

/// Entries in one 512-byte BAT sector.
const ENTRIES_PER_SECTOR: u64 = SECTOR / 4;

/// The BAT of a dynamic disk, as stored (including the padding of its last sector, so sector
/// writes put back exactly what was there).
#[derive(Debug, Clone)]
pub(crate) struct Bat {
    /// Host offset of the table.
    offset: u64,
    /// Meaningful entries (`max_table_entries`).
    len: u64,
    /// The whole padded table.
    raw: Vec<U32>,
}

impl Bat {
    /// Bytes the table of `entries` entries occupies, padded to a sector.
    pub(crate) fn padded_len(entries: u64) -> u64 {
        entries.saturating_mul(4).next_multiple_of(SECTOR)
    }

    /// Reads the whole table (`entries` already bounded by the caller) in one request.
    pub(crate) fn load(file: &dyn HostFile, offset: u64, entries: u64) -> Result<Bat> {
        let words = usize::try_from(Self::padded_len(entries) / 4)
            .map_err(|_| Error::invalid("the bat is too large for this machine", offset))?;
        let mut raw = vec![U32::new(BAT_UNALLOCATED); words];
        file.read_at(raw.as_mut_bytes(), offset).map_err(|e| {
            Error::new(e.kind(), format!("cannot read the bat: {}", e.message()))
                .with_offset(offset)
        })?;
        Ok(Bat {
            offset,
            len: entries,
            raw,
        })
    }

    /// A new table with every entry unallocated.
    pub(crate) fn new_empty(offset: u64, entries: u64) -> Bat {
        let words = usize::try_from(Self::padded_len(entries) / 4).unwrap_or(0);
        Bat {
            offset,
            len: entries,
            raw: vec![U32::new(BAT_UNALLOCATED); words],
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Host offset of the table.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The whole padded table as stored.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.raw.as_bytes()
    }

    /// The raw entry of `block`, `None` past the table.
    pub(crate) fn entry(&self, block: u64) -> Option<u32> {
        if block >= self.len {
            return None;
        }
        let i = usize::try_from(block).ok()?;
        self.raw.get(i).map(|e| e.get())
    }

    /// Host offset of `block`'s footprint (sector bitmap first), `None` if unallocated or past
    /// the table.
    pub(crate) fn host(&self, block: u64) -> Option<u64> {
        match self.entry(block)? {
            BAT_UNALLOCATED => None,
            sector => Some(u64::from(sector) * SECTOR),
        }
    }

    /// Every allocated block with its host offset, in block order.
    pub(crate) fn allocated(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.len).filter_map(|b| Some((b, self.host(b)?)))
    }

    /// Sets `block`'s raw entry, returning the BAT sector that changed (`None` if nothing did
    /// or the block is past the table).
    pub(crate) fn set(&mut self, block: u64, value: u32) -> Option<u64> {
        if block >= self.len {
            return None;
        }
        let slot = self.raw.get_mut(usize::try_from(block).ok()?)?;
        if slot.get() == value {
            return None;
        }
        *slot = U32::new(value);
        Some(block / ENTRIES_PER_SECTOR)
    }

    /// Writes the changed table sectors and syncs. If that fails, the table in memory is
    /// reloaded from the file (best effort), so it never claims what the file does not say.
    pub(crate) fn commit(&mut self, file: &dyn HostFile, sectors: &BTreeSet<u64>) -> Result<()> {
        let result = self.write_sectors(file, sectors).and_then(|()| file.sync());
        if result.is_err()
            && let Ok(fresh) = Bat::load(file, self.offset, self.len)
        {
            *self = fresh;
        }
        result
    }

    /// Writes the given table sectors, each as a single 512-byte write. Not synced.
    pub(crate) fn write_sectors(&self, file: &dyn HostFile, sectors: &BTreeSet<u64>) -> Result<()> {
        let bytes = self.as_bytes();
        for &s in sectors {
            let start = usize::try_from(s * SECTOR).unwrap_or(usize::MAX);
            let Some(chunk) = bytes.get(start..start.saturating_add(512)) else {
                continue;
            };
            file.write_at(chunk, self.offset + s * SECTOR)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemFile;

    #[test]
    fn set_reports_the_changed_sector_once_and_keeps_padding() {
        let mut bat = Bat::new_empty(1536, 200);
        assert_eq!(
            bat.as_bytes().len(),
            1024,
            "800 bytes padded to two sectors"
        );
        assert_eq!(bat.set(130, 7), Some(1));
        assert_eq!(bat.set(130, 7), None, "unchanged entry, no write");
        assert_eq!(bat.set(200, 7), None, "past the table");
        assert_eq!(bat.host(130), Some(7 * 512));
        assert_eq!(bat.host(0), None);
        assert_eq!(bat.entry(200), None);
        let file = MemFile::from_bytes(vec![0; 4096]);
        bat.write_sectors(&file, &BTreeSet::from([1])).unwrap();
        let bytes = file.to_vec();
        assert_eq!(bytes[1536..2048], [0; 512], "sector 0 untouched");
        assert_eq!(&bytes[2048 + 8..2048 + 12], &[0, 0, 0, 7]);
        assert_eq!(
            bytes[2048 + 800 - 512..2560],
            [0xff; 224],
            "padding written as loaded"
        );
        let again = Bat::load(&file, 1536, 200).unwrap();
        assert_eq!(again.entry(130), Some(7));
        assert_eq!(
            again.host(0),
            Some(0),
            "a zero entry is allocated at sector 0"
        );
        assert!(
            Bat::load(&file, 4000, 200).is_err(),
            "a table past the end fails"
        );
    }
}
