//! Crash safety: cut the write stream of a whole compaction at every point, recover what a
//! reboot could find, and require a valid image with the original content that a re-run
//! compacts to the same result.

use vdisk_core::testing::{Fault, FaultyFile, Survivors};
use vdisk_core::{ErrorKind, Mode};

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

fn compact_bytes(bytes: Vec<u8>) -> Vec<u8> {
    let mut img = open(bytes, true).unwrap();
    compact(&mut *img, Mode::Prezeroed).unwrap();
    let mut b = vec![0u8; img.host_file().len().unwrap() as usize];
    img.host_file().read_at(&mut b, 0).unwrap();
    b
}

fn assert_recovered(bytes: Vec<u8>, model: &[u8], final_len: usize, what: &str) {
    let img = open(bytes.clone(), false).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(content(&*img) == model, "{what}: content changed");
    drop(img);
    let done = compact_bytes(bytes);
    let img = open(done.clone(), false).unwrap();
    assert!(
        content(&*img) == model,
        "{what}: content changed by the re-run"
    );
    assert_eq!(
        done.len(),
        final_len,
        "{what}: re-run reaches the same size"
    );
    assert!(check(done).is_empty(), "{what}: check after re-run");
}

#[test]
fn compaction_survives_a_crash_at_every_write() {
    let mut cut_points = 0;
    for (si, (bytes, model)) in scenarios().into_iter().enumerate() {
        let counter = FaultyFile::new(bytes.clone());
        let mut img = open_file(counter.clone()).unwrap();
        compact(&mut *img, Mode::Prezeroed).unwrap();
        let total = counter.ops();
        let final_len = counter.live_bytes().len();
        assert!(final_len < bytes.len());
        drop(img);
        for n in 1..=total {
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_file(f.clone()).unwrap();
            f.set_limit(n, Fault::Crash);
            assert!(
                compact(&mut *img, Mode::Prezeroed).is_err(),
                "cut {n} fires"
            );
            drop(img);
            let pending = f.pending();
            let variants = [
                Survivors::SyncedOnly,
                Survivors::All,
                Survivors::Prefix(1),
                Survivors::Prefix(pending / 2),
                Survivors::Mask(0x5555_5555_5555_5555),
                Survivors::Mask(0xaaaa_aaaa_aaaa_aaaa),
            ];
            for s in variants {
                let what = format!("scenario {si}, cut {n}/{total}, {s:?}");
                assert_recovered(f.after_crash(s), &model, final_len, &what);
            }
            cut_points += 1;
        }
    }
    eprintln!("crash cut points tested: {cut_points}");
    assert!(cut_points > 100);
}

#[test]
fn compaction_failing_for_lack_of_space_at_any_write_leaves_a_valid_image() {
    for (si, (bytes, model)) in scenarios().into_iter().enumerate() {
        let counter = FaultyFile::new(bytes.clone());
        let mut img = open_file(counter.clone()).unwrap();
        compact(&mut *img, Mode::Prezeroed).unwrap();
        let total = counter.ops();
        let final_len = counter.live_bytes().len();
        drop(img);
        for n in 1..=total {
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_file(f.clone()).unwrap();
            f.set_limit(n, Fault::FailOnce(ErrorKind::NoSpace));
            let err = compact(&mut *img, Mode::Prezeroed).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NoSpace, "scenario {si} op {n}");
            // The same open image stays consistent with its file: it reads the same and a
            // second run finishes the job.
            assert!(
                content(&*img) == model,
                "scenario {si} op {n}: in-memory view"
            );
            compact(&mut *img, Mode::Prezeroed).unwrap();
            assert!(content(&*img) == model);
            assert_eq!(
                f.live_bytes().len(),
                final_len,
                "scenario {si} op {n}: same size"
            );
            assert!(check(f.live_bytes()).is_empty());
            drop(img);
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_file(f.clone()).unwrap();
            f.set_limit(n, Fault::FailOnce(ErrorKind::NoSpace));
            assert!(compact(&mut *img, Mode::Prezeroed).is_err());
            drop(img);
            let what = format!("scenario {si}, no space at op {n}/{total}");
            assert_recovered(f.live_bytes(), &model, final_len, &what);
        }
    }
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
