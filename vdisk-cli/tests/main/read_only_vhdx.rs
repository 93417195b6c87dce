//! A VHDX the user cannot write (mode 0444, vdisk run as `nobody` through `setpriv`, since
//! root ignores permission bits): compaction exits 6 and leaves the file alone (bytes and
//! mtime), a dry run still plans. With a pending log this matters twice: a writable open
//! would replay the log onto the file, so the refusal must come before any replay.
//! `read_only.rs` covers VHD (and `chattr +i`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::killed::build;
use super::support::{
    EXIT_READ_ONLY, Out, Snapshot, fixture, flag, num, require, run, tempdir, text,
};

const NOBODY: u32 = 65534;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `vdisk compact --json --mode prezeroed [extra] FILE` as user `nobody`.
fn compact_as_nobody(file: &Path, extra: &[&str]) -> Out {
    run(Command::new(require("setpriv", "util-linux"))
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vdisk"))
        .args(["compact", "--json", "--mode", "prezeroed"])
        .args(extra)
        .arg(file))
}

fn refused_untouched(file: &Path, reclaimable: u64, what: &str) {
    set_mode(file.parent().unwrap(), 0o755);
    set_mode(file, 0o444);
    let before = Snapshot::of(file);
    let out = compact_as_nobody(file, &[]);
    out.expect_code(EXIT_READ_ONLY);
    let r = out.json();
    assert_eq!(text(&r["error"], "kind"), "read-only", "{what}: {r}");
    before.assert_unchanged(file, true, &format!("{what}: refused compaction"));
    let dry = compact_as_nobody(file, &["--dry-run"]);
    dry.ok();
    let r = dry.json();
    assert!(flag(&r, "dry_run"), "{what}: {r}");
    assert_eq!(num(&r, "blocks_reclaimed"), reclaimable, "{what}: {r}");
    before.assert_unchanged(file, true, &format!("{what}: dry run"));
}

#[test]
fn read_only_vhdx_compaction_exits_6_unchanged_and_dry_run_still_plans() {
    let dir = tempdir();
    // 12 blocks of 1 MiB, blocks 1, 4, 7 and 10 all zero.
    let file = build(dir.path(), "ro.vhdx", &vdisk_vhdx::DRIVER, 12, 1 << 20);
    refused_untouched(&file, 4, "mode 0444 vhdx");
}

#[test]
fn read_only_vhdx_with_a_pending_log_is_refused_before_any_replay() {
    let dir = tempdir();
    let file = fixture("iotest-dirtylog-10G-4M.vhdx", dir.path());
    let before = Snapshot::of(&file);
    set_mode(dir.path(), 0o755);
    set_mode(&file, 0o444);
    let out = compact_as_nobody(&file, &[]);
    out.expect_code(EXIT_READ_ONLY);
    before.assert_unchanged(
        &file,
        true,
        "pending log, read-only: the log is not replayed",
    );
}
