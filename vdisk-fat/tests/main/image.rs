//! FAT volumes built in memory, field by field from the FAT specification, for the analyser's
//! tests: a boot sector (and FSInfo on FAT32), the FATs with entries 0 and 1 as formatters
//! write them, and chains allocated on demand.

use std::ops::Range;

use vdisk_core::fs::MemDevice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// A FAT volume under construction.
#[derive(Debug, Clone)]
pub struct Image {
    pub kind: Kind,
    pub bytes: Vec<u8>,
    pub sector: u64,
    pub cluster: u64,
    pub reserved: u64,
    pub fats: u64,
    pub fat_sectors: u64,
    pub root_sectors: u64,
    pub clusters: u64,
    /// Cluster numbers allocated (entry not 0), beyond the FAT32 root.
    pub used: Vec<bool>,
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

impl Image {
    /// A freshly formatted volume of `total` sectors of 512 bytes, `spc` sectors per cluster,
    /// two FATs; its type follows from the cluster count, which the caller picks to match `kind`.
    pub fn new(kind: Kind, total: u64, spc: u64) -> Image {
        let sector = 512u64;
        let (reserved, root_entries) = match kind {
            Kind::Fat32 => (32, 0),
            _ => (1, 512),
        };
        let root_sectors = root_entries * 32 / sector;
        let bits = match kind {
            Kind::Fat12 => 12,
            Kind::Fat16 => 16,
            Kind::Fat32 => 32,
        };
        // Smallest FAT that covers the clusters left after it (mkfs.fat's loop).
        let mut fat_sectors = 1;
        let clusters = loop {
            let meta = reserved + 2 * fat_sectors + root_sectors;
            let clusters = (total - meta) / spc;
            if fat_sectors * sector * 8 >= (clusters + 2) * bits {
                break clusters;
            }
            fat_sectors += 1;
        };
        let mut bytes = vec![0u8; (total * sector) as usize];
        let b = &mut bytes;
        put(b, 0, &[0xEB, 0x3C, 0x90]);
        put(b, 3, b"mkfs.fat");
        put(b, 11, &(sector as u16).to_le_bytes());
        b[13] = spc as u8;
        put(b, 14, &(reserved as u16).to_le_bytes());
        b[16] = 2;
        put(b, 17, &(root_entries as u16).to_le_bytes());
        if total < 65536 && kind != Kind::Fat32 {
            put(b, 19, &(total as u16).to_le_bytes());
        } else {
            put(b, 32, &(total as u32).to_le_bytes());
        }
        b[21] = 0xF8;
        let ext = if kind == Kind::Fat32 {
            put(b, 36, &(fat_sectors as u32).to_le_bytes());
            put(b, 44, &2u32.to_le_bytes()); // root cluster
            put(b, 48, &1u16.to_le_bytes()); // FSInfo
            put(b, 50, &6u16.to_le_bytes()); // backup boot sector
            64
        } else {
            put(b, 22, &(fat_sectors as u16).to_le_bytes());
            36
        };
        b[ext] = 0x80;
        b[ext + 2] = 0x29;
        put(b, ext + 3, &0x1234_5678u32.to_le_bytes());
        put(b, ext + 7, b"TESTVOL    ");
        put(b, ext + 18, b"FAT     ");
        put(b, 510, &[0x55, 0xAA]);
        if kind == Kind::Fat32 {
            let fsi = 512;
            put(b, fsi, &0x4161_5252u32.to_le_bytes());
            put(b, fsi + 484, &0x6141_7272u32.to_le_bytes());
            put(b, fsi + 488, &u32::MAX.to_le_bytes());
            put(b, fsi + 492, &u32::MAX.to_le_bytes());
            put(b, fsi + 508, &0xAA55_0000u32.to_le_bytes());
        }
        let mut img = Image {
            kind,
            bytes,
            sector,
            cluster: spc * sector,
            reserved,
            fats: 2,
            fat_sectors,
            root_sectors,
            clusters,
            used: vec![false; clusters as usize + 2],
        };
        let (e0, e1) = match kind {
            Kind::Fat12 => (0xFF8, 0xFFF),
            Kind::Fat16 => (0xFFF8, 0xFFFF),
            Kind::Fat32 => (0x0FFF_FFF8, 0x0FFF_FFFF),
        };
        img.set_all(0, e0);
        img.set_all(1, e1);
        if kind == Kind::Fat32 {
            img.set_all(2, 0x0FFF_FFFF);
            img.used[2] = true;
        }
        img
    }

    pub fn eoc(&self) -> u32 {
        match self.kind {
            Kind::Fat12 => 0xFFF,
            Kind::Fat16 => 0xFFFF,
            Kind::Fat32 => 0x0FFF_FFFF,
        }
    }

    /// Byte offset of FAT copy `copy`.
    pub fn fat_offset(&self, copy: u64) -> usize {
        ((self.reserved + copy * self.fat_sectors) * self.sector) as usize
    }

    pub fn data_start(&self) -> u64 {
        (self.reserved + self.fats * self.fat_sectors + self.root_sectors) * self.sector
    }

    /// Writes entry `n` of FAT copy `copy`.
    pub fn set(&mut self, copy: u64, n: u64, value: u32) {
        let base = self.fat_offset(copy);
        let n = n as usize;
        match self.kind {
            Kind::Fat12 => {
                let at = base + n * 3 / 2;
                let old = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
                let v = (value & 0xFFF) as u16;
                let new = if n.is_multiple_of(2) {
                    (old & 0xF000) | v
                } else {
                    (old & 0x000F) | (v << 4)
                };
                put(&mut self.bytes, at, &new.to_le_bytes());
            }
            Kind::Fat16 => put(&mut self.bytes, base + n * 2, &(value as u16).to_le_bytes()),
            Kind::Fat32 => put(&mut self.bytes, base + n * 4, &value.to_le_bytes()),
        }
    }

    /// Writes entry `n` of every FAT copy.
    pub fn set_all(&mut self, n: u64, value: u32) {
        for copy in 0..self.fats {
            self.set(copy, n, value);
        }
    }

    /// Allocates `clusters` as one chain (in the given order) in every copy.
    pub fn chain(&mut self, clusters: &[u64]) {
        for (i, &c) in clusters.iter().enumerate() {
            let next = clusters.get(i + 1).map_or(self.eoc(), |&n| n as u32);
            self.set_all(c, next);
            self.used[c as usize] = true;
        }
    }

    /// The free clusters as coalesced byte ranges of the volume: the expected answer.
    pub fn free_ranges(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for c in 2..self.clusters + 2 {
            if self.used[c as usize] {
                continue;
            }
            let start = self.data_start() + (c - 2) * self.cluster;
            let r = start..start + self.cluster;
            match out.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Offset of the extended BPB (drive number, state, signature ...).
    pub fn ext(&self) -> usize {
        if self.kind == Kind::Fat32 { 64 } else { 36 }
    }

    pub fn device(&self) -> MemDevice {
        MemDevice::new(self.bytes.clone())
    }
}

/// A volume of each type with a few files: (image, used cluster chains).
pub fn sample(kind: Kind) -> Image {
    let mut img = match kind {
        // 4 MiB, 1 KiB clusters: ~4070 clusters (FAT12 below 4085).
        Kind::Fat12 => Image::new(kind, 8192, 2),
        // 16 MiB, 512-byte clusters: ~32 K clusters.
        Kind::Fat16 => Image::new(kind, 32768, 1),
        // 40 MiB, 512-byte clusters: ~81 K clusters (FAT32 from 65525).
        Kind::Fat32 => Image::new(kind, 81920, 1),
    };
    img.chain(&[3, 4, 5, 9]);
    img.chain(&[100, 101, 7]);
    let last = img.clusters + 1;
    img.chain(&[last - 1, last]);
    img
}
