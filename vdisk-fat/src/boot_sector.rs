//! The FAT boot sector and its BIOS parameter block (BPB): whether a volume is FAT at all, and
//! the layout every other step depends on (where the FATs, the root directory and the data
//! region lie, how many clusters exist and so which FAT type this is).
//!
//! Recognition is strict, because FAT has no magic number: a volume is FAT only when its first
//! sector has the x86 jump, the 0x55AA end marker, a BPB whose basic fields are each in range
//! (bytes per sector, sectors per cluster, reserved sectors, FAT count, media byte) and is not
//! an NTFS or exFAT boot sector (whose OEM ids sit where FAT's does). Anything less is
//! [`BootVerdict::NotFat`]; past that point, any field out of bounds is damage
//! ([`BootVerdict::Damaged`]), so the volume is only zero-scanned.
//!
//! The FAT type follows Microsoft's rule (the FAT specification, "FAT type determination"):
//! the count of data clusters alone decides, below 4085 FAT12, below 65525 FAT16, else FAT32.
//! The BPB's own shape (a 16-bit FAT size and a fixed root directory, or neither) must agree.

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Bytes of the boot sector structure read (the sector may be larger).
pub(crate) const BOOT_SECTOR_LEN: usize = 512;
/// End-of-sector marker at byte 510.
const END_MARKER: [u8; 2] = [0x55, 0xAA];
/// OEM ids of file systems whose boot sector has a FAT-like jump and end marker but is not FAT.
const FOREIGN_OEM_IDS: [&[u8; 8]; 2] = [b"NTFS    ", b"EXFAT   "];
/// Extended boot signatures: the extended BPB (drive number, state, volume id, ...) exists.
const EXTENDED_BOOT_SIGNATURES: [u8; 2] = [0x28, 0x29];
/// Clusters below this count make a FAT12 volume (Microsoft's rule).
const FAT12_CLUSTERS_BELOW: u64 = 4085;
/// Clusters below this count (and not FAT12) make a FAT16 volume; at or above, FAT32.
const FAT16_CLUSTERS_BELOW: u64 = 65525;
/// Most clusters a FAT32 volume can address (entries are 28 bits, 0x0FFFFFF6 the last cluster).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
/// Most FAT copies accepted (Microsoft writes 1 or 2; mkfs.fat allows up to 4).
const MAX_FATS: u8 = 4;
/// State byte bit: the volume was mounted and not unmounted cleanly (Windows NT, Linux).
const STATE_DIRTY: u8 = 0x01;
/// State byte bit: a surface scan was requested (Windows NT).
const STATE_SURFACE_SCAN: u8 = 0x02;
/// FAT32 extended flags: mirroring of the active FAT to the others is disabled.
const EXT_FLAGS_NO_MIRRORING: u16 = 0x0080;

/// The first 36 bytes every FAT boot sector shares, then the type-specific rest.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct BootSector {
    /// x86 jump over the BPB: `EB xx 90` or `E9 xx xx`.
    jump: [u8; 3],
    /// Name of the formatting system ("MSWIN4.1", "mkfs.fat"); informational.
    oem_id: [u8; 8],
    /// Bytes per sector: 512, 1024, 2048 or 4096.
    bytes_per_sector: U16,
    /// Sectors per cluster: a power of two, 1 to 128.
    sectors_per_cluster: u8,
    /// Sectors before the first FAT (the boot sector included), at least 1.
    reserved_sectors: U16,
    /// Copies of the FAT.
    num_fats: u8,
    /// Entries of the fixed root directory (FAT12/16); 0 on FAT32.
    root_entries: U16,
    /// Sectors of the volume if below 65536, else 0 and `total_sectors_32` holds it.
    total_sectors_16: U16,
    /// Media descriptor: 0xF0 or 0xF8 to 0xFF; also the low byte of FAT entry 0.
    media: u8,
    /// Sectors of one FAT (FAT12/16); 0 on FAT32.
    fat_size_16: U16,
    /// CHS geometry: sectors per track (informational).
    sectors_per_track: U16,
    /// CHS geometry: heads (informational).
    heads: U16,
    /// Sectors before the volume on its disk (informational).
    hidden_sectors: U32,
    /// Sectors of the volume when `total_sectors_16` is 0.
    total_sectors_32: U32,
    /// The FAT12/16 extended BPB or the FAT32 one.
    rest: [u8; 474],
    /// `0x55 0xAA`.
    end_marker: [u8; 2],
}

/// The extended BPB of FAT12/16, at byte 36.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Extended {
    /// BIOS drive number.
    drive: u8,
    /// Volume state: [`STATE_DIRTY`], [`STATE_SURFACE_SCAN`] (Windows NT "reserved1").
    state: u8,
    /// 0x29 (or 0x28: no label and type follow) when this structure exists.
    boot_signature: u8,
    /// Volume serial number.
    volume_id: U32,
    /// Volume label, space padded (valid with signature 0x29).
    label: [u8; 11],
    /// "FAT12   ", "FAT16   ", "FAT32   " (informational, never used to decide the type).
    fs_type: [u8; 8],
}

/// The FAT32 part of the BPB, at byte 36, followed by the extended BPB.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Fat32Bpb {
    /// Sectors of one FAT.
    fat_size_32: U32,
    /// Bits 0-3 the active FAT, bit 7 set: only the active FAT is kept (no mirroring).
    ext_flags: U16,
    /// Version; 0.0 is the only one defined.
    fs_version: U16,
    /// First cluster of the root directory.
    root_cluster: U32,
    /// Sector of the FSInfo structure within the reserved area (0 or 0xFFFF: none).
    fs_info: U16,
    /// Sector of the backup boot sector (informational).
    backup_boot: U16,
    /// Reserved (zero).
    reserved: [u8; 12],
    /// The extended BPB, as on FAT12/16.
    extended: Extended,
}

const _: () = assert!(size_of::<BootSector>() == BOOT_SECTOR_LEN);
const _: () = assert!(size_of::<Extended>() == 26);
const _: () = assert!(size_of::<Fat32Bpb>() == 54);

/// FAT12, FAT16 or FAT32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// Bits of one FAT entry as stored (FAT32 stores 32, of which 28 count).
    pub(crate) fn entry_bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// Smallest entry value that is no cluster number (reserved, bad, end of chain).
    pub(crate) fn reserved_values(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF0,
            FatType::Fat16 => 0xFFF0,
            FatType::Fat32 => 0x0FFF_FFF0,
        }
    }

    /// The bit of FAT entry 1 that is set when the volume was shut down cleanly (none on FAT12).
    pub(crate) fn clean_shutdown_bit(self) -> Option<u32> {
        match self {
            FatType::Fat12 => None,
            FatType::Fat16 => Some(0x8000),
            FatType::Fat32 => Some(0x0800_0000),
        }
    }

    /// The bit of FAT entry 1 that is cleared when a disk I/O error was met (none on FAT12).
    pub(crate) fn no_hard_error_bit(self) -> Option<u32> {
        match self {
            FatType::Fat12 => None,
            FatType::Fat16 => Some(0x4000),
            FatType::Fat32 => Some(0x0400_0000),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// The layout of a volume whose boot sector passed validation. Byte offsets are relative to
/// the volume; every one of them lies within `0..total_sectors * sector_size`, which lies
/// within the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub fat_type: FatType,
    /// Bytes per sector.
    pub sector_size: u64,
    /// Bytes per cluster (sector size times a power of two up to 128).
    pub cluster_size: u64,
    /// Sectors the file system spans.
    pub total_sectors: u64,
    /// Byte offset of the first FAT.
    pub fat_start: u64,
    /// Bytes of one FAT copy.
    pub fat_bytes: u64,
    /// FAT copies, 1 to [`MAX_FATS`].
    pub num_fats: u8,
    /// The one FAT kept up to date when mirroring is disabled (FAT32), else `None`: all equal.
    pub active_fat: Option<u8>,
    /// Byte offset of the first data cluster (cluster 2).
    pub data_start: u64,
    /// Data clusters: numbers `2..cluster_count + 2` exist.
    pub cluster_count: u64,
    /// First cluster of the root directory (FAT32 only).
    pub root_cluster: Option<u32>,
    /// Sector of FSInfo (FAT32 only, when present).
    pub fs_info_sector: Option<u64>,
    /// Media descriptor.
    pub media: u8,
    /// The state byte says the volume was not unmounted cleanly (or a scan is pending).
    pub dirty: bool,
    /// Volume label from the BPB, trimmed ("" when absent).
    pub label: String,
    /// OEM id, trimmed, for reports.
    pub oem_id: String,
}

impl Geometry {
    /// Byte range of cluster `n` (`2 <= n < cluster_count + 2`).
    pub(crate) fn cluster_bytes(&self, n: u64) -> std::ops::Range<u64> {
        let start = self.data_start + (n - 2) * self.cluster_size;
        start..start + self.cluster_size
    }
}

/// What the first sector says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootVerdict {
    /// Not a FAT boot sector.
    NotFat,
    /// A FAT boot sector with a field out of bounds (the reason says which).
    Damaged(String),
    /// A usable FAT boot sector.
    Fat(Geometry),
}

/// Parses and validates `bytes` (at least [`BOOT_SECTOR_LEN`]) for a volume of `volume_size`.
pub(crate) fn inspect(bytes: &[u8], volume_size: u64) -> BootVerdict {
    let Ok((bs, _)) = BootSector::read_from_prefix(bytes) else {
        return BootVerdict::NotFat;
    };
    if !bs.looks_like_fat() {
        return BootVerdict::NotFat;
    }
    match bs.geometry(volume_size) {
        Ok(g) => BootVerdict::Fat(g),
        Err(reason) => BootVerdict::Damaged(format!("the fat boot sector is damaged: {reason}")),
    }
}

fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl BootSector {
    /// The recognition test: see the module docs.
    fn looks_like_fat(&self) -> bool {
        let jump = matches!(self.jump, [0xEB, _, _] | [0xE9, _, _]);
        let bps = self.bytes_per_sector.get();
        let spc = self.sectors_per_cluster;
        jump && self.end_marker == END_MARKER
            && !FOREIGN_OEM_IDS.contains(&&self.oem_id)
            && matches!(bps, 512 | 1024 | 2048 | 4096)
            && spc != 0
            && spc.is_power_of_two()
            && self.reserved_sectors.get() != 0
            && self.num_fats != 0
            && (self.media == 0xF0 || self.media >= 0xF8)
    }

    fn geometry(&self, volume_size: u64) -> Result<Geometry, String> {
        let sector_size = u64::from(self.bytes_per_sector.get());
        let cluster_size = sector_size * u64::from(self.sectors_per_cluster);
        let num_fats = self.num_fats;
        if num_fats > MAX_FATS {
            return Err(format!("it gives {num_fats} copies of the fat"));
        }
        let total_sectors = match self.total_sectors_16.get() {
            0 => u64::from(self.total_sectors_32.get()),
            n => u64::from(n),
        };
        let volume_sectors = volume_size / sector_size;
        if total_sectors == 0 || total_sectors > volume_sectors {
            return Err(format!(
                "it gives {total_sectors} sectors, but the volume holds {volume_sectors}"
            ));
        }
        let fat32_shape = self.fat_size_16.get() == 0;
        let (fat32, extended) = if fat32_shape {
            let Ok((f, _)) = Fat32Bpb::read_from_prefix(&self.rest) else {
                return Err("its fat32 fields are unreadable".into());
            };
            (Some(f), f.extended)
        } else {
            let Ok((e, _)) = Extended::read_from_prefix(&self.rest) else {
                return Err("its extended fields are unreadable".into());
            };
            (None, e)
        };
        let fat_sectors = match fat32 {
            Some(f) => u64::from(f.fat_size_32.get()),
            None => u64::from(self.fat_size_16.get()),
        };
        if fat_sectors == 0 {
            return Err("it gives a fat of 0 sectors".into());
        }
        let root_entries = u64::from(self.root_entries.get());
        let root_dir_sectors = (root_entries * 32).div_ceil(sector_size);
        let reserved = u64::from(self.reserved_sectors.get());
        let meta_sectors = reserved + u64::from(num_fats) * fat_sectors + root_dir_sectors;
        if meta_sectors >= total_sectors {
            return Err(format!(
                "its reserved sectors, fats and root directory ({meta_sectors} sectors) fill the \
                 whole {total_sectors}-sector volume"
            ));
        }
        let cluster_count = (total_sectors - meta_sectors) / u64::from(self.sectors_per_cluster);
        let fat_type = if cluster_count < FAT12_CLUSTERS_BELOW {
            FatType::Fat12
        } else if cluster_count < FAT16_CLUSTERS_BELOW {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        if cluster_count == 0 {
            return Err("it leaves no room for a data cluster".into());
        }
        if fat32_shape != (fat_type == FatType::Fat32) {
            return Err(format!(
                "its layout ({}) disagrees with its cluster count ({cluster_count} clusters make \
                 a {} volume)",
                if fat32_shape {
                    "no 16-bit fat size, as on fat32"
                } else {
                    "a 16-bit fat size, as on fat12/16"
                },
                fat_type.name()
            ));
        }
        if fat_type == FatType::Fat32 {
            if root_entries != 0 || self.total_sectors_16.get() != 0 {
                return Err("it is fat32 but gives a fixed root directory or a 16-bit size".into());
            }
            if cluster_count > FAT32_MAX_CLUSTERS {
                return Err(format!(
                    "it gives {cluster_count} clusters, more than fat32 can address"
                ));
            }
        } else if root_entries == 0 {
            return Err(format!(
                "it is {} but has no root directory",
                fat_type.name()
            ));
        }
        let fat_bytes = fat_sectors * sector_size;
        let needed = (cluster_count + 2) * fat_type.entry_bits();
        if fat_bytes * 8 < needed {
            return Err(format!(
                "its fat of {fat_bytes} bytes is too small for {cluster_count} clusters"
            ));
        }
        let mut g = Geometry {
            fat_type,
            sector_size,
            cluster_size,
            total_sectors,
            fat_start: reserved * sector_size,
            fat_bytes,
            num_fats,
            active_fat: None,
            data_start: (meta_sectors) * sector_size,
            cluster_count,
            root_cluster: None,
            fs_info_sector: None,
            media: self.media,
            dirty: false,
            label: String::new(),
            oem_id: trimmed(&self.oem_id),
        };
        if let Some(f) = fat32 {
            let version = f.fs_version.get();
            if version != 0 {
                return Err(format!(
                    "it gives fat32 version {}.{}; only 0.0 is defined",
                    version >> 8,
                    version & 0xFF
                ));
            }
            let root = f.root_cluster.get();
            if root < 2 || u64::from(root) >= cluster_count + 2 {
                return Err(format!(
                    "its root directory starts at cluster {root}, outside the volume"
                ));
            }
            g.root_cluster = Some(root);
            let fs_info = u64::from(f.fs_info.get());
            if fs_info != 0 && fs_info != 0xFFFF {
                if fs_info >= reserved {
                    return Err(format!(
                        "its fsinfo sector {fs_info} lies outside the reserved area"
                    ));
                }
                g.fs_info_sector = Some(fs_info);
            }
            let flags = f.ext_flags.get();
            if flags & EXT_FLAGS_NO_MIRRORING != 0 {
                let active = u8::try_from(flags & 0x0F).unwrap_or(u8::MAX);
                if active >= num_fats {
                    return Err(format!("its active fat is number {active} of {num_fats}"));
                }
                g.active_fat = Some(active);
            }
        }
        if EXTENDED_BOOT_SIGNATURES.contains(&extended.boot_signature) {
            g.dirty = extended.state & (STATE_DIRTY | STATE_SURFACE_SCAN) != 0;
            if extended.boot_signature == 0x29 {
                g.label = trimmed(&extended.label);
                if g.label == "NO NAME" {
                    g.label.clear();
                }
            }
        }
        Ok(g)
    }
}
