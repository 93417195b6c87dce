//! The modification UUID (`uuidModify`): renewed, durably, when a compaction may change what
//! the guest reads (file-system free blocks dropped), kept when it only drops blocks that read
//! zeros; the image's own UUID never changes.

use vdisk_core::{DiskImage, FormatDriver, ImageKind, MemFile, Mode, OpenOptions};
use vdisk_vdi::DRIVER;

use super::util::{compact_fs, content, create, open};

fn detail(img: &dyn DiskImage, name: &str) -> String {
    img.details()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name:?} in the details"))
        .1
}

/// A dynamic image of 4 KiB blocks: blocks 0..8 hold data, 8..12 zeros (allocated).
fn image() -> Vec<u8> {
    let bs = 4096u64;
    let (img, mem) = create(ImageKind::Dynamic, 16 * bs, bs);
    for b in 0..12u64 {
        let byte = if b < 8 { b as u8 + 1 } else { 0 };
        img.write_at(&vec![byte; 4096], b * bs).unwrap();
    }
    drop(img);
    mem.to_vec()
}

#[test]
fn dropping_file_system_free_data_renews_the_modification_uuid_and_keeps_the_image_uuid() {
    let bytes = image();
    let before = open(bytes.clone(), false).unwrap();
    let (uuid, modify) = (
        detail(&*before, "uuid"),
        detail(&*before, "modification uuid"),
    );
    let mem = MemFile::from_bytes(bytes);
    let mut img = DRIVER
        .open(Box::new(mem.clone()), &OpenOptions::read_write())
        .unwrap();
    // Blocks 2..4 are free in the "file system": their data may go.
    let free: Vec<std::ops::Range<u64>> = std::iter::once(2 * 4096..4 * 4096).collect();
    let report = compact_fs(&mut *img, Mode::Full, Some(&free)).unwrap();
    assert!(report.blocks_reclaimed_fs == 2, "{report:?}");
    assert_eq!(detail(&*img, "uuid"), uuid);
    assert_ne!(detail(&*img, "modification uuid"), modify);
    // Durable: a fresh open of the bytes reads the new one.
    let renewed = detail(&*img, "modification uuid");
    drop(img);
    let again = open(mem.to_vec(), false).unwrap();
    assert_eq!(detail(&*again, "modification uuid"), renewed);
}

#[test]
fn dropping_only_zero_blocks_keeps_the_modification_uuid() {
    let bytes = image();
    let before = open(bytes.clone(), false).unwrap();
    let modify = detail(&*before, "modification uuid");
    let kept = content(&*before);
    let mut img = open(bytes, true).unwrap();
    let report = compact_fs(&mut *img, Mode::Prezeroed, None).unwrap();
    assert!(
        report.blocks_reclaimed_zero == 4 && report.blocks_reclaimed_fs == 0,
        "{report:?}"
    );
    assert_eq!(detail(&*img, "modification uuid"), modify);
    assert_eq!(content(&*img), kept);
}
