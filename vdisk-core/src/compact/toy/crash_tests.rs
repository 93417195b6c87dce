//! The shared crash harness on the toy: every write of a toy compaction is cut (a crash with
//! several survivor policies, a disk that stays full, one failed write), and every recovered
//! file must open, pass the toy's check, read as before and finish on a re-run.

use std::ops::Range;

use super::{Entry, Geometry, ToyImage};
use crate::compact::Mode;
use crate::host_file::HostFile;
use crate::image::DiskImage;
use crate::mem_file::MemFile;
use crate::testing::{
    ALL_FAULTS, CrashCase, MayZero, blocks_inside, compact, cut_each, noise, report_cuts,
};

const BS: u64 = 5 * 512;
const BLOCKS: u64 = 20;

/// Twenty blocks (the last one short) around a table after three slots: free, zero, trimmed
/// and data blocks, held in slots in reverse order with free slots between them, so a
/// compaction frees, moves across the table and truncates.
fn original() -> (Vec<u8>, Geometry) {
    let geo = Geometry::new(BLOCKS * BS - 1024, BS, 3, 700);
    let mut table = Vec::new();
    let mut next = 0;
    let usable: Vec<u64> = (0..).filter(|&k| geo.usable(k)).take(40).collect();
    for b in 0..BLOCKS {
        let e = match b % 5 {
            0 => Entry::Free,
            k => {
                next += 1;
                Entry::Slot {
                    slot: usable[40 - 2 * next],
                    trimmed: k == 2,
                }
            }
        };
        table.push(e);
    }
    let data = |b: u64| match b % 5 {
        1 => vec![0; BS as usize],
        _ => noise(BS as usize, b + 1),
    };
    let file = MemFile::new();
    ToyImage::build(Box::new(file.clone()), geo, &table, &data, 0xab).expect("build");
    (file.to_vec(), geo)
}

fn open(file: Box<dyn HostFile>) -> crate::Result<Box<dyn DiskImage>> {
    Ok(Box::new(ToyImage::open(file)?))
}

fn errors(bytes: Vec<u8>) -> Vec<String> {
    match ToyImage::open(Box::new(MemFile::from_bytes(bytes))) {
        Err(e) => vec![e.to_string()],
        Ok(t) => t.check().unwrap().into_iter().map(|p| p.message).collect(),
    }
}

fn case<'a>(mode: Mode, fs_free: Option<Vec<Range<u64>>>) -> CrashCase<'a> {
    let (bytes, geo) = original();
    let may_zero = fs_free.as_ref().map(|f| {
        let before = ToyImage::open(Box::new(MemFile::from_bytes(bytes.clone()))).unwrap();
        let disk = crate::testing::whole_disk(&before);
        MayZero::new(disk, blocks_inside(f, BS, geo.size))
    });
    let mut c = CrashCase::new(
        format!("toy {mode}"),
        bytes,
        open,
        |b| open(Box::new(MemFile::from_bytes(b))),
        move |image| compact(image, mode, fs_free.as_deref()).map(|_| ()),
        errors,
    );
    if let Some(mz) = may_zero {
        c.content = Box::new(move |image| mz.content(image));
    }
    c
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one free range is the case under test"
)]
fn every_cut_of_a_toy_compaction_leaves_an_image_that_reads_as_before_and_finishes_on_rerun() {
    // File-system-free space over blocks 3..=8 (data, zero, trimmed alike) for the modes that
    // use it.
    let fs = vec![3 * BS..9 * BS];
    let mut fewest = u64::MAX;
    for (mode, fs_free) in [
        (Mode::Prezeroed, None),
        (Mode::Full, Some(fs.clone())),
        (Mode::Retrim, Some(fs)),
    ] {
        let c = case(mode, fs_free);
        let stats = cut_each(&c, &ALL_FAULTS);
        fewest = fewest.min(report_cuts(&c.name, &ALL_FAULTS, &stats));
        assert!(
            stats[0].final_len < c.original.len() as u64 || mode == Mode::Retrim,
            "{mode}: the file shrinks"
        );
    }
    assert!(fewest >= 5, "a toy compaction writes at least 5 times");
}
