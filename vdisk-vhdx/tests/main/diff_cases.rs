//! Differencing images that are broken, hostile or unusual: clear errors, no panics; and
//! PARTIALLY_PRESENT blocks (which vdisk never writes) read, written and compacted correctly.

use std::ops::Range;
use std::path::Path;

use vdisk_core::{BlockIndex, BlockState, ErrorKind, MIB, Mode};

use super::diff::{assert_libvhdi_agrees, base, child, contents, open, write};
use super::util::{METADATA_REGION, compact, content, region_offset};

const LOCATOR: u128 = 0xA8D35F2D_B30B_454D_ABF7_D3D84834AB0C;
const DISK_SIZE: u128 = 0x2FA54224_CD1B_4876_B211_5DBED83BF4B8;

/// Host byte range of metadata item `id` in the image bytes `b`.
fn item_range(b: &[u8], id: u128) -> Range<usize> {
    let meta = region_offset(b, METADATA_REGION) as usize;
    let count = u16::from_le_bytes([b[meta + 10], b[meta + 11]]) as usize;
    let want = uuid::Uuid::from_u128(id).to_bytes_le();
    let e = (0..count)
        .map(|i| meta + 32 + 32 * i)
        .find(|&e| b[e..e + 16] == want)
        .expect("item present");
    let off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(b[e + 20..e + 24].try_into().unwrap()) as usize;
    meta + off..meta + off + len
}

/// A change made to a locator item.
type Mutation = Box<dyn Fn(&mut [u8])>;

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn open_err(path: &Path) -> vdisk_core::Error {
    match open(path, false) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn a_parent_written_after_the_child_was_made_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    write(&a, &[(0, vec![1; 512])]);
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("DataWriteGuid"), "{err}");
    assert!(err.message().contains(&a.display().to_string()), "{err}");
}

#[test]
fn a_missing_parent_is_not_found_naming_the_stored_path() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    std::fs::remove_file(&a).unwrap();
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains(".\\a.vhdx"), "{err}");
}

#[test]
fn a_parent_chain_that_loops_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    // a2 is a child of b; putting it in a's place makes b -> a -> b.
    let a2 = child(dir.path(), "a2.vhdx", &b);
    std::fs::rename(&a2, &a).unwrap();
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("loops"), "{err}");
}

#[test]
fn a_parent_of_another_format_or_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    let original = std::fs::read(&a).unwrap();
    // Same linkage, another virtual size (the size item is not checksummed).
    edit(&a, |bytes| {
        let r = item_range(bytes, DISK_SIZE);
        bytes[r].copy_from_slice(&(4 * MIB).to_le_bytes());
    });
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("bytes"), "{err}");
    // Not a disk image at all: core's parent gate finds no driver that recognises it.
    std::fs::write(&a, vec![0x5a; 3 * MIB as usize]).unwrap();
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("not a disk image"), "{err}");
    assert!(err.to_string().contains("a.vhdx"), "{err}");
    std::fs::write(&a, original).unwrap();
    open(&b, false).unwrap();
}

#[test]
fn hostile_parent_locator_items_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    let b = child(dir.path(), "b.vhdx", &a);
    let good = std::fs::read(&b).unwrap();
    let r = item_range(&good, LOCATOR);
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "do not fit",
            Box::new(|l: &mut [u8]| l[18..20].copy_from_slice(&u16::MAX.to_le_bytes())),
        ),
        (
            "outside",
            Box::new(|l: &mut [u8]| l[24..28].copy_from_slice(&u32::MAX.to_le_bytes())),
        ),
        (
            "utf-16",
            Box::new(|l: &mut [u8]| {
                let vo = u32::from_le_bytes(l[24..28].try_into().unwrap()) as usize;
                l[vo..vo + 2].copy_from_slice(&0xdc00u16.to_le_bytes());
            }),
        ),
        (
            "parent_linkage",
            Box::new(|l: &mut [u8]| {
                // Rename the key "parent_linkage" to "xarent_linkage".
                let ko = u32::from_le_bytes(l[20..24].try_into().unwrap()) as usize;
                l[ko] = b'x';
            }),
        ),
        (
            "twice",
            Box::new(|l: &mut [u8]| {
                // Point the second entry's key at the first entry's key.
                let first_key = l[20..24].to_vec();
                l[32..36].copy_from_slice(&first_key);
                let first_len = l[28..30].to_vec();
                l[40..42].copy_from_slice(&first_len);
            }),
        ),
    ];
    for (needle, mutate) in &cases {
        edit(&b, |bytes| mutate(&mut bytes[r.clone()]));
        let err = open_err(&b);
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{needle}: {err}");
        assert!(err.message().contains(needle), "{needle}: {err}");
        std::fs::write(&b, &good).unwrap();
    }
    // Every single-byte change of the item: an error or a valid open, never a panic.
    for i in r.clone() {
        for v in [0u8, 0xff, 0x41] {
            let mut bytes = good.clone();
            bytes[i] = v;
            std::fs::write(&b, &bytes).unwrap();
            if let Ok(image) = open(&b, false) {
                let _ = content(&*image);
            }
        }
    }
    std::fs::write(&b, &good).unwrap();
    open(&b, false).unwrap();
}

/// BAT of images made by vdisk's create starts at 3 MiB; entry `i` is 8 bytes.
const BAT: usize = 3 << 20;

/// Turns block `block` of the differencing image at `path` (FULLY_PRESENT, chunk 0) into
/// PARTIALLY_PRESENT with exactly `sectors` (512-byte sectors within the block) taken from it.
pub fn make_partial(path: &Path, block: usize, sectors: &[usize]) {
    edit(path, |b| {
        let at = BAT + 8 * block;
        let entry = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(entry & 7, 6, "block {block} is fully present");
        b[at..at + 8].copy_from_slice(&(entry & !7 | 7).to_le_bytes());
        // Chunk 0's sector bitmap entry sits after chunk_ratio (2^23*512/1MiB = 4096) entries.
        let sb = BAT + 8 * 4096;
        let sb_host = (u64::from_le_bytes(b[sb..sb + 8].try_into().unwrap()) >> 20 << 20) as usize;
        assert_ne!(sb_host, 0);
        for &s in sectors {
            let bit = block * 2048 + s;
            b[sb_host + bit / 8] |= 1 << (bit % 8);
        }
    });
}

#[test]
fn partially_present_blocks_read_per_sector_and_survive_writes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 8 * MIB, MIB);
    write(&a, &[(0, vec![0xaa; 8 * MIB as usize])]);
    let b = child(dir.path(), "b.vhdx", &a);
    // Block 2: own data everywhere, but only sectors 0, 5..8 and the last are its own.
    // Block 4: own data equal to the parent in the sectors it claims (reclaimable).
    // Block 6: full block, zeros where it claims (sectors 1..3), parent elsewhere.
    write(
        &b,
        &[
            (2 * MIB, vec![0x22; MIB as usize]),
            (4 * MIB, vec![0xaa; MIB as usize]),
            (6 * MIB, vec![0; MIB as usize]),
            (7 * MIB, vec![0x77; 4096]),
        ],
    );
    make_partial(&b, 2, &[0, 5, 6, 7, 2047]);
    make_partial(&b, 4, &[3, 4, 100]);
    make_partial(&b, 6, &[1, 2]);
    let chain = [a.clone(), b.clone()];
    let model = contents(&chain);
    let m = &model[1];
    let at = |block: u64, sector: u64| (block * MIB + sector * 512) as usize;
    assert_eq!(m[at(2, 0)], 0x22);
    assert_eq!(m[at(2, 1)], 0xaa, "unclaimed sector reads the parent");
    assert_eq!(m[at(2, 5)], 0x22);
    assert_eq!(m[at(2, 2047) + 511], 0x22);
    assert_eq!(m[at(6, 1)], 0);
    assert_eq!(m[at(6, 3)], 0xaa);
    // libvhdi reads partial blocks through the bitmap as we do.
    assert_libvhdi_agrees(&chain, &model, "partial blocks");

    // Compaction: block 4 reads like the parent and is dropped; its bits are cleared.
    let mut image = open(&b, true).unwrap();
    let report = compact(&mut *image, Mode::Prezeroed).unwrap();
    assert!(report.blocks_reclaimed_parent >= 1, "{report:?}");
    drop(image);
    let image = open(&b, false).unwrap();
    assert_eq!(
        image.block_state(BlockIndex(4)).unwrap(),
        BlockState::Unallocated
    );
    drop(image);
    let bytes = std::fs::read(&b).unwrap();
    let sb = BAT + 8 * 4096;
    let sb_host = (u64::from_le_bytes(bytes[sb..sb + 8].try_into().unwrap()) >> 20 << 20) as usize;
    assert!(
        bytes[sb_host + 4 * 256..sb_host + 5 * 256]
            .iter()
            .all(|&x| x == 0),
        "a freed partial block's sector bits are cleared"
    );
    assert!(
        bytes[sb_host + 2 * 256..sb_host + 3 * 256]
            .iter()
            .any(|&x| x != 0),
        "a surviving partial block keeps its bits"
    );
    let after = contents(&chain);
    super::diff::assert_levels(&after, &model, "after compaction");
    assert_libvhdi_agrees(&chain, &model, "partial blocks after compaction");

    // A write into a partial block completes it from the parent, then it is fully present.
    write(&b, &[(2 * MIB + 512 * 3, vec![0x33; 700])]);
    let mut want = model[1].clone();
    want[at(2, 3)..at(2, 3) + 700].fill(0x33);
    let image = open(&b, false).unwrap();
    assert!(matches!(
        image.block_state(BlockIndex(2)).unwrap(),
        BlockState::Allocated { .. }
    ));
    let got = content(&*image);
    drop(image);
    super::diff::assert_levels(&[got], &[want.clone()], "after a write");
    let mut model2 = model.clone();
    model2[1] = want;
    assert_libvhdi_agrees(&chain, &model2, "after a write");
}

/// A parent locator item with `pairs`, encoded by hand (MS-VHDX 2.6.2.6).
fn locator_item(pairs: &[(&str, &str)]) -> Vec<u8> {
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let mut out = uuid::Uuid::from_u128(0xB04AEFB7_D19E_4A81_B789_25B8E9445913)
        .to_bytes_le()
        .to_vec();
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let table_end = 20 + 12 * pairs.len();
    for (k, v) in pairs {
        let (k, v) = (utf16(k), utf16(v));
        let ko = (table_end + strings.len()) as u32;
        strings.extend_from_slice(&k);
        let vo = (table_end + strings.len()) as u32;
        strings.extend_from_slice(&v);
        out.extend_from_slice(&ko.to_le_bytes());
        out.extend_from_slice(&vo.to_le_bytes());
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&strings);
    out
}

/// Replaces the parent locator of the image at `path` with `pairs` (in place, same offset;
/// the metadata entry's length is updated).
fn set_locator(path: &Path, pairs: &[(&str, &str)]) {
    edit(path, |b| {
        let r = item_range(b, LOCATOR);
        let item = locator_item(pairs);
        b[r.start..r.start + item.len()].copy_from_slice(&item);
        let meta = region_offset(b, METADATA_REGION) as usize;
        let want = uuid::Uuid::from_u128(LOCATOR).to_bytes_le();
        let e = (0..6)
            .map(|i| meta + 32 + 32 * i)
            .find(|&e| b[e..e + 16] == want)
            .unwrap();
        b[e + 20..e + 24].copy_from_slice(&(item.len() as u32).to_le_bytes());
    });
}

#[test]
fn locators_are_tried_in_spec_order_and_windows_paths_map_to_the_child_folder() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 2 * MIB, MIB);
    write(&a, &[(0, vec![0xab; 4096])]);
    let b = child(dir.path(), "b.vhdx", &a);
    let link = {
        let image = open(&b, false).unwrap();
        image
            .details()
            .into_iter()
            .find(|(k, _)| k == "parent linkage")
            .unwrap()
            .1
    };
    // The relative path names nothing; the absolute Windows path's file name is a sibling.
    set_locator(
        &b,
        &[
            ("absolute_win32_path", "\\\\?\\D:\\Hyper-V\\disks\\a.vhdx"),
            ("parent_linkage", &link),
            ("relative_path", ".\\gone.vhdx"),
            ("vendor_key", "ignored"),
        ],
    );
    let image = open(&b, false).unwrap();
    assert_eq!(
        image.parent_path(),
        Some(dir.path().join("a.vhdx").as_path())
    );
    assert_eq!(content(&*image)[..4096], [0xab; 4096]);
    drop(image);
    // parent_linkage2 is accepted as the parent's identity too.
    set_locator(
        &b,
        &[
            ("parent_linkage", "{00000000-0000-0000-0000-000000000001}"),
            ("parent_linkage2", &link),
            ("relative_path", ".\\a.vhdx"),
        ],
    );
    open(&b, false).unwrap();
    // No path at all that exists: not found, naming what was stored.
    set_locator(
        &b,
        &[
            ("parent_linkage", &link),
            (
                "volume_path",
                "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\x\\nope.vhdx",
            ),
        ],
    );
    let err = open_err(&b);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("nope.vhdx"), "{err}");
}

/// A trimmed block of a differencing child (UNMAPPED or UNDEFINED) has undefined content, and
/// readers disagree on it: vdisk reads zeros, libvhdi reads through to the parent. Turning it
/// into ZERO or NOT_PRESENT would change what one of them reads, so no mode touches it, and
/// both readers see after every mode what they saw before. (Found by `cargo xtask mutate`.)
#[test]
fn trimmed_blocks_of_a_child_are_kept_so_no_reader_sees_them_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = base(dir.path(), "a.vhdx", 8 * MIB, MIB);
    write(&a, &[(0, vec![0xaa; 8 * MIB as usize])]);
    for mode in Mode::ALL {
        let b = child(dir.path(), &format!("b-{mode}.vhdx"), &a);
        write(
            &b,
            &[
                (MIB, vec![0x11; MIB as usize]),
                (3 * MIB, vec![0x33; MIB as usize]),
                (5 * MIB, vec![0x55; MIB as usize]),
            ],
        );
        // Block 3 UNMAPPED, block 5 UNDEFINED, both without host space.
        edit(&b, |bytes| {
            for (block, state) in [(3usize, 3u64), (5, 1)] {
                let at = BAT + 8 * block;
                bytes[at..at + 8].copy_from_slice(&state.to_le_bytes());
            }
        });
        let chain = [a.clone(), b.clone()];
        let ours = contents(&chain);
        let theirs = super::diff::libvhdi_contents(&chain);
        let mut image = open(&b, true).unwrap();
        compact(&mut *image, mode).unwrap();
        drop(image);
        let image = open(&b, false).unwrap();
        for block in [3, 5] {
            assert!(
                matches!(
                    image.block_state(BlockIndex(block)).unwrap(),
                    BlockState::Trimmed { .. }
                ),
                "{mode}: block {block} is still trimmed"
            );
        }
        drop(image);
        assert_eq!(
            contents(&chain),
            ours,
            "{mode}: vdisk reads the child the same"
        );
        assert_eq!(
            super::diff::libvhdi_contents(&chain),
            theirs,
            "{mode}: libvhdi reads the child the same"
        );
    }
}
