//! Crash safety through core's shared harness: a VDI compaction is cut at every write (a
//! crash with several choices of surviving unsynced writes, a disk that stays full, one write
//! failing for lack of space), and every recovered file must open, read as before, check
//! clean and compact again to the same length.

use vdisk_core::testing::{ALL_FAULTS, CrashCase, cut_each, report_cuts};
use vdisk_core::{DiskImage, FormatDriver, ImageKind, Mode, OpenOptions};
use vdisk_vdi::DRIVER;

use super::util::{compact, compact_fs, create, errors, open};

/// A dynamic image of 4 KiB blocks: data, zero and zero-after-data blocks interleaved, data
/// at the end, so a compaction frees, moves many blocks, lowers the count and truncates.
fn scenario() -> Vec<u8> {
    let bs = 4096u64;
    let (img, mem) = create(ImageKind::Dynamic, 48 * bs, bs);
    for b in 0..48u64 {
        let byte = if b % 3 == 1 { 0 } else { (b % 251 + 1) as u8 };
        img.write_at(&vec![byte; 512], b * bs + (b % 8) * 512)
            .unwrap();
    }
    img.write_at(&vec![0u8; 4096], 6 * bs).unwrap();
    drop(img);
    mem.to_vec()
}

fn case(name: &str, bytes: Vec<u8>, mode: Mode) -> CrashCase<'static> {
    CrashCase::new(
        format!("vdi {name}"),
        bytes,
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open(bytes, false),
        move |img: &mut dyn DiskImage| compact(img, mode).map(|_| ()),
        errors,
    )
}

#[test]
fn prezeroed_compaction_survives_a_cut_at_every_write_with_every_fault() {
    let original = scenario();
    let len = original.len() as u64;
    let c = case("prezeroed", original, Mode::Prezeroed);
    let stats = cut_each(&c, &ALL_FAULTS);
    assert!(stats[0].final_len < len, "the scenario shrinks");
    assert!(report_cuts("vdi prezeroed", &ALL_FAULTS, &stats) > 10);
}

/// File-system free blocks with data in them are dropped (they may read zeros afterwards), so
/// the content compared at every cut leaves those blocks out.
#[test]
fn full_compaction_with_file_system_free_space_survives_a_cut_at_every_write() {
    let bs = 4096u64;
    let original = scenario();
    // Blocks 20..30 are free in the "file system": their data may vanish, nothing else.
    let free: Vec<std::ops::Range<u64>> = std::iter::once(20 * bs..30 * bs).collect();
    let outside = move |img: &dyn DiskImage| {
        let mut all = vec![0u8; img.size() as usize];
        img.read_at(&mut all, 0).unwrap();
        all[20 * 4096..30 * 4096].fill(0);
        all
    };
    let mut c = CrashCase::new(
        "vdi full with fs free",
        original,
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open(bytes, false),
        move |img: &mut dyn DiskImage| compact_fs(img, Mode::Full, Some(&free)).map(|_| ()),
        errors,
    );
    c.content = Box::new(outside);
    let stats = cut_each(&c, &[vdisk_core::testing::Fault::Crash]);
    assert!(report_cuts("vdi full", &[vdisk_core::testing::Fault::Crash], &stats) > 10);
}

#[test]
fn an_allocating_write_survives_a_cut_at_every_write() {
    let bs = 4096u64;
    let (img, mem) = create(ImageKind::Dynamic, 16 * bs, bs);
    img.write_at(&[5; 100], 0).unwrap();
    drop(img);
    let c = CrashCase::new(
        "vdi allocating write",
        mem.to_vec(),
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open(bytes, false),
        |img: &mut dyn DiskImage| {
            // Idempotent: the re-run writes the same bytes.
            img.write_at(&[7; 3000], 9 * 4096 + 100)
        },
        errors,
    );
    // Content must equal the original or the finished write: compare only outside the write.
    let mut c = c;
    c.content = Box::new(|img: &dyn DiskImage| {
        let mut all = vec![0u8; img.size() as usize];
        img.read_at(&mut all, 0).unwrap();
        all[9 * 4096..10 * 4096].fill(0);
        all
    });
    let stats = cut_each(&c, &ALL_FAULTS);
    assert!(report_cuts("vdi write", &ALL_FAULTS, &stats) >= 3);
}
