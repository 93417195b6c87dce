//! The exFAT main boot region: the boot sector with its layout fields, each bounded as the
//! exFAT specification (Microsoft, "exFAT file system specification", section 3) requires,
//! and the boot checksum sector that covers the first eleven sectors.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use vdisk_core::fs::{Examined, MetaReader, damaged};

/// Bytes of the boot sector structure (the sector may be larger).
pub(crate) const BOOT_SECTOR_LEN: usize = 512;
/// The file system name at byte 3.
const NAME: [u8; 8] = *b"EXFAT   ";
/// VolumeFlags: the second FAT and bitmap are the active ones (TexFAT).
pub(crate) const FLAG_ACTIVE_FAT: u16 = 0x0001;
/// VolumeFlags: the volume is mounted or was not unmounted cleanly.
pub(crate) const FLAG_VOLUME_DIRTY: u16 = 0x0002;
/// VolumeFlags: the driver met media errors.
pub(crate) const FLAG_MEDIA_FAILURE: u16 = 0x0004;
/// Sectors of the main boot region covered by the checksum (boot, 8 extended, OEM, reserved).
const CHECKSUMMED_SECTORS: usize = 11;
/// Most clusters exFAT addresses.
const MAX_CLUSTERS: u64 = 0xFFFF_FFF5;
/// Sectors the two boot regions take before the FAT may start.
const BOOT_REGIONS: u64 = 24;

/// The exFAT boot sector (all little-endian).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct BootSector {
    /// `EB 76 90`.
    jump: [u8; 3],
    /// `"EXFAT   "`.
    name: [u8; 8],
    /// Zero: where FAT keeps its BPB, so FAT drivers reject the volume.
    must_be_zero: [u8; 53],
    /// Sectors before the volume on its disk (informational).
    partition_offset: U64,
    /// Sectors of the volume.
    volume_length: U64,
    /// Sector of the first FAT.
    fat_offset: U32,
    /// Sectors of one FAT.
    fat_length: U32,
    /// Sector of cluster 2.
    cluster_heap_offset: U32,
    /// Clusters in the heap.
    cluster_count: U32,
    /// First cluster of the root directory.
    root_cluster: U32,
    /// Volume serial number.
    serial: U32,
    /// Revision: high byte major (1), low byte minor.
    revision: U16,
    /// [`FLAG_ACTIVE_FAT`], [`FLAG_VOLUME_DIRTY`], [`FLAG_MEDIA_FAILURE`], ClearToZero.
    volume_flags: U16,
    /// log2 of bytes per sector, 9 to 12.
    bytes_per_sector_shift: u8,
    /// log2 of sectors per cluster, at most 25 - bytes_per_sector_shift (32 MiB clusters).
    sectors_per_cluster_shift: u8,
    /// FATs and bitmaps: 1, or 2 on TexFAT.
    number_of_fats: u8,
    /// BIOS drive (informational).
    drive_select: u8,
    /// Percent of clusters in use, or 0xFF (informational).
    percent_in_use: u8,
    /// Reserved.
    reserved: [u8; 7],
    /// Boot code.
    boot_code: [u8; 390],
    /// `0x55 0xAA`.
    signature: [u8; 2],
}

const _: () = assert!(size_of::<BootSector>() == BOOT_SECTOR_LEN);

/// The layout of a volume whose boot region passed validation. Offsets are bytes of the
/// volume, all within `0..volume_length`, which lies within the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub sector_size: u64,
    pub cluster_size: u64,
    /// Byte offset of the first FAT.
    pub fat_start: u64,
    /// Bytes of one FAT.
    pub fat_bytes: u64,
    /// Byte offset of cluster 2.
    pub heap_start: u64,
    /// Clusters: numbers `2..cluster_count + 2` exist.
    pub cluster_count: u64,
    pub root_cluster: u32,
    pub number_of_fats: u8,
    pub volume_flags: u16,
    /// "1.00".
    pub revision: String,
}

impl Geometry {
    /// Byte range of cluster `n` (`2 <= n < cluster_count + 2`).
    pub(crate) fn cluster_bytes(&self, n: u64) -> std::ops::Range<u64> {
        let start = self.heap_start + (n - 2) * self.cluster_size;
        start..start + self.cluster_size
    }

    /// Whether `n` is a cluster of the heap.
    pub(crate) fn is_cluster(&self, n: u64) -> bool {
        (2..self.cluster_count + 2).contains(&n)
    }
}

/// What the first sector says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootVerdict {
    NotExfat,
    Damaged(String),
    Exfat(Geometry),
}

/// Parses and validates the boot sector `bytes` for a volume of `volume_size` bytes.
pub(crate) fn inspect(bytes: &[u8], volume_size: u64) -> BootVerdict {
    let Ok((bs, _)) = BootSector::read_from_prefix(bytes) else {
        return BootVerdict::NotExfat;
    };
    if bs.name != NAME {
        return BootVerdict::NotExfat;
    }
    match bs.geometry(volume_size) {
        Ok(g) => BootVerdict::Exfat(g),
        Err(why) => BootVerdict::Damaged(format!("the exfat boot sector is damaged: {why}")),
    }
}

impl BootSector {
    fn geometry(&self, volume_size: u64) -> Result<Geometry, String> {
        if self.signature != [0x55, 0xAA] {
            return Err("it has no 0x55aa end marker".into());
        }
        if self.must_be_zero.iter().any(|&b| b != 0) {
            return Err("its fat parameter area is not zero".into());
        }
        let bps_shift = self.bytes_per_sector_shift;
        if !(9..=12).contains(&bps_shift) {
            return Err(format!(
                "it gives 2^{bps_shift} bytes per sector (512 to 4096 expected)"
            ));
        }
        let spc_shift = self.sectors_per_cluster_shift;
        if u32::from(spc_shift) > 25 - u32::from(bps_shift) {
            return Err(format!(
                "it gives 2^{spc_shift} sectors per cluster (clusters above 32 MiB)"
            ));
        }
        let major = self.revision.get() >> 8;
        if major != 1 {
            return Err(format!(
                "its revision {}.{:02} is not 1.x",
                major,
                self.revision.get() & 0xFF
            ));
        }
        let fats = self.number_of_fats;
        if !(1..=2).contains(&fats) {
            return Err(format!("it gives {fats} fats"));
        }
        let sector_size = 1u64 << bps_shift;
        let sectors_per_cluster = 1u64 << spc_shift;
        let volume_length = self.volume_length.get();
        let volume_sectors = volume_size / sector_size;
        if volume_length == 0 || volume_length > volume_sectors {
            return Err(format!(
                "it gives {volume_length} sectors, but the volume holds {volume_sectors}"
            ));
        }
        let fat_offset = u64::from(self.fat_offset.get());
        let fat_length = u64::from(self.fat_length.get());
        let heap = u64::from(self.cluster_heap_offset.get());
        let clusters = u64::from(self.cluster_count.get());
        if fat_offset < BOOT_REGIONS {
            return Err(format!(
                "its fat starts at sector {fat_offset}, inside the boot regions"
            ));
        }
        if clusters == 0 || clusters > MAX_CLUSTERS {
            return Err(format!("it gives {clusters} clusters"));
        }
        if fat_length * sector_size < (clusters + 2) * 4 {
            return Err(format!(
                "its fat of {fat_length} sectors is too small for {clusters} clusters"
            ));
        }
        if heap < fat_offset + u64::from(fats) * fat_length {
            return Err("its cluster heap overlaps the fats".into());
        }
        if heap + clusters * sectors_per_cluster > volume_length {
            return Err(format!(
                "its {clusters} clusters from sector {heap} run past its {volume_length} sectors"
            ));
        }
        let root = self.root_cluster.get();
        if !(2..clusters + 2).contains(&u64::from(root)) {
            return Err(format!(
                "its root directory starts at cluster {root}, outside the heap"
            ));
        }
        Ok(Geometry {
            sector_size,
            cluster_size: sector_size * sectors_per_cluster,
            fat_start: fat_offset * sector_size,
            fat_bytes: fat_length * sector_size,
            heap_start: heap * sector_size,
            cluster_count: clusters,
            root_cluster: root,
            number_of_fats: fats,
            volume_flags: self.volume_flags.get(),
            revision: format!("{}.{:02}", major, self.revision.get() & 0xFF),
        })
    }
}

/// Verifies the boot checksum: sector 11 holds, repeated, the checksum of sectors 0 to 10
/// without the VolumeFlags (bytes 106-107) and PercentInUse (byte 112) of sector 0.
pub(crate) fn verify_checksum(r: &MetaReader<'_>, g: &Geometry) -> Examined<()> {
    let ss = usize::try_from(g.sector_size).unwrap_or(usize::MAX);
    let region = r.read(0, ss * (CHECKSUMMED_SECTORS + 1), "the exfat boot region")?;
    let (covered, stored) = region.split_at(ss * CHECKSUMMED_SECTORS);
    let sum = checksum(covered);
    let all_match = stored
        .chunks_exact(4)
        .all(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == sum);
    if !all_match {
        return damaged("the exfat boot region's checksum does not match; run fsck.exfat");
    }
    Ok(())
}

/// The exFAT boot checksum of `bytes` (the first eleven sectors).
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 106 | 107 | 112) {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    sum
}
