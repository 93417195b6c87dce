//! Tables built byte by byte (the builders below follow the specs independently of the
//! parser's structs), then parsed; hostile variants must give `Unknown`, never a panic.
#![allow(
    clippy::cast_possible_truncation,
    clippy::single_range_in_vec_init,
    clippy::type_complexity,
    reason = "test disks are small and tests run on 64-bit hosts"
)]

use proptest::prelude::*;

use super::*;
use crate::block::check_range;

/// Builders of partition tables for tests, shared with the analysis tests.
pub(crate) mod build {
    use super::*;

    /// An in-memory disk.
    #[derive(Debug, Clone)]
    pub(crate) struct Disk {
        pub bytes: Vec<u8>,
        pub sector: u32,
    }

    impl BlockDevice for Disk {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn sector_size(&self) -> u32 {
            self.sector
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            check_range(self.size(), offset, buf.len())?;
            let at = offset as usize;
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
    }

    impl Disk {
        pub(crate) fn new(len: usize, sector: u32) -> Disk {
            Disk {
                bytes: vec![0; len],
                sector,
            }
        }

        pub(crate) fn put(&mut self, at: u64, data: &[u8]) {
            let at = at as usize;
            self.bytes[at..at + data.len()].copy_from_slice(data);
        }

        /// Writes a boot record at byte `at` with up to 4 entries (boot, type, start, sectors).
        pub(crate) fn boot_record(&mut self, at: u64, entries: &[(u8, u8, u32, u32)]) {
            let mut s = [0u8; 512];
            for (i, &(boot, ty, start, n)) in entries.iter().enumerate() {
                let e = 446 + 16 * i;
                s[e] = boot;
                s[e + 4] = ty;
                s[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
                s[e + 12..e + 16].copy_from_slice(&n.to_le_bytes());
            }
            s[510] = 0x55;
            s[511] = 0xAA;
            self.put(at, &s);
        }

        /// Writes a GPT (protective MBR, primary and backup) with `parts` as (type, first lba,
        /// last lba, name) in the first entries of a `count` x `esize` array.
        pub(crate) fn gpt(&mut self, parts: &[([u8; 16], u64, u64, &str)], count: u32, esize: u32) {
            let ss = u64::from(self.sector);
            let lbas = self.size() / ss;
            let array_sectors = (u64::from(count) * u64::from(esize)).div_ceil(ss);
            self.boot_record(
                0,
                &[(0, 0xEE, 1, (lbas - 1).min(u64::from(u32::MAX)) as u32)],
            );
            let mut array = vec![0u8; (count * esize) as usize];
            for (i, (ty, first, last, name)) in parts.iter().enumerate() {
                let e = i * esize as usize;
                array[e..e + 16].copy_from_slice(ty);
                array[e + 16] = i as u8 + 1;
                array[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
                array[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
                for (j, u) in name.encode_utf16().take(36).enumerate() {
                    array[e + 56 + 2 * j..e + 58 + 2 * j].copy_from_slice(&u.to_le_bytes());
                }
            }
            let first_usable = 2 + array_sectors;
            let last_usable = lbas - 2 - array_sectors;
            let crc = crc32::crc32(&array);
            for (my, alt, entries) in [(1, lbas - 1, 2), (lbas - 1, 1, lbas - 1 - array_sectors)] {
                let mut h = [0u8; 92];
                h[..8].copy_from_slice(b"EFI PART");
                h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
                h[12..16].copy_from_slice(&92u32.to_le_bytes());
                h[24..32].copy_from_slice(&my.to_le_bytes());
                h[32..40].copy_from_slice(&alt.to_le_bytes());
                h[40..48].copy_from_slice(&first_usable.to_le_bytes());
                h[48..56].copy_from_slice(&last_usable.to_le_bytes());
                h[56..72].copy_from_slice(&[7; 16]);
                h[72..80].copy_from_slice(&entries.to_le_bytes());
                h[80..84].copy_from_slice(&count.to_le_bytes());
                h[84..88].copy_from_slice(&esize.to_le_bytes());
                h[88..92].copy_from_slice(&crc.to_le_bytes());
                let hc = crc32::crc32(&h);
                h[16..20].copy_from_slice(&hc.to_le_bytes());
                self.put(my * ss, &h);
                self.put(entries * ss, &array);
            }
        }
    }

    /// The Microsoft basic data type GUID, as stored.
    pub(crate) const BASIC_DATA: [u8; 16] = [
        0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99,
        0xC7,
    ];
}

use build::{BASIC_DATA, Disk};

const MIB: usize = 1 << 20;

fn table(disk: &Disk) -> PartitionTable {
    match read_layout(disk).unwrap() {
        Layout::Table(t) => t,
        other => panic!("expected a table, got {other:?}"),
    }
}

fn unknown(disk: &Disk) -> String {
    match read_layout(disk).unwrap() {
        Layout::Unknown { reason } => reason,
        other => panic!("expected an unknown layout, got {other:?}"),
    }
}

fn spans(t: &PartitionTable) -> Vec<(u32, u64, u64)> {
    t.partitions
        .iter()
        .map(|p| (p.index, p.start, p.len))
        .collect()
}

/// MBR: primary 1 at 1 MiB (2 MiB), extended 2 at 4 MiB (10 MiB) holding logicals 5 and 6.
fn mbr_with_logicals() -> Disk {
    let mut d = Disk::new(16 * MIB, 512);
    d.boot_record(0, &[(0x80, 0x07, 2048, 4096), (0, 0x0F, 8192, 20480)]);
    // EBR 1 at the container start: logical at +2048 for 2048 sectors; next EBR at +8192.
    d.boot_record(8192 * 512, &[(0, 0x07, 2048, 2048), (0, 0x05, 8192, 4096)]);
    // EBR 2: logical at +1 for 4095 sectors (an odd, unaligned start).
    d.boot_record((8192 + 8192) * 512, &[(0, 0x83, 1, 4095)]);
    d
}

#[test]
fn mbr_with_extended_partition_lists_primaries_and_logicals_and_every_ebr() {
    let t = table(&mbr_with_logicals());
    assert_eq!(t.scheme, Scheme::Mbr);
    assert_eq!(
        spans(&t),
        vec![
            (1, 1 << 20, 2 << 20),
            (5, (8192 + 2048) * 512, 1 << 20),
            (6, (16384 + 1) * 512, 4095 * 512),
        ]
    );
    assert_eq!(
        t.metadata,
        vec![0..512, 8192 * 512..8193 * 512, 16384 * 512..16385 * 512]
    );
    assert!(matches!(
        t.partitions[2].kind,
        PartitionKind::Mbr {
            type_id: 0x83,
            logical: true
        }
    ));
}

#[test]
fn ebr_chain_that_loops_is_unknown_not_endless() {
    let mut d = mbr_with_logicals();
    // EBR 2 points back at EBR 1.
    d.boot_record(
        (8192 + 8192) * 512,
        &[(0, 0x83, 1, 100), (0, 0x05, 0, 4096)],
    );
    // A next-pointer of 0 with a non-zero size is "used": it points back at the first EBR.
    assert!(unknown(&d).contains("loop"), "{}", unknown(&d));
}

#[test]
fn ebr_chain_longer_than_the_limit_is_unknown() {
    // 300 EBRs, one per sector pair, each with a one-sector logical partition.
    let n = 300u32;
    let mut d = Disk::new(2 * MIB, 512);
    d.boot_record(0, &[(0, 0x05, 64, 2 * n + 8)]);
    for i in 0..n {
        let next = if i + 1 < n {
            (0, 0x05, 2 * (i + 1), 2)
        } else {
            (0, 0, 0, 0)
        };
        d.boot_record(u64::from(64 + 2 * i) * 512, &[(0, 0x07, 1, 1), next]);
    }
    assert!(unknown(&d).contains("more than"));
}

#[test]
fn overlapping_or_oversized_mbr_partitions_are_unknown() {
    let mut d = Disk::new(4 * MIB, 512);
    d.boot_record(0, &[(0, 0x07, 2048, 2048), (0, 0x07, 3000, 100)]);
    assert!(unknown(&d).contains("overlaps"));
    d.boot_record(0, &[(0, 0x07, 2048, 8192)]);
    assert!(unknown(&d).contains("past the end"));
    d.boot_record(0, &[(0, 0x07, 0, 100)]);
    assert!(unknown(&d).contains("sector 0"));
    // A logical partition reaching out of its container.
    d.boot_record(0, &[(0, 0x05, 2048, 1000)]);
    d.boot_record(2048 * 512, &[(0, 0x07, 1, 5000)]);
    assert!(unknown(&d).contains("extended partition"));
}

#[test]
fn a_disk_without_a_table_is_unpartitioned() {
    let d = Disk::new(MIB, 512);
    assert_eq!(read_layout(&d).unwrap(), Layout::Unpartitioned);
    // A file system's boot sector at LBA 0: signature present, boot code where entries sit.
    let mut d = Disk::new(MIB, 512);
    d.put(3, b"NTFS    ");
    d.put(446, &[0xEB; 64]);
    d.put(510, &[0x55, 0xAA]);
    assert_eq!(read_layout(&d).unwrap(), Layout::Unpartitioned);
    assert_eq!(
        read_layout(&Disk::new(100, 512)).unwrap(),
        Layout::Unpartitioned
    );
    // Boot code that happens to look like one valid entry: the NTFS OEM id still says
    // "volume boot record".
    let mut d = Disk::new(MIB, 512);
    d.boot_record(0, &[(0x80, 0x07, 63, 100)]);
    d.put(3, b"NTFS    ");
    assert_eq!(read_layout(&d).unwrap(), Layout::Unpartitioned);
}

/// FAT on the whole disk (a superfloppy, as `mkfs.fat` or Windows make on removable media):
/// whatever its boot code holds where entries would sit, it is one volume, never a table
/// whose "partitions" point into the FAT volume's own data. An MBR is still read as one.
#[test]
fn a_fat_superfloppy_is_one_volume_even_if_its_boot_code_looks_like_entries() {
    for (at, name) in [
        (0x36, &b"FAT12   "[..]),
        (0x36, b"FAT16   "),
        (0x52, b"FAT32   "),
    ] {
        let mut d = Disk::new(MIB, 512);
        d.boot_record(0, &[(0x00, 0x83, 128, 512)]);
        d.put(0, &[0xEB, 0x58, 0x90]);
        d.put(3, b"mkfs.fat");
        d.put(at, name);
        assert_eq!(
            read_layout(&d).unwrap(),
            Layout::Unpartitioned,
            "{}",
            String::from_utf8_lossy(name)
        );
        // The same entries under an MBR's boot code (no FAT type string) are a table.
        let mut d = Disk::new(MIB, 512);
        d.boot_record(0, &[(0x00, 0x83, 128, 512)]);
        d.put(0, &[0xEB, 0x58, 0x90]);
        assert!(matches!(read_layout(&d).unwrap(), Layout::Table(_)));
    }
}

fn gpt_disk(sector: u32) -> Disk {
    let ss = u64::from(sector);
    let mut d = Disk::new(32 * MIB, sector);
    let mib = (1 << 20) / ss;
    d.gpt(
        &[
            (BASIC_DATA, mib, 9 * mib - 1, "DATA"),
            (BASIC_DATA, 9 * mib + 3, 20 * mib, "odd"),
        ],
        128,
        128,
    );
    d
}

#[test]
fn gpt_lists_partitions_with_names_and_protects_both_copies() {
    for sector in [512u32, 4096] {
        let ss = u64::from(sector);
        let d = gpt_disk(sector);
        let t = table(&d);
        assert_eq!(t.scheme, Scheme::Gpt);
        assert_eq!(t.sector_size, sector);
        let mib = 1 << 20;
        assert_eq!(
            spans(&t),
            vec![(1, mib, 8 * mib), (2, 9 * mib + 3 * ss, 11 * mib - 2 * ss)]
        );
        match &t.partitions[0].kind {
            PartitionKind::Gpt {
                name, type_guid, ..
            } => {
                assert_eq!(name, "DATA");
                assert_eq!(gpt::type_name(type_guid), Some("Microsoft basic data"));
            }
            k => panic!("{k:?}"),
        }
        let end = d.size();
        let array = (16384u64).div_ceil(ss) * ss;
        assert_eq!(
            t.metadata,
            vec![
                0..ss,
                ss..2 * ss,
                2 * ss..2 * ss + array,
                end - ss - array..end - ss,
                end - ss..end
            ],
            "sector {sector}"
        );
        assert!(t.notes.is_empty());
    }
}

#[test]
fn damaged_primary_gpt_falls_back_to_the_backup_and_says_so() {
    let mut d = gpt_disk(512);
    let good = table(&d);
    d.bytes[512 + 40] ^= 1; // primary header field: CRC mismatch
    let t = table(&d);
    assert_eq!(t.partitions, good.partitions);
    assert!(
        t.notes[0].contains("primary gpt header is damaged"),
        "{:?}",
        t.notes
    );
    assert!(
        t.metadata.contains(&(512..1024)),
        "the damaged primary stays protected"
    );
    // Damaged primary entry array instead.
    let mut d = gpt_disk(512);
    d.bytes[1024 + 40] ^= 1;
    let t = table(&d);
    assert_eq!(t.partitions, good.partitions);
    assert!(t.notes[0].contains("entry array checksum"), "{:?}", t.notes);
    // Both damaged.
    let end = d.bytes.len();
    d.bytes[end - 512] ^= 1;
    assert!(unknown(&d).contains("both gpt headers are damaged"));
}

#[test]
fn absurd_gpt_entry_counts_and_sizes_are_refused_without_allocating() {
    for (count, esize) in [
        (u32::MAX, 128u32),
        (128, 100),
        (128, 1 << 20),
        (1 << 16, 4096),
    ] {
        let mut d = Disk::new(4 * MIB, 512);
        d.gpt(&[], 4, 128);
        // Rewrite both headers' count and size with valid CRCs.
        for lba in [1u64, (d.size() / 512) - 1] {
            let at = (lba * 512) as usize;
            d.bytes[at + 80..at + 84].copy_from_slice(&count.to_le_bytes());
            d.bytes[at + 84..at + 88].copy_from_slice(&esize.to_le_bytes());
            d.bytes[at + 16..at + 20].fill(0);
            let crc = crc32::crc32(&d.bytes[at..at + 92]);
            d.bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
        let why = unknown(&d);
        assert!(why.contains("entry"), "{count} x {esize}: {why}");
    }
}

#[test]
fn gpt_partitions_outside_the_usable_range_or_overlapping_are_unknown() {
    let mut d = Disk::new(8 * MIB, 512);
    d.gpt(
        &[
            (BASIC_DATA, 2048, 11000, "a"),
            (BASIC_DATA, 10000, 12000, "b"),
        ],
        128,
        128,
    );
    assert!(unknown(&d).contains("overlaps"));
    let mut d = Disk::new(8 * MIB, 512);
    d.gpt(&[(BASIC_DATA, 2048, 16383, "past the backup")], 128, 128);
    assert!(unknown(&d).contains("usable range"));
    let mut d = Disk::new(8 * MIB, 512);
    d.gpt(&[(BASIC_DATA, 3000, 2048, "reversed")], 128, 128);
    assert!(unknown(&d).contains("usable range"));
}

#[test]
fn protective_mbr_without_any_gpt_header_is_unknown() {
    let mut d = Disk::new(MIB, 512);
    d.boot_record(0, &[(0, 0xEE, 1, 2047)]);
    assert!(unknown(&d).contains("both gpt headers"));
}

#[test]
fn guids_print_in_the_mixed_endian_form() {
    assert_eq!(
        Guid(BASIC_DATA).to_string(),
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    );
}

proptest! {
    /// Any bytes in the table sectors give a layout or an I/O error, never a panic; whatever
    /// table is accepted is within the disk and disjoint from its metadata.
    #[test]
    fn random_table_sectors_never_panic_and_accepted_tables_are_sane(
        seed in prop::collection::vec(any::<u8>(), 1024),
        gpt in any::<bool>(),
        flips in prop::collection::vec((0usize..2048, any::<u8>()), 0..8),
    ) {
        let mut d = if gpt { gpt_disk(512) } else { mbr_with_logicals() };
        if flips.is_empty() {
            d.put(0, &seed[..512]);
            d.put(512, &seed[512..]);
            d.bytes[510] = 0x55;
            d.bytes[511] = 0xAA;
        }
        for (at, v) in flips {
            d.bytes[at] = v;
        }
        if let Layout::Table(t) = read_layout(&d).unwrap() {
            let mut all: Vec<Range<u64>> = t.partitions.iter().map(Partition::range).collect();
            all.extend(t.metadata.iter().cloned());
            all.sort_by_key(|r| r.start);
            for w in all.windows(2) {
                prop_assert!(w[0].end <= w[1].start);
            }
            prop_assert!(all.iter().all(|r| r.start < r.end && r.end <= d.size()));
        }
    }
}
