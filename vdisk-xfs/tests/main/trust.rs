//! File systems whose free map must not be trusted, each made the way it happens in real life
//! (a log left dirty by a shutdown, xfs_db setting a flag, a stray write), and where xfsprogs
//! has an opinion, the test checks that it agrees with the state built.

use std::os::unix::fs::FileExt;
use std::path::Path;

use vdisk_core::fs::MemDevice;
use vdisk_core::{ErrorKind, FsAnalyzer, FsVerdict};

use super::util::*;

/// xfs_db in expert (writing) mode; it recomputes the CRC of what it writes. `write -d` skips
/// its verifiers, which refuse to write what the tests want: inconsistent metadata.
fn xfs_db_write(path: &Path, commands: &[&str]) {
    let mut args = vec!["-x"];
    for c in commands {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(path.to_str().unwrap());
    let out = run("xfs_db", &args);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("write error"), "xfs_db {args:?}: {said}");
}

fn logprint_state(path: &Path) -> String {
    let out = run("xfs_logprint", &["-t", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.split_once("state: ").map(|(_, s)| s.trim().to_owned()))
        .unwrap_or_else(|| panic!("no log state in {text}"))
}

fn write_files(dir: &Path, n: usize, len: usize) {
    for i in 0..n {
        std::fs::write(
            dir.join(format!("f{i}")),
            vdisk_core::testing::noise(len, i as u64),
        )
        .unwrap();
    }
}

#[test]
fn a_cleanly_unmounted_file_system_is_trusted_after_its_log_moved_on() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let m = Mounted::new(&fs, dir.path(), "rw");
    write_files(&m.dir, 40, 100_000);
    m.unmount();
    assert_eq!(logprint_state(&fs), "<CLEAN>");
    assert_eq!(usage(&fs).free.runs().collect::<Vec<_>>(), xfs_db_free(&fs));
}

#[test]
fn a_log_left_dirty_by_a_shutdown_is_untrusted_and_xfs_logprint_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let m = Mounted::new(&fs, dir.path(), "rw");
    write_files(&m.dir, 20, 50_000);
    // Force the log to disk, then stop the file system as a crash would: no unmount record,
    // and the metadata the log describes is not all written in place.
    run(
        "xfs_io",
        &["-x", "-c", "shutdown -f", m.dir.to_str().unwrap()],
    );
    m.unmount();
    assert_eq!(logprint_state(&fs), "<DIRTY>");
    let reason = untrusted_reason(&fs);
    assert!(reason.contains("not unmounted cleanly"), "{reason}");
}

#[test]
fn a_file_system_flagged_as_needing_repair_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let incompat = field(
        &xfs_db(&fs, &["sb 0", "print features_incompat"]),
        "features_incompat",
    );
    let value = u32::from_str_radix(incompat.trim_start_matches("0x"), 16).unwrap() | 0x10;
    xfs_db_write(
        &fs,
        &["sb 0", &format!("write features_incompat {value:#x}")],
    );
    // xfs_repair -n reports the flag (it would clear it).
    let check = try_run("xfs_repair", &["-n", fs.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(said.to_lowercase().contains("needsrepair"), "{said}");
    assert!(untrusted_reason(&fs).contains("needing xfs_repair"));
}

#[test]
fn an_unknown_incompatible_feature_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    xfs_db_write(&fs, &["sb 0", "write -d features_incompat 0x400b"]);
    let reason = untrusted_reason(&fs);
    assert!(reason.contains("incompatible features unknown"), "{reason}");
    assert!(reason.contains("0x4000"), "{reason}");
}

#[test]
fn a_stray_write_into_an_agf_fails_its_checksum_and_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let (bs, agblocks, _) = geometry(&fs);
    // AG 2's AGF is its second sector; byte 100 is in its spare area.
    let agf = 2 * agblocks * bs + 512;
    let file = std::fs::OpenOptions::new().write(true).open(&fs).unwrap();
    file.write_all_at(&[0xa5], agf + 100).unwrap();
    let reason = untrusted_reason(&fs);
    assert!(reason.contains("allocation group 2"), "{reason}");
    assert!(reason.contains("checksum"), "{reason}");
}

#[test]
fn a_free_block_counter_that_disagrees_with_the_tree_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [("v5.img", &[][..]), ("v4.img", &["-m", "crc=0"][..])] {
        let fs = mkfs(dir.path(), name, 64 << 20, args);
        let agf = xfs_db(&fs, &["agf 1", "print freeblks"]);
        let freeblks: u64 = field(&agf, "freeblks").parse().unwrap();
        xfs_db_write(
            &fs,
            &["agf 1", &format!("write -d freeblks {}", freeblks - 3)],
        );
        let reason = untrusted_reason(&fs);
        assert!(reason.contains("allocation group 1"), "{name}: {reason}");
        assert!(reason.contains("run xfs_repair"), "{name}: {reason}");
    }
}

#[test]
fn a_free_extent_past_the_group_or_out_of_order_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    // The last record of AG 0's one-block tree made to run past the group's end.
    xfs_db_write(
        &fs,
        &["agf 0", "addr bnoroot", "write recs[2].blockcount 9999"],
    );
    let reason = untrusted_reason(&fs);
    assert!(reason.contains("allocation group 0"), "{reason}");
    assert!(reason.contains("out-of-range extent"), "{reason}");
}

#[test]
fn an_external_log_is_untrusted_because_its_state_cannot_be_seen() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.img");
    std::fs::File::create(&log)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let logdev = format!("logdev={},size=2560b", log.display());
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &["-l", &logdev]);
    assert_eq!(
        field(&xfs_db(&fs, &["sb 0", "print logstart"]), "logstart"),
        "0"
    );
    let reason = untrusted_reason(&fs);
    assert!(reason.contains("separate device"), "{reason}");
}

#[test]
fn a_realtime_device_is_noted_and_only_the_data_devices_free_space_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt.img");
    std::fs::File::create(&rt)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let rtdev = format!("rtdev={}", rt.display());
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &["-r", &rtdev]);
    let u = usage(&fs);
    let note = u.details.iter().find(|(k, _)| k == "realtime").unwrap();
    assert!(note.1.contains("not reported"), "{note:?}");
    assert_eq!(u.free.runs().collect::<Vec<_>>(), xfs_db_free(&fs));
}

#[test]
fn a_volume_smaller_than_the_file_system_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let mut bytes = std::fs::read(&fs).unwrap();
    bytes.truncate(60 << 20);
    let v = vdisk_xfs::ANALYZER.analyze(&MemDevice::new(bytes)).unwrap();
    let FsVerdict::Untrusted { reason, .. } = v else {
        panic!("{v:?}")
    };
    assert!(reason.contains("truncated partition"), "{reason}");
}

#[test]
fn other_content_is_not_mine_and_a_failing_disk_is_an_error_not_a_verdict() {
    for bytes in [vec![0u8; 1 << 20], vec![0u8; 100], b"XFSA".repeat(1000)] {
        let v = vdisk_xfs::ANALYZER.analyze(&MemDevice::new(bytes)).unwrap();
        assert_eq!(v, FsVerdict::NotMine);
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = mkfs(dir.path(), "fs.img", 64 << 20, &[]);
    let (bs, agblocks, _) = geometry(&fs);
    let agf3 = 3 * agblocks * bs + 512;
    let dev = MemDevice::new(std::fs::read(&fs).unwrap()).failing(agf3..agf3 + 512);
    let err = vdisk_xfs::ANALYZER.analyze(&dev).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}
