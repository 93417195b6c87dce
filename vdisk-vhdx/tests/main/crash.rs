//! Crash safety: cut the write stream of a whole compaction at every point, recover what a
//! reboot could find, and require an image that opens (replaying its log), reads the same,
//! passes our check, and compacts to the same result when the run is repeated.

use vdisk_core::testing::{CrashCase, Fault, FaultyFile, Survivors, cut_every_write};
use vdisk_core::{ErrorKind, FormatDriver, MIB, Mode, OpenOptions};

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

fn case(name: String, bytes: Vec<u8>) -> CrashCase<'static> {
    let mut case = CrashCase::new(
        name,
        bytes,
        |file| vdisk_vhdx::DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open_bytes(&bytes),
        |img| compact(img, Mode::Prezeroed).map(|_| ()),
        check_errors,
    );
    case.after_rerun = Box::new(|img, what| assert_eq!(log_detail(img), "empty", "{what}: log"));
    case
}

#[test]
fn compaction_survives_a_crash_at_every_write() {
    let (mut cut_points, mut recoveries) = (0, 0);
    for (si, bytes) in scenarios().into_iter().enumerate() {
        let original_len = bytes.len() as u64;
        let stats = cut_every_write(&case(format!("vhdx scenario {si}"), bytes), Fault::Crash);
        assert!(stats.final_len < original_len, "scenario {si} shrinks");
        cut_points += stats.cut_points;
        recoveries += stats.recoveries;
    }
    eprintln!("vhdx prezeroed crash cut points tested: {cut_points} ({recoveries} recoveries)");
    assert!(cut_points >= 50);
}

/// The disk fills up at write N and stays full: every later write fails too (so nothing the
/// run does after the first failure may be needed for a valid image).
#[test]
fn compaction_on_a_disk_that_stays_full_from_any_write_leaves_a_valid_image() {
    let mut cut_points = 0;
    for (si, bytes) in scenarios().into_iter().enumerate() {
        let c = case(format!("vhdx scenario {si}"), bytes);
        cut_points += cut_every_write(&c, Fault::FailAlways(ErrorKind::NoSpace)).cut_points;
    }
    eprintln!("vhdx prezeroed disk-full-from-then-on cut points tested: {cut_points}");
    assert!(cut_points >= 50);
}

#[test]
fn compaction_failing_for_lack_of_space_at_any_write_leaves_a_valid_image() {
    let mut cut_points = 0;
    for (si, bytes) in scenarios().into_iter().enumerate() {
        let c = case(format!("vhdx scenario {si}"), bytes);
        cut_points += cut_every_write(&c, Fault::FailOnce(ErrorKind::NoSpace)).cut_points;
    }
    eprintln!("vhdx prezeroed no-space cut points tested: {cut_points}");
    assert!(cut_points >= 50);
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
    let mut case = case("vhdx dirty log".into(), bytes);
    case.content = Box::new(|img| super::util::read(img, 0, 40 * MIB as usize));
    case.survivors =
        Box::new(|_| vec![Survivors::SyncedOnly, Survivors::All, Survivors::Prefix(1)]);
    let stats = cut_every_write(&case, Fault::Crash);
    eprintln!(
        "dirty-log cut points tested: {} ({} recoveries)",
        stats.cut_points, stats.recoveries
    );
    assert!(stats.cut_points >= 5);
}
