//! A file that cannot be written: compaction exits 6 and leaves it alone, a dry run still works.
//!
//! Tests run as root in CI, and root ignores permission bits. So the "cannot write" condition is
//! made real for whoever runs the suite: as root, the file is made immutable (`chattr +i`, which
//! stops root too) and, separately, `vdisk` is run as user `nobody` (`setpriv`) against a 0444
//! file, which is what an ordinary user sees; as a non-root user, chmod 0444 is enough.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::roundtrip::mixed;
use super::support::{
    EXIT_READ_ONLY, Out, Snapshot, assert_qemu_identical, euid, file_len, flag, num, require, run,
    tempdir,
};

const NOBODY: u32 = 65534;

/// Undoes `chattr +i` even when the test fails, so the temp dir can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(file: &Path) -> Immutable {
        let chattr = require("chattr", "e2fsprogs");
        let out = run(Command::new(&chattr).arg("+i").arg(file));
        assert_eq!(
            out.code, 0,
            "chattr +i failed (the temp dir's file system must support it): {}",
            out.stderr
        );
        Immutable(file.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `vdisk compact --json ...` as the current user, or as `nobody` if `as_nobody`.
fn compact_as(file: &Path, extra: &[&str], as_nobody: bool) -> Out {
    let mut cmd = if as_nobody {
        let mut c = Command::new(require("setpriv", "util-linux"));
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_vdisk"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_vdisk"))
    };
    cmd.args(["compact", "--json", "--mode", "prezeroed"])
        .args(extra)
        .arg(file);
    run(&mut cmd)
}

fn assert_read_only_refused(file: &Path, as_nobody: bool, what: &str) {
    let pristine = Snapshot::of(file);
    let out = compact_as(file, &[], as_nobody);
    out.expect_code(EXIT_READ_ONLY);
    let report = out.json();
    assert_eq!(
        report["error"]["exit_code"].as_u64(),
        Some(6),
        "{what}: {report}"
    );
    assert_eq!(
        report["error"]["kind"].as_str(),
        Some("read-only"),
        "{what}: {report}"
    );
    pristine.assert_unchanged(file, true, &format!("{what}: refused compaction"));

    let dry = compact_as(file, &["--dry-run"], as_nobody);
    dry.ok();
    let r = dry.json();
    assert!(flag(&r, "dry_run"), "{what}: {r}");
    assert_eq!(
        num(&r, "blocks_reclaimed"),
        3,
        "{what}: the dry run still plans: {r}"
    );
    pristine.assert_unchanged(file, true, &format!("{what}: dry run"));
}

#[test]
fn immutable_file_compaction_exits_6_unchanged_and_dry_run_still_works() {
    let dir = tempdir();
    let s = mixed(dir.path());
    if euid() == 0 {
        let _guard = Immutable::set(&s.image);
        assert_read_only_refused(&s.image, false, "chattr +i");
    } else {
        set_mode(&s.image, 0o444);
        assert_read_only_refused(&s.image, false, "chmod 0444");
    }
}

#[test]
fn mode_0444_file_compaction_exits_6_for_an_unprivileged_user() {
    let dir = tempdir();
    let s = mixed(dir.path());
    set_mode(dir.path(), 0o755);
    set_mode(&s.image, 0o444);
    assert_read_only_refused(&s.image, euid() == 0, "chmod 0444");
}

/// Compaction is in place: a folder the user cannot write to does not matter as long as the
/// file itself is writable (no temporary or lock files next to it).
#[test]
fn writable_file_in_a_read_only_folder_compacts_in_place() {
    let dir = tempdir();
    let sub = dir.path().join("ro-folder");
    std::fs::create_dir(&sub).unwrap();
    let s = mixed(&sub);
    let root = euid() == 0;
    if root {
        let chown = run(Command::new(require("chown", "coreutils"))
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(&s.image));
        chown.ok();
        set_mode(dir.path(), 0o755);
    }
    set_mode(&s.image, 0o644);
    set_mode(&sub, 0o555);
    let out = compact_as(&s.image, &[], root);
    set_mode(&sub, 0o755);
    out.ok();
    let r = out.json();
    assert_eq!(num(&r, "blocks_reclaimed"), s.zero_blocks, "{r}");
    assert_eq!(num(&r, "bytes_after"), file_len(&s.image), "{r}");
    assert_qemu_identical(&s.pristine, &s.image);
}
