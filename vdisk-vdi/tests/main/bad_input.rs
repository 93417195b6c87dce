//! Hostile and damaged files: a clear error naming the problem, never a panic, and the file
//! untouched.

use vdisk_core::{CreateSpec, ErrorKind, FormatDriver, HostFile, ImageKind, MemFile, OpenOptions};
use vdisk_vdi::DRIVER;

use super::util::{check, create, errors, open};

/// A small dynamic image with two blocks written (slots 0 and 1).
fn image() -> Vec<u8> {
    let (img, mem) = create(ImageKind::Dynamic, 64 * 4096, 4096);
    img.write_at(&[1; 4096], 0).unwrap();
    img.write_at(&[2; 4096], 5 * 4096).unwrap();
    drop(img);
    mem.to_vec()
}

fn put32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Opens read-only and checks; both must fail naming `what`, and the bytes stay the same.
#[track_caller]
fn refused(bytes: Vec<u8>, what: &str) {
    let mem = MemFile::from_bytes(bytes.clone());
    let err = DRIVER
        .open(Box::new(mem.clone()), &OpenOptions::read_write())
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidImage | ErrorKind::Unsupported),
        "{err}"
    );
    assert!(err.message().contains(what), "{err} (wanted {what:?})");
    let errs = errors(bytes.clone());
    assert!(
        errs.iter().any(|e| e.contains(what)),
        "{errs:?} (wanted {what:?})"
    );
    assert!(mem.to_vec() == bytes, "the file was changed");
}

#[test]
fn a_truncated_header_is_refused_as_truncated() {
    let mut b = image();
    b.truncate(300);
    refused(b, "shorter than the 512-byte vdi header");
}

#[test]
fn a_block_map_reaching_past_the_end_of_the_file_is_refused() {
    let mut b = image();
    put32(&mut b, 0x154, 0x10_0000);
    refused(b, "reaches past the end");
    let mut b = image();
    put32(&mut b, 0x180, 0x3fff_0000);
    refused(b, "reaches past the end");
    let mut b = image();
    put32(&mut b, 0x170, 65 * 4096);
    refused(b, "does not fit the block map");
}

#[test]
fn two_blocks_in_one_slot_are_corruption() {
    let mut b = image();
    let bmap = 0x200;
    put32(&mut b, bmap + 5 * 4, 0);
    refused(b, "both point at slot 0");
}

#[test]
fn a_huge_or_odd_block_size_is_refused() {
    for size in [1u32 << 31, 3 << 20, 0, 256] {
        let mut b = image();
        put32(&mut b, 0x178, size);
        refused(b, "block size");
    }
}

#[test]
fn a_slot_the_header_does_not_count_or_past_the_map_is_corruption() {
    let mut b = image();
    put32(&mut b, 0x184, 1);
    refused(b, "the next block written would overwrite it");
    let mut b = image();
    put32(&mut b, 0x200 + 7 * 4, 64);
    refused(b, "past the 64 slots");
    let mut b = image();
    put32(&mut b, 0x184, 3);
    put32(&mut b, 0x200 + 7 * 4, 2);
    refused(b, "past the end of the");
}

#[test]
fn a_count_above_the_slots_in_use_is_only_a_warning() {
    let mut b = image();
    put32(&mut b, 0x184, 3);
    let problems = check(b.clone());
    assert!(errors(b.clone()).is_empty(), "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("reclaimed by compacting")),
        "{problems:?}"
    );
    open(b, false).expect("a sound image opens");
}

#[test]
fn other_versions_and_undo_images_are_unsupported_not_invalid() {
    let mut b = image();
    put32(&mut b, 0x44, 0x0000_0000);
    let err = open(b, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let mut b = image();
    put32(&mut b, 0x4c, 3);
    let err = open(b, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

/// Every single-byte change of the header and of the first map page: open and check return
/// (an image or an error) without panicking, and never change the bytes.
#[test]
fn no_single_byte_change_of_the_header_or_map_makes_open_or_check_panic() {
    let original = image();
    for at in (0x40..0x240).step_by(1) {
        for v in [0x00u8, 0xff, 0x7f, 0x80] {
            let mut b = original.clone();
            b[at] = v;
            let mem = MemFile::from_bytes(b.clone());
            if let Ok(img) = DRIVER.open(Box::new(mem.clone()), &OpenOptions::read_only()) {
                let mut buf = vec![0u8; 4096];
                let _ = img.read_at(&mut buf, 0);
                let _ = img.check();
            }
            let _ = check(b.clone());
            assert!(mem.to_vec() == b, "byte {at:#x} = {v:#x}: file changed");
        }
    }
}

#[test]
fn create_refuses_bad_arguments_before_writing_anything() {
    let mem = MemFile::new();
    for spec in [
        CreateSpec::new(ImageKind::Dynamic, 0),
        CreateSpec::new(ImageKind::Dynamic, 1 << 20).block_size(3000),
        CreateSpec::new(ImageKind::Dynamic, 1 << 20).logical_sector_size(4096),
        CreateSpec::new(ImageKind::Dynamic, u64::MAX).block_size(512),
    ] {
        assert!(DRIVER.check_spec(&spec).is_err(), "{spec:?}");
        assert!(
            DRIVER.create(Box::new(mem.clone()), &spec).is_err(),
            "{spec:?}"
        );
        assert_eq!(mem.len().unwrap(), 0, "{spec:?}");
    }
}
