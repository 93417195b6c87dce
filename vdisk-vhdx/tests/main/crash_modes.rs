//! Crash safety of the modes other than `prezeroed` (see `crash.rs` for that one):
//! `pretrimmed` over UNMAPPED/UNDEFINED blocks, `retrim` (free in place and punch holes,
//! dynamic and fixed), and the file-system-aware modes `full`, `quick` and `retrim` with
//! synthetic file-system free ranges.
//!
//! Each cuts the write stream of the whole compaction (header updates included) at every
//! write, recovers what a reboot could find and requires an image that opens (replaying its
//! log), checks clean and compacts to the same result when run again. Byte-exact modes compare
//! the whole disk; file-system-aware ones require every byte outside the free blocks to read
//! as before and each free block to read as before or all zeros ([`MayZero`]), and once any
//! free block with data reads zeros, a new DataWriteGuid (children made against the old
//! content must no longer match).

use std::cell::Cell;
use std::ops::Range;

use vdisk_core::testing::{
    ALL_FAULTS, CrashCase, CrashStats, Fault, MayZero, blocks_inside, cut_each, report_cuts,
};
use vdisk_core::{
    BlockIndex, BlockState, CreateSpec, DiskImage, FormatDriver, ImageKind, MIB, MemFile, Mode,
    OpenOptions,
};

use super::util::{
    BAT_REGION, check_errors, compact_fs, content, log_detail, open_bytes, region_offset,
};

/// VHDX BAT payload states the scenarios write directly.
const UNDEFINED: u8 = 1;
const UNMAPPED: u8 = 3;

/// Blocks of the dynamic scenario (1 MiB each).
const BLOCKS: u64 = 12;

fn create(kind: ImageKind, blocks: u64) -> (Box<dyn DiskImage>, MemFile) {
    let mem = MemFile::new();
    let img = vdisk_vhdx::DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(kind, blocks * MIB).block_size(MIB),
        )
        .unwrap();
    (img, mem)
}

/// A block of data that differs per block and per 4 KiB.
fn fill(b: u64) -> Vec<u8> {
    (0..MIB / 4096)
        .flat_map(|i| [u8::try_from((b * 7 + i) % 250 + 1).unwrap(); 4096])
        .collect()
}

/// Sets the state bits of payload block `block`'s BAT entry (index = block: one chunk).
fn set_state(bytes: &mut [u8], block: u64, state: u8) {
    let at = usize::try_from(region_offset(bytes, BAT_REGION) + 8 * block).unwrap();
    bytes[at] = (bytes[at] & !7) | state;
}

/// A dynamic image of 12 blocks, in host order: data, zeros (allocated), free data,
/// UNMAPPED (still holding its old data), data, unallocated, free data, half-free data,
/// UNDEFINED without host space, UNMAPPED, zeros, data. The file-system free ranges cover
/// block 2, and blocks 5 and 6 with half of 7. Returns the bytes and the free ranges.
fn mixed() -> (Vec<u8>, Vec<Range<u64>>) {
    let (img, mem) = create(ImageKind::Dynamic, BLOCKS);
    for b in 0..BLOCKS {
        match b {
            5 | 8 => {}
            1 | 10 => {
                img.write_at(&[9; 4096], b * MIB).unwrap();
                img.write_at(&vec![0; MIB as usize], b * MIB).unwrap();
            }
            _ => img.write_at(&fill(b), b * MIB).unwrap(),
        }
    }
    drop(img);
    let mut bytes = mem.to_vec();
    set_state(&mut bytes, 3, UNMAPPED);
    set_state(&mut bytes, 8, UNDEFINED);
    set_state(&mut bytes, 9, UNMAPPED);
    let img = open_bytes(&bytes).unwrap();
    for (b, want) in [(3, true), (8, false), (9, true)] {
        match img.block_state(BlockIndex(b)).unwrap() {
            BlockState::Trimmed { host } => assert_eq!(host.is_some(), want, "block {b}"),
            s => panic!("block {b} is {s:?}"),
        }
    }
    let free = vec![2 * MIB..3 * MIB, 5 * MIB..7 * MIB + MIB / 2];
    (bytes, free)
}

/// A fixed image of 8 blocks: data, zeros, free data, data, free data, zeros, free zeros,
/// data.
fn fixed() -> (Vec<u8>, Vec<Range<u64>>) {
    let (img, mem) = create(ImageKind::Fixed, 8);
    for b in [0, 2, 3, 4, 7] {
        img.write_at(&fill(b)[..65536], b * MIB + 4096 * b).unwrap();
    }
    drop(img);
    let free = [2, 4, 6].map(|b| b * MIB..(b + 1) * MIB).to_vec();
    (mem.to_vec(), free)
}

fn case(
    name: &str,
    bytes: Vec<u8>,
    mode: Mode,
    fs_free: Option<Vec<Range<u64>>>,
) -> CrashCase<'static> {
    let mut case = CrashCase::new(
        format!("vhdx {name} {mode}"),
        bytes,
        |file| vdisk_vhdx::DRIVER.open(file, &OpenOptions::read_write()),
        open_ro,
        move |img| compact_fs(img, mode, fs_free.as_deref()).map(|_| ()),
        check_errors,
    );
    case.after_rerun = Box::new(|img, what| assert_eq!(log_detail(img), "empty", "{what}: log"));
    case
}

/// Opens `bytes` read-only without copying them.
fn open_ro(bytes: Vec<u8>) -> vdisk_core::Result<Box<dyn DiskImage>> {
    let file = MemFile::from_bytes(bytes).read_only();
    vdisk_vhdx::DRIVER.open(Box::new(file), &OpenOptions::read_only())
}

/// A `vdisk info` detail of `img`, e.g. "data write guid".
fn detail(img: &dyn DiskImage, key: &str) -> String {
    img.details()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key:?} detail"))
}

fn data_write_guid(img: &dyn DiskImage) -> String {
    detail(img, "data write guid")
}

/// Runs `case` with the file-system-aware content check over `fs_free` for each fault, and
/// requires a new DataWriteGuid wherever a free block with data reads zeros. Returns the stats
/// per fault and how many free blocks with data read zeros in the recovered images (before
/// their re-run).
fn cut_fs_aware(
    case: CrashCase<'static>,
    fs_free: &[Range<u64>],
    faults: &[Fault],
) -> (Vec<CrashStats>, u64) {
    let image = open_bytes(&case.original).unwrap();
    let blocks = blocks_inside(fs_free, image.block_size(), image.size());
    assert!(blocks.len() >= 3, "{}: free blocks to reclaim", case.name);
    let may = MayZero::new(content(&*image), blocks);
    let old_guid = data_write_guid(&*image);
    drop(image);
    let zeroed = Cell::new(0);
    let mut case = case;
    case.content = Box::new(|img| may.content(img));
    case.inspect = Box::new(|n, s, bytes| {
        let image = open_bytes(bytes).unwrap();
        match may.freed(&*image) {
            Ok(0) => {}
            Ok(z) => {
                zeroed.set(zeroed.get() + z);
                assert_ne!(
                    data_write_guid(&*image),
                    old_guid,
                    "cut {n} {s:?}: {z} free blocks read zeros under the old DataWriteGuid"
                );
            }
            Err(why) => panic!("cut {n} {s:?}: {why}"),
        }
    });
    case.after_rerun = Box::new(|img, what| {
        assert_eq!(log_detail(img), "empty", "{what}: log");
        assert_ne!(data_write_guid(img), old_guid, "{what}: DataWriteGuid");
    });
    let stats = cut_each(&case, faults);
    drop(case);
    (stats, zeroed.get())
}

/// UNMAPPED and UNDEFINED blocks become ZERO, the blocks after them move into their space,
/// the file shrinks.
#[test]
fn pretrimmed_compaction_of_trimmed_blocks_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, _) = mixed();
    let len = bytes.len() as u64;
    let stats = cut_each(&case("mixed", bytes, Mode::Pretrimmed, None), &ALL_FAULTS);
    assert!(stats[0].final_len < len, "pretrimmed shrinks the file");
    assert!(report_cuts("vhdx pretrimmed", &ALL_FAULTS, &stats) >= 12);
}

#[test]
fn retrim_of_a_dynamic_vhdx_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, _) = mixed();
    let len = bytes.len() as u64;
    let stats = cut_each(&case("mixed", bytes, Mode::Retrim, None), &ALL_FAULTS);
    assert_eq!(stats[0].final_len, len, "retrim keeps the file length");
    assert!(report_cuts("vhdx retrim dynamic", &ALL_FAULTS, &stats) >= 8);
}

#[test]
fn retrim_of_a_fixed_vhdx_survives_a_crash_or_full_disk_at_every_punch() {
    let (bytes, _) = fixed();
    let stats = cut_each(&case("fixed", bytes, Mode::Retrim, None), &ALL_FAULTS);
    // Blocks 1, 5 and 6 are zeros.
    assert!(report_cuts("vhdx retrim fixed", &ALL_FAULTS, &stats) >= 3);
}

#[test]
fn full_compaction_with_fs_free_space_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, free) = mixed();
    let len = bytes.len() as u64;
    let c = case("mixed", bytes, Mode::Full, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &ALL_FAULTS);
    assert!(stats[0].final_len < len);
    eprintln!("vhdx full: free data blocks reading zeros in recovered images: {zeroed}");
    assert!(zeroed >= 10, "recoveries after the free blocks were freed");
    assert!(report_cuts("vhdx full (fs-free)", &ALL_FAULTS, &stats) >= 15);
}

#[test]
fn quick_compaction_with_fs_free_space_survives_a_crash_at_every_write() {
    let (bytes, free) = mixed();
    let c = case("mixed", bytes, Mode::Quick, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &[Fault::Crash]);
    assert!(zeroed >= 10);
    assert!(report_cuts("vhdx quick (fs-free)", &[Fault::Crash], &stats) >= 15);
}

#[test]
fn retrim_with_fs_free_space_of_a_dynamic_vhdx_survives_a_crash_at_every_write() {
    let (bytes, free) = mixed();
    let c = case("mixed", bytes, Mode::Retrim, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &[Fault::Crash]);
    assert!(zeroed >= 10);
    assert!(report_cuts("vhdx retrim dynamic (fs-free)", &[Fault::Crash], &stats) >= 8);
}

#[test]
fn retrim_with_fs_free_space_of_a_fixed_vhdx_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, free) = fixed();
    let c = case("fixed", bytes, Mode::Retrim, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &ALL_FAULTS);
    assert!(zeroed >= 2, "punched free blocks read zeros");
    assert!(report_cuts("vhdx retrim fixed (fs-free)", &ALL_FAULTS, &stats) >= 5);
}

/// Regression: retrim of a fixed VHDX punched file-system-free blocks out (so they read zeros)
/// without a new DataWriteGuid, nor a new FileWriteGuid, so children made against the old
/// content still matched it. A zero-only retrim changes no read and keeps the DataWriteGuid.
#[test]
fn retrim_of_a_fixed_vhdx_that_zeroes_fs_free_blocks_changes_the_data_write_guid() {
    let (bytes, free) = fixed();
    let before = open_ro(bytes.clone()).unwrap();
    let (dwg, fwg) = (
        data_write_guid(&*before),
        detail(&*before, "file write guid"),
    );
    drop(before);
    for fs_free in [None, Some(free.as_slice())] {
        let mem = MemFile::from_bytes(bytes.clone());
        let mut img = vdisk_vhdx::DRIVER
            .open(Box::new(mem.clone()), &OpenOptions::read_write())
            .unwrap();
        let report = compact_fs(&mut *img, Mode::Retrim, fs_free).unwrap();
        drop(img);
        let after = open_ro(mem.to_vec()).unwrap();
        if fs_free.is_some() {
            assert_eq!(report.blocks_reclaimed_fs, 3, "{report:?}");
            assert_ne!(
                data_write_guid(&*after),
                dwg,
                "reads changed: new DataWriteGuid"
            );
            assert_ne!(detail(&*after, "file write guid"), fwg, "the file changed");
        } else {
            assert_eq!(report.blocks_reclaimed_zero, 3, "{report:?}");
            assert_eq!(data_write_guid(&*after), dwg, "no read changed");
        }
    }
}
