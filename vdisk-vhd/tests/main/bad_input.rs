//! Damaged files: a clear InvalidImage from open and check, never a panic, never a change.

use proptest::prelude::*;
use vdisk_core::{ErrorKind, MemFile, Mode, Severity};

use super::util::{check, compact, content, create_dynamic, open};

const BS: u64 = 4096;
const BAT_AT: usize = 1536;

/// An 8-block image (4 KiB blocks) with blocks 0, 3 and 7 allocated.
fn sample() -> Vec<u8> {
    let (img, mem) = create_dynamic(8 * BS, BS);
    for b in [0u64, 3, 7] {
        img.write_at(&[b as u8 + 1; 100], b * BS + 5).unwrap();
    }
    mem.to_vec()
}

fn set_entry(bytes: &mut [u8], block: usize, sector: u32) {
    let at = BAT_AT + block * 4;
    bytes[at..at + 4].copy_from_slice(&sector.to_be_bytes());
}

fn entry(bytes: &[u8], block: usize) -> u32 {
    let at = BAT_AT + block * 4;
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn assert_refused(bytes: Vec<u8>, needle: &str) {
    let mem = MemFile::from_bytes(bytes.clone());
    let err = vdisk_core::FormatDriver::open(
        &vdisk_vhd::DRIVER,
        Box::new(mem.clone()),
        &vdisk_core::OpenOptions::read_write(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains(needle), "{needle:?} not in {err}");
    assert_eq!(mem.to_vec(), bytes, "open changed the file");
    let problems = check(bytes);
    assert!(
        problems
            .iter()
            .any(|p| p.severity == Severity::Error && p.message.contains(needle)),
        "check: {problems:?}"
    );
}

#[test]
fn every_truncation_is_refused_without_panic() {
    let full = sample();
    let mut lengths: Vec<usize> = (0..2600).collect();
    lengths.extend((2600..full.len()).step_by(97));
    lengths.push(full.len() - 1);
    for len in lengths {
        let bytes = full[..len].to_vec();
        let mem = MemFile::from_bytes(bytes.clone());
        let r = vdisk_core::FormatDriver::open(
            &vdisk_vhd::DRIVER,
            Box::new(mem.clone()),
            &vdisk_core::OpenOptions::read_write(),
        );
        let err = r.err().unwrap_or_else(|| panic!("length {len} opened"));
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "length {len}: {err}");
        assert_eq!(mem.to_vec(), bytes);
        let problems = check(bytes);
        assert!(
            problems.iter().any(|p| p.severity == Severity::Error),
            "length {len}"
        );
    }
}

#[test]
fn a_block_past_the_footer_is_refused() {
    let mut bytes = sample();
    set_entry(&mut bytes, 1, 0x7fff_0000);
    assert_refused(bytes, "past the footer");
}

#[test]
fn overlapping_blocks_are_refused() {
    let mut bytes = sample();
    let e = entry(&bytes, 0);
    set_entry(&mut bytes, 5, e + 1);
    assert_refused(bytes, "overlaps block");
}

#[test]
fn blocks_over_metadata_are_refused() {
    for (sector, needle) in [(0u32, "footer copy"), (1, "dynamic header"), (3, "bat")] {
        let mut bytes = sample();
        set_entry(&mut bytes, 2, sector);
        assert_refused(bytes, needle);
    }
}

#[test]
fn check_lists_every_misplaced_block_not_just_the_first() {
    let mut bytes = sample();
    set_entry(&mut bytes, 1, 0x7fff_0000);
    set_entry(&mut bytes, 2, 1);
    let e = entry(&bytes, 0);
    set_entry(&mut bytes, 5, e);
    let problems = check(bytes);
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    assert_eq!(errors, 3, "{problems:?}");
}

#[test]
fn bad_footer_checksum_is_refused() {
    let mut bytes = sample();
    let end = bytes.len() - 512;
    bytes[end + 67] ^= 1;
    assert_refused(bytes, "footer checksum");
}

#[test]
fn fixed_disk_shorter_than_its_size_is_refused() {
    let mem = MemFile::new();
    vdisk_core::FormatDriver::create(
        &vdisk_vhd::DRIVER,
        Box::new(mem.clone()),
        &vdisk_core::CreateSpec::new(vdisk_core::ImageKind::Fixed, 1 << 20),
    )
    .unwrap();
    let full = mem.to_vec();
    let footer = full[full.len() - 512..].to_vec();
    let mut short = full[..4096].to_vec();
    short.extend(footer);
    assert_refused(short, "truncated");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary damage to the metadata (often to BAT entries, which have no checksum) never
    /// panics; whatever still opens reads, compacts and reopens with unchanged content.
    #[test]
    fn random_metadata_damage_never_panics(
        edits in prop::collection::vec(
            (prop_oneof![0usize..2560, 1536usize..1568], any::<u8>()),
            1..6,
        ),
        at_end in any::<bool>(),
    ) {
        let mut bytes = sample();
        let base = if at_end { bytes.len() - 2560 } else { 0 };
        for (at, v) in edits {
            bytes[base + at] = v;
        }
        let _ = check(bytes.clone());
        if let Ok(mut img) = open(bytes.clone(), true) {
            prop_assert!(img.size() < 1 << 41);
            // Whatever open accepts reads, compacts and reopens with the same content.
            if img.size() <= 1 << 20 && img.as_compactable().is_ok() {
                let before = content(&*img);
                compact(&mut *img, Mode::Prezeroed).unwrap();
                prop_assert!(content(&*img) == before);
                let mut now = vec![0u8; img.host_file().len().unwrap() as usize];
                img.host_file().read_at(&mut now, 0).unwrap();
                let again = open(now, false).unwrap();
                prop_assert!(content(&*again) == before);
            }
        }
    }
}

/// Where a mutation lands: the footer at the end of the file, or the dynamic header (at 512 in
/// images we create). Checksums of the structure are recomputed after the edit, so the field
/// itself is what must be refused, unless the row damages the checksum on purpose.
#[derive(Clone, Copy, Debug)]
enum At {
    Footer(usize),
    Header(usize),
    FooterRaw(usize),
    HeaderRaw(usize),
}

const HEADER_AT: usize = 512;

fn ones_complement(s: &[u8], field: usize) -> u32 {
    let sum = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    !sum
}

fn mutate(mut bytes: Vec<u8>, at: At, value: &[u8]) -> Vec<u8> {
    let footer = bytes.len() - 512;
    let (start, len, checksum, field, fix) = match at {
        At::Footer(f) => (footer, 512, 64, f, true),
        At::FooterRaw(f) => (footer, 512, 64, f, false),
        At::Header(f) => (HEADER_AT, 1024, 36, f, true),
        At::HeaderRaw(f) => (HEADER_AT, 1024, 36, f, false),
    };
    bytes[start + field..start + field + value.len()].copy_from_slice(value);
    if fix {
        let s = &mut bytes[start..start + len];
        let sum = ones_complement(s, checksum);
        s[checksum..checksum + 4].copy_from_slice(&sum.to_be_bytes());
    }
    bytes
}

/// One field at a time, as the VHD spec lays them out (footer: cookie 0, data offset 16,
/// current size 48, disk type 60, checksum 64; dynamic header: cookie 0, table offset 16,
/// version 24, max table entries 28, block size 32, checksum 36), each with the words the
/// error must use. BAT entries past the end, overlapping blocks, blocks over metadata and
/// truncation have their own tests above.
#[test]
fn each_damaged_header_field_is_refused_naming_the_problem() {
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let be64 = |v: u64| v.to_be_bytes().to_vec();
    let table: Vec<(&str, At, Vec<u8>, &str)> = vec![
        (
            "footer cookie",
            At::Footer(0),
            b"conectiy".to_vec(),
            "no vhd footer",
        ),
        (
            "footer checksum",
            At::FooterRaw(64),
            be32(0x1234_5678),
            "footer checksum",
        ),
        (
            "disk type 5",
            At::Footer(60),
            be32(5),
            "unknown disk type 5",
        ),
        (
            "disk type 0",
            At::Footer(60),
            be32(0),
            "unknown disk type 0",
        ),
        (
            "size past 2 TiB",
            At::Footer(48),
            be64(1 << 42),
            "larger than vhd allows",
        ),
        (
            "header offset past eof",
            At::Footer(16),
            be64(1 << 40),
            "outside the file",
        ),
        (
            "header offset 0",
            At::Footer(16),
            be64(0),
            "outside the file",
        ),
        (
            "header offset unaligned into the bat",
            At::Footer(16),
            be64(1000),
            "no dynamic header",
        ),
        (
            "header cookie",
            At::Header(0),
            b"cxsparsf".to_vec(),
            "no dynamic header",
        ),
        (
            "header checksum",
            At::HeaderRaw(36),
            be32(0x1234_5678),
            "dynamic header checksum",
        ),
        (
            "header version",
            At::Header(24),
            be32(0x0002_0000),
            "dynamic header version",
        ),
        (
            "block size 0",
            At::Header(32),
            be32(0),
            "block size of 0 bytes",
        ),
        (
            "block size not a sector multiple",
            At::Header(32),
            be32(1000),
            "block size of 1000",
        ),
        (
            "block size 1 GiB",
            At::Header(32),
            be32(1 << 30),
            "block size of 1073741824",
        ),
        (
            "block size 4 GiB - 512",
            At::Header(32),
            be32(u32::MAX - 511),
            "block size of",
        ),
        (
            "entries 4 billion",
            At::Header(28),
            be32(u32::MAX),
            "entries",
        ),
        (
            "entries too few for the size",
            At::Header(28),
            be32(1),
            "less than the disk size",
        ),
        (
            "entries 0",
            At::Header(28),
            be32(0),
            "less than the disk size",
        ),
        (
            "bat offset past eof",
            At::Header(16),
            be64(1 << 40),
            "outside the file",
        ),
        (
            "bat offset wraps",
            At::Header(16),
            be64(u64::MAX - 100),
            "outside the file",
        ),
        (
            "bat over the footer copy",
            At::Header(16),
            be64(0),
            "outside the file",
        ),
        (
            "bat over the header",
            At::Header(16),
            be64(512),
            "overlaps the dynamic header",
        ),
        (
            "data offset wraps",
            At::Footer(16),
            be64(u64::MAX - 100),
            "outside the file",
        ),
    ];
    let mut failed = Vec::new();
    for (name, at, value, needle) in table {
        let bytes = mutate(sample(), at, &value);
        if std::panic::catch_unwind(|| assert_refused(bytes, needle)).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "rows failed: {failed:?}");
}

/// Regression (found by the field table above): a BAT too short for the footer's size fell
/// back to the CHS size even when the geometry has zero cylinders, so a damaged tiny image
/// opened as an empty 0-byte disk instead of being refused.
#[test]
fn bat_too_short_for_a_disk_with_zero_cylinders_is_refused_not_opened_empty() {
    let bytes = sample();
    assert_eq!(
        &bytes[bytes.len() - 512 + 56..][..2],
        &[0, 0],
        "zero cylinders"
    );
    let short = mutate(bytes, At::Header(28), &1u32.to_be_bytes());
    assert_refused(short, "less than the disk size");
}
