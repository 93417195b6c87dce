//! Footer and dynamic header from annotated hex literals (one field per line), then one-byte
//! mutations that must each fail with a clear error.

use vdisk_core::{ErrorKind, GuestExtent, ImageKind};

use super::util::{check, create_dynamic, open};

/// Parses a hex literal, ignoring whitespace and `#` comments.
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| c.is_ascii_hexdigit()))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(bytes.len() <= len);
    bytes.resize(len, 0);
    bytes
}

const FOOTER: &str = "
    636f6e6563746978     # cookie \"conectix\"
    00000002             # features: reserved bit
    00010000             # version 1.0
    0000000000000200     # data offset: dynamic header at 512
    0000002a             # timestamp
    7664736b             # creator app \"vdsk\"
    00000001             # creator version
    5769326b             # creator host os \"Wi2k\"
    0000000000400000     # original size 4 MiB
    0000000000400000     # current size 4 MiB
    0078                 # cylinders 120
    04                   # heads 4
    11                   # sectors per track 17
    00000003             # disk type: dynamic
    fffff7d5             # checksum
    000102030405060708090a0b0c0d0e0f # unique id
    00                   # saved state
";

const HEADER: &str = "
    6378737061727365     # cookie \"cxsparse\"
    ffffffffffffffff     # data offset (unused)
    0000000000000600     # table offset 1536
    00010000             # version 1.0
    00000002             # max table entries
    00200000             # block size 2 MiB
    fffff475             # checksum
";

/// Footer offsets of the fields the mutations hit.
const F_COOKIE: usize = 0;
const F_DISK_TYPE: usize = 60;
const F_CHECKSUM: usize = 64;
/// Header offsets (from the image start: header at 512).
const H_COOKIE: usize = 512;
const H_TABLE_OFFSET: usize = 512 + 16;
const H_ENTRIES: usize = 512 + 28;
const H_BLOCK_SIZE: usize = 512 + 32;

/// Footer copy, header, one BAT sector (all unallocated), footer: 2560 bytes.
fn image() -> Vec<u8> {
    let footer = padded(hex(FOOTER), 512);
    let mut img = footer.clone();
    img.extend(padded(hex(HEADER), 1024));
    img.extend([0xff; 512]);
    img.extend(footer);
    img
}

/// Applies `edit` to both footers (or just the header bytes) and re-seals nothing.
fn mutate(at: usize, byte: u8, both_footers: bool) -> Vec<u8> {
    let mut img = image();
    img[at] = byte;
    if both_footers {
        let end = img.len() - 512;
        img[end + at] = byte;
    }
    img
}

#[test]
fn annotated_literal_opens_as_a_4_mib_dynamic_disk() {
    let img = open(image(), false).unwrap();
    assert_eq!(img.kind(), ImageKind::Dynamic);
    assert_eq!(img.size(), 4 << 20);
    assert_eq!(img.block_size(), 2 << 20);
    assert_eq!(img.block_count(), 2);
    assert!(check(image()).is_empty());
}

fn expect_invalid(bytes: Vec<u8>, needle: &str) {
    let before = bytes.clone();
    let err = open(bytes.clone(), true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains(needle), "{needle:?} not in {err}");
    assert!(err.offset().is_some(), "{err} has an offset");
    let problems = check(bytes.clone());
    assert!(
        problems.iter().any(|p| p.message.contains(needle)),
        "check: {problems:?}"
    );
    assert_eq!(bytes, before);
}

#[test]
fn each_one_byte_mutation_is_refused_with_a_clear_error() {
    expect_invalid(mutate(F_COOKIE, b'k', true), "no vhd footer");
    expect_invalid(mutate(F_CHECKSUM + 3, 0xd4, true), "footer checksum");
    expect_invalid(mutate(F_DISK_TYPE + 3, 5, true), "unknown disk type 5");
    expect_invalid(mutate(H_COOKIE, b'C', false), "no dynamic header");
    expect_invalid(mutate(H_BLOCK_SIZE + 3, 0x01, false), "block size");
    expect_invalid(mutate(H_BLOCK_SIZE, 0x7f, false), "block size");
    expect_invalid(mutate(H_TABLE_OFFSET + 6, 0x60, false), "the bat");
    expect_invalid(mutate(H_ENTRIES, 0x7f, false), "entries");
    // One entry is too few for 4 MiB in 2 MiB blocks, and the CHS size does not fit either.
    expect_invalid(mutate(H_ENTRIES + 3, 1, false), "cover");
}

#[test]
fn a_header_checksum_mismatch_is_refused() {
    // Changing the (unused) data offset only breaks the checksum.
    expect_invalid(mutate(512 + 8, 0, false), "dynamic header checksum");
}

#[test]
fn old_qemu_checksum_without_unique_id_is_accepted_with_a_warning() {
    let mut img = image();
    let sum: u32 = (0u32..16).sum();
    let stored = 0xffff_f7d5u32 + sum; // as if the unique id had been zero
    for base in [0, img.len() - 512] {
        img[base + F_CHECKSUM..base + F_CHECKSUM + 4].copy_from_slice(&stored.to_be_bytes());
    }
    open(img.clone(), false).unwrap();
    let problems = check(img);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("unique id"));
}

#[test]
fn a_differing_footer_copy_is_only_a_warning() {
    let mut img = image();
    img[F_CHECKSUM] = 0; // copy at offset 0 only
    open(img.clone(), false).unwrap();
    let problems = check(img);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].severity, vdisk_core::Severity::Warning);
}

#[test]
fn saved_state_images_open_but_refuse_compaction_and_writes() {
    let mut img = image();
    for base in [0, img.len() - 512] {
        img[base + 84] = 1; // saved state
        let sum = u32::from_be_bytes(img[base + 64..base + 68].try_into().unwrap()) - 1;
        img[base + 64..base + 68].copy_from_slice(&sum.to_be_bytes());
    }
    let mut vhd = open(img, true).unwrap();
    let err = vhd.as_compactable().err().unwrap();
    assert_eq!(err.kind(), ErrorKind::WrongType);
    assert!(err.message().contains("saved"), "{err}");
    assert_eq!(
        vhd.write_at(&[1], 0).unwrap_err().kind(),
        ErrorKind::WrongType
    );
}

/// A saved-state image refuses the compaction view and with it its layout, so its guest
/// extent map gives no host offset for its data (the footprint's start would be the sector
/// bitmap, not the data), where the same image unsaved gives the offset after the bitmap.
#[test]
fn a_saved_state_images_extent_map_never_places_data_at_its_sector_bitmap() {
    let (img, mem) = create_dynamic(4 << 20, 2 << 20);
    img.write_at(&[7u8; 4096], 2 << 20).unwrap();
    drop(img);
    let unsaved = open(mem.to_vec(), false).unwrap();
    let data = |vhd: &dyn vdisk_core::DiskImage| -> Vec<Option<u64>> {
        vhd.guest_extents(0..vhd.size())
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e {
                GuestExtent::Data { host } => Some(host.map(|h| h.0)),
                _ => None,
            })
            .collect()
    };
    let at = data(&*unsaved);
    assert_eq!(at.len(), 1, "{at:?}");
    let host = at[0].expect("an unsaved dynamic vhd says where its data lies");
    let mut bytes = mem.to_vec();
    assert_eq!(bytes[host as usize..host as usize + 4096], [7u8; 4096]);
    let end = bytes.len() - 512;
    for base in [0, end] {
        bytes[base + 84] = 1; // saved state
    }
    reseal_footers(&mut bytes);
    let saved = open(bytes, false).unwrap();
    assert_eq!(data(&*saved), vec![None]);
}

/// Re-seals both footers of `img` after an edit.
fn reseal_footers(img: &mut [u8]) {
    let end = img.len() - 512;
    for base in [0, end] {
        img[base + F_CHECKSUM..base + F_CHECKSUM + 4].fill(0);
        let sum: u32 = img[base..base + 512].iter().map(|&b| u32::from(b)).sum();
        img[base + F_CHECKSUM..base + F_CHECKSUM + 4].copy_from_slice(&(!sum).to_be_bytes());
    }
}

#[test]
fn table_too_small_for_current_size_falls_back_to_the_chs_size() {
    // Current size 5 MiB, but the table covers 4 MiB; CHS 120/4/17 = 4,177,920 bytes fits.
    let mut img = image();
    let end = img.len() - 512;
    for base in [0, end] {
        img[base + 48..base + 56].copy_from_slice(&(5u64 << 20).to_be_bytes());
    }
    reseal_footers(&mut img);
    let vhd = open(img.clone(), false).unwrap();
    assert_eq!(vhd.size(), 120 * 4 * 17 * 512);
    let details = vhd.details();
    let from = &details.iter().find(|(k, _)| k == "size from").unwrap().1;
    assert!(from.contains("chs"), "{from}");
    // And if the CHS size does not fit either, the image is refused.
    for base in [0, end] {
        img[base + 56..base + 58].copy_from_slice(&200u16.to_be_bytes());
    }
    reseal_footers(&mut img);
    expect_invalid(img, "cover");
}
