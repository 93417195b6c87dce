//! Crash safety of the modes other than `prezeroed` (see `crash.rs` for that one): `retrim`
//! (free in place, punch holes, dynamic and fixed), `pretrimmed` (VHD has no trim state: a
//! move-only run over the holes an earlier run left, or a no-op), and the file-system-aware
//! modes `full`, `quick` and `retrim` with synthetic file-system free ranges.
//!
//! Each cuts the write stream of the whole compaction at every write, recovers what a reboot
//! could find and requires a valid image and a re-run that finishes. Byte-exact modes compare
//! the whole disk; file-system-aware ones require every byte outside the free blocks to read
//! as before and each free block to read as before or all zeros ([`MayZero`]).

use std::cell::Cell;
use std::ops::Range;

use vdisk_core::testing::{
    ALL_FAULTS, CrashCase, CrashStats, Fault, FaultyFile, MayZero, blocks_inside, cut_each,
    report_cuts,
};
use vdisk_core::{CreateSpec, FormatDriver, ImageKind, MemFile, Mode, OpenOptions};
use vdisk_vhd::DRIVER;

use super::util::{check, compact, compact_fs, content, create_dynamic, open};

const BS: u64 = 4096;
/// Blocks of the dynamic scenario.
const BLOCKS: u64 = 160;

/// A dynamic image in 4 KiB blocks, repeating an 8-block pattern: data, zeros (allocated),
/// free data, data, unallocated, free data, half-free data, free zeros; the last kept block
/// is near the end, so holes are filled by moves. Returns the image bytes and the file-system
/// free ranges (sorted, coalesced; one spans an unallocated block and half a data block).
fn mixed() -> (Vec<u8>, Vec<Range<u64>>) {
    let (img, mem) = create_dynamic(BLOCKS * BS, BS);
    let mut free: Vec<Range<u64>> = Vec::new();
    for b in 0..BLOCKS {
        let at = b * BS;
        let fill = (b % 251 + 1) as u8;
        match b % 8 {
            0 | 3 | 2 | 5 | 6 => img.write_at(&vec![fill; BS as usize], at).unwrap(),
            1 | 7 => {
                img.write_at(&[fill; 512], at).unwrap();
                img.write_at(&vec![0; BS as usize], at).unwrap();
            }
            _ => {}
        }
        match b % 8 {
            2 | 7 => free.push(at..at + BS),
            4 => free.push(at..at + 2 * BS + BS / 2),
            _ => {}
        }
    }
    drop(img);
    (mem.to_vec(), free)
}

/// A fixed image of 8 nominal 2 MiB units: data, zeros, free data, data, free data, zeros,
/// free zeros, data. Returns the bytes and the free ranges (units 2, 4 and 6).
fn fixed() -> (Vec<u8>, Vec<Range<u64>>) {
    let mem = MemFile::new();
    let img = DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Fixed, 16 << 20),
        )
        .unwrap();
    let unit = img.block_size();
    let mut free = Vec::new();
    for u in 0..img.size().div_ceil(unit) {
        let at = u * unit;
        if matches!(u, 0 | 2 | 3 | 4 | 7) {
            let fill = u8::try_from(u + 1).unwrap();
            img.write_at(&[fill; 4096], at + 4096 * u).unwrap();
        }
        if matches!(u, 2 | 4 | 6) {
            free.push(at..(at + unit).min(img.size()));
        }
    }
    drop(img);
    (mem.to_vec(), free)
}

/// A case compacting with `mode` and `fs_free` (given to the planner as the file system's free
/// space).
fn case<'a>(
    name: &str,
    bytes: Vec<u8>,
    mode: Mode,
    fs_free: Option<Vec<Range<u64>>>,
) -> CrashCase<'a> {
    CrashCase::new(
        format!("vhd {name} {mode}"),
        bytes,
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open(bytes, false),
        move |img| compact_fs(img, mode, fs_free.as_deref()).map(|_| ()),
        |bytes| check(bytes).iter().map(|p| p.to_string()).collect(),
    )
}

/// Runs `case` with the file-system-aware content check over `fs_free`, for each fault.
/// Returns the stats per fault and how many free blocks that held data read zeros in the
/// recovered images (before their re-run).
fn cut_fs_aware(
    case: CrashCase<'static>,
    fs_free: &[Range<u64>],
    faults: &[Fault],
) -> (Vec<CrashStats>, u64) {
    let image = open(case.original.clone(), false).unwrap();
    let blocks = blocks_inside(fs_free, image.block_size(), image.size());
    assert!(blocks.len() >= 3, "{}: free blocks to reclaim", case.name);
    let may = MayZero::new(content(&*image), blocks);
    drop(image);
    let zeroed = Cell::new(0);
    let mut case = case;
    case.content = Box::new(|img| may.content(img));
    case.inspect = Box::new(|n, s, bytes| {
        let image = open(bytes.to_vec(), false).unwrap();
        match may.freed(&*image) {
            Ok(z) => zeroed.set(zeroed.get() + z),
            Err(why) => panic!("cut {n} {s:?}: {why}"),
        }
    });
    let stats = cut_each(&case, faults);
    drop(case);
    (stats, zeroed.get())
}

#[test]
fn retrim_of_a_dynamic_vhd_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, _) = mixed();
    let len = bytes.len() as u64;
    let c = case("dynamic", bytes, Mode::Retrim, None);
    let stats = cut_each(&c, &ALL_FAULTS);
    assert_eq!(stats[0].final_len, len, "retrim keeps the file length");
    assert!(report_cuts("vhd retrim dynamic", &ALL_FAULTS, &stats) >= 30);
}

#[test]
fn retrim_of_a_fixed_vhd_survives_a_crash_or_full_disk_at_every_punch() {
    let (bytes, _) = fixed();
    let c = case("fixed", bytes, Mode::Retrim, None);
    let stats = cut_each(&c, &ALL_FAULTS);
    // Units 1, 5 and 6 are zeros.
    assert!(report_cuts("vhd retrim fixed", &ALL_FAULTS, &stats) >= 3);
}

/// VHD has no trim state: `pretrimmed` frees nothing, but moves blocks into the holes an
/// earlier in-place run (here a retrim) left, and truncates. That move-only run is cut.
#[test]
fn pretrimmed_move_only_run_over_retrim_holes_survives_a_crash_at_every_write() {
    let (bytes, _) = mixed();
    let mut img = open(bytes, true).unwrap();
    let r = compact(&mut *img, Mode::Retrim).unwrap();
    assert!(r.blocks_reclaimed > 30);
    let mut holed = vec![0u8; usize::try_from(img.host_file().len().unwrap()).unwrap()];
    img.host_file().read_at(&mut holed, 0).unwrap();
    drop(img);
    let len = holed.len() as u64;
    let c = case("holed", holed, Mode::Pretrimmed, None);
    let stats = cut_each(&c, &ALL_FAULTS);
    assert!(
        stats[0].final_len < len,
        "the move-only run shrinks the file"
    );
    assert!(report_cuts("vhd pretrimmed move-only", &ALL_FAULTS, &stats) >= 30);
}

/// On an image without holes `pretrimmed` has nothing to do: it writes nothing at all.
#[test]
fn pretrimmed_on_a_vhd_without_holes_writes_nothing() {
    let (bytes, _) = mixed();
    let f = FaultyFile::new(bytes.clone());
    let mut img = DRIVER
        .open(Box::new(f.clone()), &OpenOptions::read_write())
        .unwrap();
    let r = compact(&mut *img, Mode::Pretrimmed).unwrap();
    drop(img);
    assert_eq!((r.blocks_reclaimed, r.blocks_moved), (0, 0));
    assert_eq!(f.ops(), 0, "no write, no resize, no punch");
    assert!(f.live_bytes() == bytes);
}

#[test]
fn full_compaction_with_fs_free_space_survives_a_crash_or_full_disk_at_every_write() {
    let (bytes, free) = mixed();
    let len = bytes.len() as u64;
    let c = case("mixed", bytes, Mode::Full, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &ALL_FAULTS);
    assert!(stats[0].final_len < len);
    eprintln!("vhd full: free data blocks reading zeros in recovered images: {zeroed}");
    assert!(zeroed > 100, "recoveries after the free blocks were freed");
    assert!(report_cuts("vhd full (fs-free)", &ALL_FAULTS, &stats) >= 35);
}

#[test]
fn quick_compaction_with_fs_free_space_survives_a_crash_at_every_write() {
    let (bytes, free) = mixed();
    let c = case("mixed", bytes, Mode::Quick, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &[Fault::Crash]);
    assert!(zeroed > 100);
    assert!(report_cuts("vhd quick (fs-free)", &[Fault::Crash], &stats) >= 35);
}

#[test]
fn retrim_with_fs_free_space_of_a_dynamic_vhd_survives_a_crash_at_every_write() {
    let (bytes, free) = mixed();
    let c = case("mixed", bytes, Mode::Retrim, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &[Fault::Crash]);
    assert!(zeroed > 100);
    assert!(report_cuts("vhd retrim dynamic (fs-free)", &[Fault::Crash], &stats) >= 30);
}

#[test]
fn retrim_with_fs_free_space_of_a_fixed_vhd_survives_a_crash_or_full_disk_at_every_punch() {
    let (bytes, free) = fixed();
    let c = case("fixed", bytes, Mode::Retrim, Some(free.clone()));
    let (stats, zeroed) = cut_fs_aware(c, &free, &ALL_FAULTS);
    assert!(zeroed > 0, "punched free units read zeros");
    assert!(report_cuts("vhd retrim fixed (fs-free)", &ALL_FAULTS, &stats) >= 5);
}

/// An operation that is not crash safe: it writes garbage over 16 guest bytes at `at`, syncs,
/// and only then puts the old bytes back.
fn garbage_for_a_moment(at: u64) -> vdisk_core::testing::Operation<'static> {
    Box::new(move |img| {
        let mut old = [0u8; 16];
        img.read_at(&mut old, at)?;
        img.write_at(&[0x5a; 16], at)?;
        img.host_file().sync()?;
        img.write_at(&old, at)?;
        img.host_file().sync()
    })
}

/// The file-system-aware checks can fail: garbage (not zeros) in a free block is reported by
/// the per-block check, a change outside the free blocks by the content check, and the content
/// check alone also tells garbage in a free block from zeros.
#[test]
fn fs_aware_crash_checks_catch_garbage_in_and_changes_outside_free_blocks() {
    let (bytes, free) = mixed();
    for (at, expected) in [
        (free[0].start, "reads neither as before nor as zeros"),
        (0, "content changed"),
    ] {
        let mut c = case("mixed", bytes.clone(), Mode::Full, Some(free.clone()));
        c.operation = garbage_for_a_moment(at);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cut_fs_aware(c, &free, &[Fault::Crash])
        }));
        let message = caught
            .expect_err("a torn state must be reported")
            .downcast::<String>()
            .map(|m| *m)
            .unwrap_or_default();
        assert!(
            message.contains("cut 2") && message.contains(expected),
            "at {at}: {message}"
        );
    }
    let original = open(bytes.clone(), false).unwrap();
    let may = MayZero::new(content(&*original), blocks_inside(&free, BS, BLOCKS * BS));
    let model = may.content(&*original);
    let img = open(bytes, true).unwrap();
    img.write_at(&[0x5a], free[0].start + 100).unwrap();
    assert!(may.content(&*img) != model, "garbage in a free block");
    img.write_at(&vec![0; BS as usize], free[0].start).unwrap();
    assert!(may.content(&*img) == model, "zeros in a free block");
}
