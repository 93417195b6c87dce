//! The physical volume label: "LABELONE" in one of the first four 512-byte sectors, followed
//! by the physical volume header (the PV's UUID, its size, and where its data and metadata
//! areas lie).
//!
//! ```text
//!  label sector (normally sector 1):
//!   0 "LABELONE" │ 8 sector number │ 16 crc of bytes 20..512 │ 20 pv header offset (32)
//!  24 "LVM2 001" │ pv header: 32-byte uuid, u64 device size,
//!                │   data areas {u64 offset, u64 size}... {0, 0},
//!                │   metadata areas {u64 offset, u64 size}... {0, 0}
//! ```

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::crc;

/// The label's sector size (LVM's, whatever the device's).
pub const SECTOR: u64 = 512;
/// [`SECTOR`] as a buffer length.
const SECTOR_LEN: usize = 512;
/// Sectors searched for the label.
pub const SCAN_SECTORS: u64 = 4;
/// The label signature.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The only label type known: LVM2's text format.
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";

/// The label header (`struct label_header`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct LabelHeader {
    /// "LABELONE".
    id: [u8; 8],
    /// The sector this label is in.
    sector: U64,
    /// LVM's CRC of bytes 20..512 of the sector.
    crc: U32,
    /// Offset of the PV header from the start of the sector.
    offset: U32,
    /// "LVM2 001".
    kind: [u8; 8],
}

/// The fixed start of the PV header (`struct pv_header`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct PvHeader {
    /// The PV's UUID, 32 characters without dashes.
    uuid: [u8; 32],
    /// The device size when the PV was made or resized, in bytes.
    device_size: U64,
}

/// One area descriptor (`struct disk_locn`); offset 0 ends a list.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct DiskLocn {
    /// Bytes from the start of the PV.
    offset: U64,
    /// Bytes; 0 for a data area means "to the end".
    size: U64,
}

const _: () = assert!(size_of::<LabelHeader>() == 32);
const _: () = assert!(size_of::<PvHeader>() == 40);
const _: () = assert!(size_of::<DiskLocn>() == 16);

/// A byte range of the PV named by the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// Bytes from the start of the PV.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A validated label and PV header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The sector holding the label.
    pub sector: u64,
    /// The PV's UUID without dashes.
    pub uuid: String,
    /// The device size the PV header records, in bytes.
    pub device_size: u64,
    /// The metadata areas (each starts with a metadata area header).
    pub metadata_areas: Vec<Area>,
}

/// Finds and validates the label; `None` when no "LABELONE" is in the first four sectors.
pub fn find(reader: &MetaReader<'_>) -> Examined<Option<Label>> {
    let size = reader.size();
    let scan = (size / SECTOR).min(SCAN_SECTORS);
    for sector in 0..scan {
        let bytes = reader.read(sector * SECTOR, SECTOR_LEN, "the lvm label")?;
        if bytes.starts_with(LABEL_ID) {
            return parse(&bytes, sector, size).map(Some);
        }
    }
    Ok(None)
}

/// Validates the label sector `bytes` found at `sector` of a `size`-byte volume.
fn parse(bytes: &[u8], sector: u64, size: u64) -> Examined<Label> {
    let Ok((h, _)) = LabelHeader::read_from_prefix(bytes) else {
        return damaged("the lvm label sector is short");
    };
    if h.sector.get() != sector {
        return damaged(format!(
            "the lvm label in sector {sector} says it belongs in sector {}",
            h.sector.get()
        ));
    }
    if &h.kind != LABEL_TYPE {
        return damaged(format!(
            "the lvm label has the unknown type {:?}",
            String::from_utf8_lossy(&h.kind)
        ));
    }
    if crc::crc(&bytes[20..]) != h.crc.get() {
        return damaged("the lvm label checksum does not match: the label is damaged");
    }
    let at = h.offset.get() as usize;
    let Some(rest) = bytes.get(at..).filter(|_| at >= size_of::<LabelHeader>()) else {
        return damaged(format!(
            "the lvm pv header offset {at} is outside the label"
        ));
    };
    let Ok((pv, mut rest)) = PvHeader::read_from_prefix(rest) else {
        return damaged("the lvm pv header does not fit in the label sector");
    };
    let uuid = String::from_utf8_lossy(&pv.uuid).into_owned();
    if !pv.uuid.iter().all(u8::is_ascii_alphanumeric) {
        return damaged("the lvm pv uuid is not text");
    }
    let device_size = pv.device_size.get();
    if device_size > size {
        return damaged(format!(
            "the lvm physical volume was made for {device_size} bytes but its volume has {size}: it is cut short"
        ));
    }
    // The data areas (unused: the extents are placed by the metadata's pe_start), then the
    // metadata areas.
    let mut lists: [Vec<Area>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let Ok((d, tail)) = DiskLocn::read_from_prefix(rest) else {
                return damaged("the lvm pv header's area lists are not terminated");
            };
            rest = tail;
            if d.offset.get() == 0 {
                break;
            }
            list.push(Area {
                offset: d.offset.get(),
                size: d.size.get(),
            });
        }
    }
    let [_, metadata_areas] = lists;
    for a in &metadata_areas {
        if a.offset.checked_add(a.size).is_none_or(|end| end > size) {
            return damaged(format!(
                "the lvm metadata area at offset {} ({} bytes) lies outside the volume",
                a.offset, a.size
            ));
        }
    }
    Ok(Label {
        sector,
        uuid,
        device_size,
        metadata_areas,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A label sector as pvcreate writes it: UUID, device size, one data area at `data`,
    /// metadata areas `mdas`.
    pub(crate) fn label_sector(
        sector: u64,
        uuid: &[u8; 32],
        device_size: u64,
        mdas: &[(u64, u64)],
    ) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(LABEL_ID);
        s[8..16].copy_from_slice(&sector.to_le_bytes());
        s[20..24].copy_from_slice(&32u32.to_le_bytes());
        s[24..32].copy_from_slice(LABEL_TYPE);
        s[32..64].copy_from_slice(uuid);
        s[64..72].copy_from_slice(&device_size.to_le_bytes());
        s[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let mut at = 104;
        for (o, l) in mdas {
            s[at..at + 8].copy_from_slice(&o.to_le_bytes());
            s[at + 8..at + 16].copy_from_slice(&l.to_le_bytes());
            at += 16;
        }
        let c = crc::crc(&s[20..]);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        s
    }

    const UUID: &[u8; 32] = b"7ieZhEtv3RkLALSGua24jM19vhgBMTUK";

    #[test]
    fn a_label_gives_the_uuid_and_metadata_areas_and_any_damage_is_a_reason() {
        let s = label_sector(1, UUID, 64 << 20, &[(4096, 1_044_480)]);
        let l = parse(&s, 1, 64 << 20).unwrap();
        assert_eq!(l.uuid, "7ieZhEtv3RkLALSGua24jM19vhgBMTUK");
        assert_eq!(
            l.metadata_areas,
            vec![Area {
                offset: 4096,
                size: 1_044_480
            }]
        );
        let reason = |r: Examined<Label>| match r {
            Err(vdisk_core::fs::Doubt::Damaged(why)) => why,
            other => panic!("{other:?}"),
        };
        // Wrong sector, a flipped byte, a device larger than the volume, an area past it.
        assert!(reason(parse(&s, 2, 64 << 20)).contains("sector 1"));
        let mut bad = s.clone();
        bad[40] ^= 1;
        assert!(reason(parse(&bad, 1, 64 << 20)).contains("checksum"));
        assert!(reason(parse(&s, 1, 32 << 20)).contains("cut short"));
        let far = label_sector(1, UUID, 64 << 20, &[(64 << 20, 4096)]);
        assert!(reason(parse(&far, 1, 64 << 20)).contains("outside"));
        // No terminator: lists running to the end of the sector.
        let mut s = label_sector(1, UUID, 64 << 20, &[]);
        for b in &mut s[72..] {
            *b = 1;
        }
        let c = crc::crc(&s[20..]);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        assert!(reason(parse(&s, 1, 64 << 20)).contains("terminated"));
    }
}
