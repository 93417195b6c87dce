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
