//! Crash safety: cut the write stream of a whole compaction at every point, recover what a
//! reboot could find, and require a valid image with the original content that a re-run
//! compacts to the same result.

use vdisk_core::testing::{CrashCase, Fault, FaultyFile, Survivors, cut_every_write};
use vdisk_core::{ErrorKind, FormatDriver, Mode, OpenOptions};
use vdisk_vhd::DRIVER;

use super::compaction::{Write, scenario};
use super::util::{check, compact, content, create_dynamic, open, open_file};

fn scenarios() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // Alternating data and zero blocks, data at the end: frees, many moves, truncation.
    let bs = 4096u64;
    let (img, mem) = create_dynamic(400 * bs, bs);
    for b in 0..400u64 {
        let byte = if b % 3 == 1 { 0 } else { (b % 251 + 1) as u8 };
        img.write_at(&vec![byte; 512], b * bs + (b % 8) * 512)
            .unwrap();
    }
    out.push((mem.to_vec(), content(&*img)));
    drop(img);
    // Mixed writes with a partial last block and 64 KiB blocks.
    let writes: Vec<Write> = vec![
        (0.0, 70_000, 9),
        (0.2, 65_536, 0),
        (0.45, 200_000, 0),
        (0.5, 10, 3),
        (0.999, 5000, 4),
    ];
    out.push(scenario(1_000_000, 64 << 10, &writes));
    out
}

fn case(si: usize, bytes: Vec<u8>) -> CrashCase<'static> {
    CrashCase::new(
        format!("vhd scenario {si}"),
        bytes,
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open(bytes, false),
        |img| compact(img, Mode::Prezeroed).map(|_| ()),
        |bytes| check(bytes).iter().map(|p| p.to_string()).collect(),
    )
}

#[test]
fn compaction_survives_a_crash_at_every_write() {
    let (mut cut_points, mut recoveries) = (0, 0);
    for (si, (bytes, _)) in scenarios().into_iter().enumerate() {
        let original_len = bytes.len() as u64;
        let stats = cut_every_write(&case(si, bytes), Fault::Crash);
        assert!(stats.final_len < original_len, "scenario {si} shrinks");
        cut_points += stats.cut_points;
        recoveries += stats.recoveries;
    }
    eprintln!("vhd prezeroed crash cut points tested: {cut_points} ({recoveries} recoveries)");
    assert!(cut_points > 100);
}

/// The disk fills up at write N and stays full: every later write fails too (so nothing the
/// run does after the first failure may be needed for a valid image).
#[test]
fn compaction_on_a_disk_that_stays_full_from_any_write_leaves_a_valid_image() {
    let mut cut_points = 0;
    for (si, (bytes, _)) in scenarios().into_iter().enumerate() {
        let c = case(si, bytes);
        cut_points += cut_every_write(&c, Fault::FailAlways(ErrorKind::NoSpace)).cut_points;
    }
    eprintln!("vhd prezeroed disk-full-from-then-on cut points tested: {cut_points}");
    assert!(cut_points > 100);
}

#[test]
fn compaction_failing_for_lack_of_space_at_any_write_leaves_a_valid_image() {
    let mut cut_points = 0;
    for (si, (bytes, _)) in scenarios().into_iter().enumerate() {
        let stats = cut_every_write(&case(si, bytes), Fault::FailOnce(ErrorKind::NoSpace));
        cut_points += stats.cut_points;
    }
    eprintln!("vhd prezeroed no-space cut points tested: {cut_points}");
    assert!(cut_points > 100);
}

/// The harness itself can fail: an operation that breaks the dynamic header for a moment
/// (not crash safe) is caught at the cut between its two writes.
#[test]
fn crash_harness_catches_an_operation_that_is_not_crash_safe() {
    let (bytes, _) = scenarios().swap_remove(0);
    let mut c = case(0, bytes);
    c.operation = Box::new(|img| {
        let f = img.host_file();
        let mut header = [0u8; 1024];
        f.read_at(&mut header, 512)?;
        f.write_at(&[0xff; 1024], 512)?;
        f.sync()?;
        f.write_at(&header, 512)?;
        f.sync()
    });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cut_every_write(&c, Fault::Crash)
    }));
    let message = caught
        .expect_err("a torn dynamic header must be reported")
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("cut 2/2") && message.contains(": reopen: no dynamic header"),
        "caught where the header is torn, on reopen: {message}"
    );
}

#[test]
fn allocating_write_survives_a_crash_at_every_step() {
    let bs = 4096u64;
    let (img, mem) = create_dynamic(16 * bs, bs);
    img.write_at(&[5; 100], 0).unwrap();
    let base = mem.to_vec();
    let old = content(&*img);
    drop(img);
    let (off, data) = (3 * bs + 17, vec![0xabu8; 5000]); // spans two new blocks
    let mut new = old.clone();
    new[off as usize..off as usize + data.len()].copy_from_slice(&data);
    let counter = FaultyFile::new(base.clone());
    open_file(counter.clone())
        .unwrap()
        .write_at(&data, off)
        .unwrap();
    let total = counter.ops();
    for n in 1..=total {
        let f = FaultyFile::new(base.clone());
        let img = open_file(f.clone()).unwrap();
        f.set_limit(n, Fault::Crash);
        assert!(img.write_at(&data, off).is_err());
        drop(img);
        for s in [
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(1),
            Survivors::Mask(0b1010),
        ] {
            let got =
                open(f.after_crash(s), true).unwrap_or_else(|e| panic!("cut {n}, {s:?}: {e}"));
            let c = content(&*got);
            // Each block shows either its old or its new content, never anything else.
            for b in 0..16usize {
                let r = b * bs as usize..(b + 1) * bs as usize;
                assert!(
                    c[r.clone()] == old[r.clone()] || c[r.clone()] == new[r.clone()],
                    "cut {n}, {s:?}, block {b}"
                );
            }
            // The recovered image still takes the write.
            got.write_at(&data, off).unwrap();
            assert!(content(&*got) == new);
        }
    }
}

#[test]
fn allocating_write_failing_for_lack_of_space_can_be_retried() {
    let bs = 4096u64;
    let (img, mem) = create_dynamic(16 * bs, bs);
    img.write_at(&[5; 100], 0).unwrap();
    let base = mem.to_vec();
    drop(img);
    let (off, data) = (3 * bs + 17, vec![0xabu8; 5000]);
    let counter = FaultyFile::new(base.clone());
    let img = open_file(counter.clone()).unwrap();
    img.write_at(&data, off).unwrap();
    let new = content(&*img);
    let total = counter.ops();
    drop(img);
    for n in 1..=total {
        let f = FaultyFile::new(base.clone());
        let img = open_file(f.clone()).unwrap();
        f.set_limit(n, Fault::FailOnce(ErrorKind::NoSpace));
        let err = img.write_at(&data, off).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        img.write_at(&data, off).unwrap();
        assert!(content(&*img) == new, "op {n}: retried write reads back");
        drop(img);
        let again = open(f.live_bytes(), false).unwrap();
        assert!(content(&*again) == new, "op {n}: reopened");
        assert!(check(f.live_bytes()).is_empty(), "op {n}");
    }
}
