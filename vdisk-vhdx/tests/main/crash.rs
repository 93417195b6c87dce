//! Crash safety: cut the write stream of a whole compaction at every point, recover what a
//! reboot could find, and require an image that opens (replaying its log), reads the same,
//! passes our check, and compacts to the same result when the run is repeated.

use vdisk_core::testing::{Fault, FaultyFile, Survivors};
use vdisk_core::{DiskImage, ErrorKind, MIB, MemFile, Mode};

use super::qemu::make;
use super::util::{
    check_errors, compact, content, log_detail, open_bytes, open_rw, qemu_convert_raw, run,
};

/// qemu-made images with zero blocks among data blocks, so compaction frees, moves (in more
/// than one relocate batch for the second) and truncates.
fn scenarios() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let mut cmds = Vec::new();
    for b in 0..14u64 {
        let fill = if b % 3 == 1 { 0 } else { b + 1 };
        cmds.push(format!("write -P {fill} {} 4096", b * MIB + (b % 4) * 4096));
    }
    cmds.push(format!("write -z {} 1M", 4 * MIB));
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (p, _) = make(dir.path(), "a.vhdx", "block_size=1M", 14 * MIB + 512, &cmds);
    out.push(std::fs::read(p).unwrap());
    let cmds = [
        "write -P 0 0 2M",
        "write -P 5 2M 1M",
        "write -P 0 3M 1M",
        "write -P 6 5M 4k",
    ];
    let (p, _) = make(dir.path(), "b.vhdx", "block_size=2M", 8 * MIB, &cmds);
    out.push(std::fs::read(p).unwrap());
    let mut cmds = Vec::new();
    for b in (0..24u64).rev() {
        let fill = if b % 5 < 2 { 0 } else { b + 1 };
        cmds.push(format!("write -P {fill} {} 512", b * MIB + 65536));
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (p, _) = make(dir.path(), "c.vhdx", "block_size=1M", 24 * MIB, &cmds);
    out.push(std::fs::read(p).unwrap());
    out
}

fn bytes_of(image: &dyn DiskImage) -> Vec<u8> {
    let f = image.host_file();
    let mut b = vec![0u8; f.len().unwrap() as usize];
    f.read_at(&mut b, 0).unwrap();
    b
}

fn compact_bytes(bytes: Vec<u8>) -> Vec<u8> {
    let mut img = open_rw(MemFile::from_bytes(bytes)).unwrap();
    compact(&mut *img, Mode::Prezeroed).unwrap();
    bytes_of(&*img)
}

fn assert_recovered(bytes: Vec<u8>, model: &[u8], final_len: usize, what: &str) {
    let img = open_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(content(&*img) == model, "{what}: content changed");
    drop(img);
    let errors = check_errors(bytes.clone());
    assert!(errors.is_empty(), "{what}: check: {errors:?}");
    let done = compact_bytes(bytes);
    let img = open_bytes(&done).unwrap();
    assert!(
        content(&*img) == model,
        "{what}: content changed by the re-run"
    );
    assert_eq!(log_detail(&*img), "empty", "{what}: log emptied");
    assert_eq!(
        done.len(),
        final_len,
        "{what}: re-run reaches the same size"
    );
    assert!(check_errors(done).is_empty(), "{what}: check after re-run");
}

#[test]
fn compaction_survives_a_crash_at_every_write() {
    let mut cut_points = 0;
    let mut recoveries = 0;
    for (si, bytes) in scenarios().into_iter().enumerate() {
        let model = content(&*open_bytes(&bytes).unwrap());
        let counter = FaultyFile::new(bytes.clone());
        let mut img = open_rw(counter.clone()).unwrap();
        compact(&mut *img, Mode::Prezeroed).unwrap();
        let total = counter.ops();
        let final_len = counter.live_bytes().len();
        assert!(final_len < bytes.len(), "scenario {si} shrinks");
        drop(img);
        for n in 1..=total {
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_rw(f.clone()).unwrap();
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
                recoveries += 1;
            }
            cut_points += 1;
        }
    }
    eprintln!("crash cut points tested: {cut_points} ({recoveries} recoveries)");
    assert!(cut_points >= 50);
}

#[test]
fn compaction_failing_for_lack_of_space_at_any_write_leaves_a_valid_image() {
    for (si, bytes) in scenarios().into_iter().enumerate() {
        let model = content(&*open_bytes(&bytes).unwrap());
        let counter = FaultyFile::new(bytes.clone());
        let mut img = open_rw(counter.clone()).unwrap();
        compact(&mut *img, Mode::Prezeroed).unwrap();
        let total = counter.ops();
        let final_len = counter.live_bytes().len();
        drop(img);
        for n in 1..=total {
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_rw(f.clone()).unwrap();
            f.set_limit(n, Fault::FailOnce(ErrorKind::NoSpace));
            let err = compact(&mut *img, Mode::Prezeroed).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NoSpace, "scenario {si} op {n}");
            // The same open image stays consistent with its file and a second run finishes.
            assert!(
                content(&*img) == model,
                "scenario {si} op {n}: in-memory view"
            );
            compact(&mut *img, Mode::Prezeroed).unwrap();
            assert!(content(&*img) == model);
            drop(img);
            let live = f.live_bytes();
            assert_eq!(live.len(), final_len, "scenario {si} op {n}: same size");
            assert!(check_errors(live.clone()).is_empty());
            assert_eq!(log_detail(&*open_bytes(&live).unwrap()), "empty");
            // Or a fresh open of what the failed run left.
            let f = FaultyFile::new(bytes.clone());
            let mut img = open_rw(f.clone()).unwrap();
            f.set_limit(n, Fault::FailOnce(ErrorKind::NoSpace));
            assert!(compact(&mut *img, Mode::Prezeroed).is_err());
            drop(img);
            let what = format!("scenario {si}, no space at op {n}/{total}");
            assert_recovered(f.live_bytes(), &model, final_len, &what);
        }
    }
}

/// Crash images whose log is pending are replayed by qemu (`qemu-img check -r all`) to the
/// same content our reader gives: the entries we write follow MS-VHDX as qemu reads it.
#[test]
fn qemu_replays_the_log_entries_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = scenarios().swap_remove(0);
    let model = content(&*open_bytes(&bytes).unwrap());
    let counter = FaultyFile::new(bytes.clone());
    let mut img = open_rw(counter.clone()).unwrap();
    compact(&mut *img, Mode::Prezeroed).unwrap();
    let total = counter.ops();
    drop(img);
    let mut pending_logs = 0;
    for n in 1..=total {
        let f = FaultyFile::new(bytes.clone());
        let mut img = open_rw(f.clone()).unwrap();
        f.set_limit(n, Fault::Crash);
        assert!(compact(&mut *img, Mode::Prezeroed).is_err());
        drop(img);
        for (si, s) in [Survivors::SyncedOnly, Survivors::All]
            .into_iter()
            .enumerate()
        {
            let crashed = f.after_crash(s);
            if !log_detail(&*open_bytes(&crashed).unwrap()).contains("pending") {
                continue;
            }
            pending_logs += 1;
            let path = dir.path().join(format!("c{n}-{si}.vhdx"));
            std::fs::write(&path, &crashed).unwrap();
            let p = path.to_str().unwrap();
            run("qemu-img", &["check", "-q", "-r", "all", "-f", "vhdx", p]);
            let raw = dir.path().join(format!("c{n}-{si}.raw"));
            qemu_convert_raw(p, &raw);
            assert!(
                std::fs::read(&raw).unwrap() == model,
                "cut {n} {s:?}: qemu's replay differs"
            );
            let repaired = std::fs::read(&path).unwrap();
            assert_eq!(log_detail(&*open_bytes(&repaired).unwrap()), "empty");
            assert!(content(&*open_bytes(&repaired).unwrap()) == model);
        }
    }
    eprintln!("pending logs replayed by qemu: {pending_logs}");
    assert!(pending_logs >= 5);
}

/// A writable open replays a pending log onto the file; a crash anywhere in that replay or
/// in the compaction after it leaves an image that reads as the replayed log says.
#[test]
fn dirty_log_replay_and_compaction_survive_a_crash_at_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = super::util::fixture(dir.path(), "iotest-dirtylog-10G-4M.vhdx");
    let bytes = std::fs::read(&path).unwrap();
    let n_check = 40 * MIB as usize;
    let model = super::util::read(&*open_bytes(&bytes).unwrap(), 0, n_check);
    let run_all = |f: &FaultyFile| -> vdisk_core::Result<()> {
        let mut img = open_rw(f.clone())?;
        compact(&mut *img, Mode::Prezeroed).map(|_| ())
    };
    let counter = FaultyFile::new(bytes.clone());
    run_all(&counter).unwrap();
    let total = counter.ops();
    let mut cuts = 0;
    for n in 1..=total {
        let f = FaultyFile::new(bytes.clone());
        f.set_limit(n, Fault::Crash);
        assert!(run_all(&f).is_err(), "cut {n} fires");
        for s in [Survivors::SyncedOnly, Survivors::All, Survivors::Prefix(1)] {
            let after = f.after_crash(s);
            let img = open_bytes(&after).unwrap_or_else(|e| panic!("cut {n} {s:?}: {e}"));
            assert!(
                super::util::read(&*img, 0, n_check) == model,
                "cut {n} {s:?}: content"
            );
            drop(img);
            assert!(check_errors(after.clone()).is_empty(), "cut {n} {s:?}");
            let done = compact_bytes(after);
            let img = open_bytes(&done).unwrap();
            assert_eq!(log_detail(&*img), "empty");
            assert!(super::util::read(&*img, 0, n_check) == model);
        }
        cuts += 1;
    }
    eprintln!("dirty-log cut points tested: {cuts}");
    assert!(cuts >= 5);
}
