//! The footer's derived facts: disk type, CHS geometry (spec appendix "CHS Calculation"), time
//! stamps.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::{DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, Footer, SECTOR, VHD_EPOCH_UNIX};

/// Largest geometry the spec defines: 65535 cylinders, 16 heads, 255 sectors per track.
pub(crate) const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The footer's disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskType {
    /// Type 2.
    Fixed,
    /// Type 3.
    Dynamic,
    /// Type 4.
    Differencing,
}

impl DiskType {
    /// The type for a footer value, `None` for values the spec does not define.
    pub(crate) fn from_raw(raw: u32) -> Option<DiskType> {
        match raw {
            DISK_FIXED => Some(DiskType::Fixed),
            DISK_DYNAMIC => Some(DiskType::Dynamic),
            DISK_DIFFERENCING => Some(DiskType::Differencing),
            _ => None,
        }
    }
}

/// Cylinders, heads, sectors per track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The geometry stored in `footer`.
    pub(crate) fn of(footer: &Footer) -> Geometry {
        Geometry {
            cylinders: footer.cylinders.get(),
            heads: footer.heads,
            sectors_per_track: footer.sectors_per_track,
        }
    }

    /// Sectors the geometry addresses.
    pub(crate) fn sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Bytes the geometry addresses.
    pub(crate) fn bytes(self) -> u64 {
        self.sectors() * SECTOR
    }

    /// The spec's CHS algorithm for a disk of `total_sectors` (capped at the largest geometry).
    pub(crate) fn for_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(MAX_CHS_SECTORS);
        let (spt, heads, cyl_times_heads) = if total >= 65535 * 16 * 63 {
            (255, 16, total / 255)
        } else {
            let mut spt = 17u64;
            let mut cth = total / spt;
            let mut heads = cth.div_ceil(1024).max(4);
            if cth >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                cth = total / spt;
            }
            if cth >= heads * 1024 {
                spt = 63;
                heads = 16;
                cth = total / spt;
            }
            (spt, heads, cth)
        };
        // All three fit their fields by construction: total <= 65535 * 16 * 255.
        Geometry {
            cylinders: u16::try_from(cyl_times_heads / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors_per_track: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }
}

/// Seconds since 2000-01-01 00:00:00 UTC, as VHD time stamps count them (saturating).
pub(crate) fn vhd_timestamp_now() -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_spec_examples_from_real_images() {
        // 127 GiB (Hyper-V): the largest geometry below the 65535/16/255 cap.
        assert_eq!(
            Geometry::for_sectors(266_338_304),
            Geometry {
                cylinders: 65278,
                heads: 16,
                sectors_per_track: 255
            }
        );
        // image.vhd from qemu: 102 KiB -> 3/4/17.
        assert_eq!(
            Geometry::for_sectors(204),
            Geometry {
                cylinders: 3,
                heads: 4,
                sectors_per_track: 17
            }
        );
        assert_eq!(Geometry::for_sectors(u64::MAX).sectors(), MAX_CHS_SECTORS);
    }
}
