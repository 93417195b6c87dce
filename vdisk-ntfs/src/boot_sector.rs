//! The NTFS boot sector (volume boot record): signature and the geometry every other step
//! depends on. Validated here, before the `ntfs` crate sees the volume, so that every number
//! the crate later sizes an allocation with is already bounded.

use zerocopy::byteorder::little_endian::{I64, U16, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Bytes of the boot sector structure (the sector may be larger; the rest is boot code).
pub(crate) const BOOT_SECTOR_LEN: usize = 512;
/// OEM id of every NTFS volume, at byte 3.
pub(crate) const OEM_ID: [u8; 8] = *b"NTFS    ";
/// End-of-sector marker at byte 510.
const END_MARKER: [u8; 2] = [0x55, 0xAA];
/// Smallest cluster size (one 512-byte sector).
pub(crate) const MIN_CLUSTER_SIZE: u64 = 512;
/// Largest cluster size Windows formats (2 MiB, encoded as 2^-n sectors per cluster).
pub(crate) const MAX_CLUSTER_SIZE: u64 = 2 << 20;
/// Smallest and largest MFT record sizes accepted (Windows: 1024, or 4096 on 4Kn disks).
const MFT_RECORD_SIZES: std::ops::RangeInclusive<u64> = 1024..=4096;

/// The 512-byte NTFS boot sector with its BIOS parameter block (all little-endian).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct BootSector {
    /// x86 jump over the parameter block.
    jump: [u8; 3],
    /// `"NTFS    "`.
    oem_id: [u8; 8],
    /// Bytes per sector: 512 to 4096, a power of two.
    bytes_per_sector: U16,
    /// Sectors per cluster: 1..=128 as is; above 128 the cluster holds 2^(256 - value) sectors
    /// (clusters above 64 KiB).
    sectors_per_cluster: u8,
    /// Reserved sectors (zero on NTFS).
    reserved_sectors: U16,
    /// Unused FAT fields (zero on NTFS).
    unused_fat: [u8; 5],
    /// Media descriptor (0xF8 for fixed disks).
    media: u8,
    /// Unused (zero).
    unused_2: [u8; 2],
    /// CHS geometry: sectors per track (informational).
    sectors_per_track: U16,
    /// CHS geometry: heads (informational).
    heads: U16,
    /// Sectors before the volume on its disk (informational).
    hidden_sectors: [u8; 4],
    /// Unused (zero).
    unused_3: [u8; 4],
    /// BIOS drive number, flags, extended boot signature, reserved.
    drive: [u8; 4],
    /// Sectors in the volume, excluding the backup boot sector after it.
    total_sectors: U64,
    /// First cluster of `$MFT`.
    mft_lcn: I64,
    /// First cluster of `$MFTMirr`.
    mft_mirror_lcn: I64,
    /// MFT record size: > 0 in clusters, < 0 as 2^-value bytes.
    clusters_per_mft_record: i8,
    /// Unused (zero).
    unused_4: [u8; 3],
    /// Index record size, encoded like `clusters_per_mft_record`.
    clusters_per_index_record: i8,
    /// Unused (zero).
    unused_5: [u8; 3],
    /// Volume serial number.
    serial_number: U64,
    /// Boot sector checksum (not used by Windows).
    checksum: [u8; 4],
    /// Boot code.
    boot_code: [u8; 426],
    /// `0x55 0xAA`.
    end_marker: [u8; 2],
}

const _: () = assert!(size_of::<BootSector>() == BOOT_SECTOR_LEN);

/// The geometry of a volume whose boot sector passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per sector.
    pub sector_size: u64,
    /// Bytes per cluster, 512 B to 2 MiB.
    pub cluster_size: u64,
    /// Clusters in the volume: bit `i` of `$Bitmap` exists for each `i < cluster_count`.
    pub cluster_count: u64,
    /// First cluster of `$MFT`, `0 < mft_lcn < cluster_count`.
    pub mft_lcn: u64,
    /// First cluster of `$MFTMirr`, `0 < mft_mirror_lcn < cluster_count`.
    pub mft_mirror_lcn: u64,
    /// Bytes per MFT record, 1024 to 4096.
    pub mft_record_size: u64,
}

/// What the first sector says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootVerdict {
    /// No NTFS signature.
    NotNtfs,
    /// NTFS signature, but a field is out of range (the reason says which).
    Damaged(String),
    /// A usable NTFS boot sector.
    Ntfs(Geometry),
}

impl BootSector {
    /// Parses and validates `bytes` (at least [`BOOT_SECTOR_LEN`]) for a volume of
    /// `volume_size` bytes.
    pub(crate) fn inspect(bytes: &[u8], volume_size: u64) -> BootVerdict {
        let Ok((bs, _)) = BootSector::read_from_prefix(bytes) else {
            return BootVerdict::NotNtfs;
        };
        if bs.oem_id != OEM_ID {
            return BootVerdict::NotNtfs;
        }
        match bs.geometry(volume_size) {
            Ok(g) => BootVerdict::Ntfs(g),
            Err(reason) => BootVerdict::Damaged(reason),
        }
    }

    fn geometry(&self, volume_size: u64) -> Result<Geometry, String> {
        if self.end_marker != END_MARKER {
            return Err("the boot sector has no 0x55aa end marker".into());
        }
        let sector_size = u64::from(self.bytes_per_sector.get());
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(format!(
                "the boot sector gives {sector_size} bytes per sector (512 to 4096 expected)"
            ));
        }
        let spc = self.sectors_per_cluster;
        let sectors_per_cluster: u64 = match spc {
            0 => return Err("the boot sector gives 0 sectors per cluster".into()),
            1..=128 if spc.is_power_of_two() => u64::from(spc),
            // 2^(256 - value): 0xF4 is 2^12 sectors; a shift of 32 or more is nonsense.
            225..=255 => 1u64 << (256 - u32::from(spc)),
            _ => return Err(format!("the boot sector gives {spc} sectors per cluster")),
        };
        let cluster_size = sectors_per_cluster * sector_size;
        if !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cluster_size) {
            return Err(format!(
                "cluster size {cluster_size} is outside 512 bytes to 2 MiB"
            ));
        }
        let total_sectors = self.total_sectors.get();
        let volume_bytes = total_sectors.checked_mul(sector_size);
        match volume_bytes {
            Some(b) if b <= volume_size => {}
            _ => {
                return Err(format!(
                    "the boot sector says {total_sectors} sectors of {sector_size} bytes, but \
                     the volume holds only {volume_size} bytes (truncated partition?)"
                ));
            }
        }
        let cluster_count = total_sectors / sectors_per_cluster;
        if cluster_count < 2 {
            return Err(format!("the volume has only {cluster_count} clusters"));
        }
        let lcn = |name: &str, value: i64| match u64::try_from(value) {
            Ok(v) if v > 0 && v < cluster_count => Ok(v),
            _ => Err(format!(
                "the boot sector puts {name} at cluster {value}, outside the volume's \
                 {cluster_count} clusters"
            )),
        };
        let mft_lcn = lcn("$MFT", self.mft_lcn.get())?;
        let mft_mirror_lcn = lcn("$MFTMirr", self.mft_mirror_lcn.get())?;
        let mft_record_size = record_size(self.clusters_per_mft_record, cluster_size)
            .filter(|s| MFT_RECORD_SIZES.contains(s) && s.is_power_of_two())
            .ok_or_else(|| {
                format!(
                    "the boot sector gives an MFT record size code of {} (1024 to 4096 bytes \
                     expected)",
                    self.clusters_per_mft_record
                )
            })?;
        Ok(Geometry {
            sector_size,
            cluster_size,
            cluster_count,
            mft_lcn,
            mft_mirror_lcn,
            mft_record_size,
        })
    }
}

/// Decodes a record size code: positive = clusters, negative = 2^-code bytes.
fn record_size(code: i8, cluster_size: u64) -> Option<u64> {
    match code {
        1..=127 => cluster_size.checked_mul(code.unsigned_abs().into()),
        -31..=-1 => Some(1u64 << code.unsigned_abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid boot sector: 512-byte sectors, 8 sectors per cluster, 32767 sectors,
    /// $MFT at 4, $MFTMirr at 2047, 1024-byte records.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        b[3..11].copy_from_slice(&OEM_ID);
        b[11..13].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
        b[13] = 8; // sectors per cluster
        b[21] = 0xF8; // media
        b[40..48].copy_from_slice(&32767u64.to_le_bytes()); // total sectors
        b[48..56].copy_from_slice(&4i64.to_le_bytes()); // $MFT lcn
        b[56..64].copy_from_slice(&2047i64.to_le_bytes()); // $MFTMirr lcn
        b[64] = 0xF6; // 2^10-byte MFT records
        b[68] = 1; // index records of one cluster
        b[510..512].copy_from_slice(&END_MARKER);
        b
    }

    fn inspect(b: &[u8]) -> BootVerdict {
        BootSector::inspect(b, 16 << 20)
    }

    #[test]
    fn valid_boot_sector_gives_its_geometry() {
        assert_eq!(
            inspect(&sample()),
            BootVerdict::Ntfs(Geometry {
                sector_size: 512,
                cluster_size: 4096,
                cluster_count: 4095,
                mft_lcn: 4,
                mft_mirror_lcn: 2047,
                mft_record_size: 1024,
            })
        );
    }

    #[test]
    fn negative_sectors_per_cluster_encode_clusters_above_64k() {
        let mut b = sample();
        b[13] = 0xF4; // 2^12 sectors = 2 MiB clusters
        b[40..48].copy_from_slice(&(64u64 << 12).to_le_bytes());
        b[48..56].copy_from_slice(&1i64.to_le_bytes());
        b[56..64].copy_from_slice(&2i64.to_le_bytes());
        let BootVerdict::Ntfs(g) = BootSector::inspect(&b, 128 << 20) else {
            panic!("2 MiB clusters refused");
        };
        assert_eq!((g.cluster_size, g.cluster_count), (2 << 20, 64));
        b[13] = 0xF3; // 4 MiB: beyond what Windows formats
        assert!(matches!(
            BootSector::inspect(&b, 256 << 20),
            BootVerdict::Damaged(_)
        ));
    }

    #[test]
    fn missing_oem_id_or_short_input_is_not_ntfs() {
        let mut b = sample();
        b[3] = b'X';
        assert_eq!(inspect(&b), BootVerdict::NotNtfs);
        assert_eq!(inspect(&sample()[..100]), BootVerdict::NotNtfs);
    }

    /// One-field mutations of a valid boot sector that must be refused as damaged.
    #[test]
    fn out_of_range_fields_are_damage_not_panics() {
        let cases: &[(usize, &[u8])] = &[
            (11, &[0x00, 0x01]),                      // 256 bytes per sector
            (11, &[0x00, 0x03]),                      // 768: not a power of two
            (13, &[0]),                               // no sectors per cluster
            (13, &[3]),                               // not a power of two
            (13, &[0x90]),                            // 2^112 sectors
            (40, &[0xFF; 8]),                         // total sectors overflow
            (40, &[0x00, 0x00, 0x01, 0, 0, 0, 0, 0]), // more sectors than the device
            (48, &[0; 8]),                            // $MFT at cluster 0
            (48, &[0xFF; 8]),                         // $MFT at cluster -1
            (48, &[0xFF, 0x0F, 0, 0, 0, 0, 0, 0]),    // $MFT past the last cluster
            (56, &[0x00, 0x10, 0, 0, 0, 0, 0, 0]),    // $MFTMirr past the last cluster
            (64, &[0]),                               // no MFT record size
            (64, &[0xF0]),                            // 64 KiB records
            (64, &[0x7F]),                            // 127 clusters per record
            (510, &[0, 0]),                           // no end marker
        ];
        for &(at, bytes) in cases {
            let mut b = sample();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            assert!(
                matches!(inspect(&b), BootVerdict::Damaged(_)),
                "mutation at {at} accepted"
            );
        }
    }
}
