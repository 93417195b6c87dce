//! Crash safety of a child's compaction: cut the write stream at every point, recover what a
//! reboot could find, and require a child that opens over its parent, reads the same through
//! the chain, passes our check, and compacts to the same size when the run is repeated.

use std::path::Path;

use vdisk_core::testing::{Fault, FaultyFile, Survivors};
use vdisk_core::{
    DiskImage, FormatDriver, HostFile, MIB, MemFile, Mode, OpenOptions, ParentPolicy, Result,
};

use super::diff::{base, child, write};
use super::util::{check_errors, compact, content, log_detail};

/// Opens child bytes in `file` over the parent at `parent` (named explicitly: an in-memory
/// child has no folder to look in).
fn open_child(
    file: impl HostFile + 'static,
    parent: &Path,
    writable: bool,
) -> Result<Box<dyn DiskImage>> {
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    let opts = opts.with_parents(ParentPolicy {
        explicit: Some(parent.to_path_buf()),
        allowed_dirs: Vec::new(),
    });
    vdisk_vhdx::DRIVER.open(Box::new(file), &opts)
}

fn bytes_of(image: &dyn DiskImage) -> Vec<u8> {
    let f = image.host_file();
    let mut b = vec![0u8; f.len().unwrap() as usize];
    f.read_at(&mut b, 0).unwrap();
    b
}

#[test]
fn child_compaction_survives_a_crash_at_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let bs = MIB as usize;
    let a = base(dir.path(), "a.vhdx", 12 * MIB, MIB);
    let parent_data: Vec<u8> = (0..12 * bs).map(|i| (i / 4096) as u8 | 1).collect();
    write(&a, &[(0, parent_data.clone())]);
    let b = child(dir.path(), "b.vhdx", &a);
    // Written in an order that scatters them in the file, so that survivors move.
    let mut writes = Vec::new();
    for blk in [9usize, 1, 4, 2, 10, 3, 7, 5, 11, 6] {
        let r = blk * bs..(blk + 1) * bs;
        let data = match blk {
            // Same as the parent: freed to NOT_PRESENT.
            1 | 3 | 5 => parent_data[r.clone()].to_vec(),
            // Zeros over parent data: freed to ZERO.
            2 | 7 => vec![0; bs],
            // Own data: kept, and moved where they lie after a hole.
            _ => vec![blk as u8 * 17; bs],
        };
        writes.push((r.start as u64, data));
    }
    write(&b, &writes);
    // Partial blocks too: one that moves (10) and one that reads like the parent (5).
    super::diff_cases::make_partial(&b, 10, &[0, 1, 2, 1000]);
    super::diff_cases::make_partial(&b, 5, &[0, 9]);
    let bytes = std::fs::read(&b).unwrap();
    let model = content(&*open_child(MemFile::from_bytes(bytes.clone()), &a, false).unwrap());

    let counter = FaultyFile::new(bytes.clone());
    let mut image = open_child(counter.clone(), &a, true).unwrap();
    let report = compact(&mut *image, Mode::Prezeroed).unwrap();
    assert!(
        report.blocks_reclaimed_parent == 3 && report.blocks_reclaimed_zero == 2,
        "{report:?}"
    );
    assert!(report.blocks_moved >= 1, "{report:?}");
    drop(image);
    let total = counter.ops();
    let final_len = counter.live_bytes().len();
    assert!(final_len < bytes.len(), "the child shrinks");

    let mut cuts = 0;
    for n in 1..=total {
        let f = FaultyFile::new(bytes.clone());
        let mut image = open_child(f.clone(), &a, true).unwrap();
        f.set_limit(n, Fault::Crash);
        assert!(
            compact(&mut *image, Mode::Prezeroed).is_err(),
            "cut {n} fires"
        );
        drop(image);
        let pending = f.pending();
        for s in [
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(pending / 2),
            Survivors::Mask(0x5555_5555_5555_5555),
        ] {
            let what = format!("cut {n}/{total} {s:?}");
            let after = f.after_crash(s);
            let image = open_child(MemFile::from_bytes(after.clone()), &a, false)
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert!(
                content(&*image) == model,
                "{what}: content through the chain"
            );
            drop(image);
            let errors = check_errors(after.clone());
            assert!(errors.is_empty(), "{what}: check: {errors:?}");
            let mut image = open_child(MemFile::from_bytes(after), &a, true).unwrap();
            compact(&mut *image, Mode::Prezeroed).unwrap();
            let done = bytes_of(&*image);
            assert!(content(&*image) == model, "{what}: re-run content");
            drop(image);
            assert_eq!(
                done.len(),
                final_len,
                "{what}: re-run reaches the same size"
            );
            let image = open_child(MemFile::from_bytes(done), &a, false).unwrap();
            assert_eq!(log_detail(&*image), "empty", "{what}: log emptied");
        }
        cuts += 1;
    }
    eprintln!("child compaction cut points tested: {cuts}");
    assert!(cuts >= 15);
    // The parent was never written.
    assert!(content(&*super::diff::open(&a, false).unwrap()) == parent_data);
}

#[test]
fn child_writes_survive_a_crash_at_every_write_showing_old_or_new_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let bs = MIB as usize;
    let a = base(dir.path(), "a.vhdx", 4 * MIB, MIB);
    write(&a, &[(0, vec![0x11; 4 * bs])]);
    let b = child(dir.path(), "b.vhdx", &a);
    write(&b, &[(2 * MIB, vec![0x22; bs])]);
    super::diff_cases::make_partial(&b, 2, &[0, 1, 2]);
    let bytes = std::fs::read(&b).unwrap();
    let old = content(&*open_child(MemFile::from_bytes(bytes.clone()), &a, false).unwrap());
    // A write spanning a NOT_PRESENT block (filled from the parent around it), a partial block
    // (completed from the parent), and a zero write over parent data in block 3.
    let writes: [(u64, Vec<u8>); 2] = [
        (MIB + 1000, vec![0x33; bs]),
        (3 * MIB + 4096, vec![0; 8192]),
    ];
    let run = |f: &FaultyFile| -> Result<()> {
        let image = open_child(f.clone(), &a, true)?;
        for (at, data) in &writes {
            image.write_at(data, *at)?;
        }
        image.flush()
    };
    let counter = FaultyFile::new(bytes.clone());
    run(&counter).unwrap();
    let new = content(&*open_child(MemFile::from_bytes(counter.live_bytes()), &a, false).unwrap());
    assert!(new != old);
    let total = counter.ops();
    for n in 1..=total {
        let f = FaultyFile::new(bytes.clone());
        f.set_limit(n, Fault::Crash);
        assert!(run(&f).is_err(), "cut {n} fires");
        for s in [Survivors::SyncedOnly, Survivors::All, Survivors::Prefix(1)] {
            let what = format!("cut {n}/{total} {s:?}");
            let after = f.after_crash(s);
            assert!(check_errors(after.clone()).is_empty(), "{what}: check");
            let got = content(&*open_child(MemFile::from_bytes(after), &a, false).unwrap());
            // Per block: the old content or the new, except inside the written bytes of a
            // block already holding its own data in place (torn, as on any disk).
            for blk in 0..4 {
                let r = blk * bs..(blk + 1) * bs;
                let (g, o, w) = (&got[r.clone()], &old[r.clone()], &new[r]);
                let torn_ok = blk == 2
                    && g.iter()
                        .zip(o.iter().zip(w))
                        .all(|(g, (o, w))| g == o || g == w);
                assert!(
                    g == o || g == w || torn_ok,
                    "{what}: block {blk} is neither"
                );
            }
        }
    }
    eprintln!("child write cut points tested: {total}");
}
