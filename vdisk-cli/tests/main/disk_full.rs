//! A full host file system (simulated per process with RLIMIT_FSIZE through `prlimit`: a
//! write past the limit fails with EFBIG, which vdisk reports as "no space", exit 7).
//!
//! Compaction never grows the file: it moves blocks into holes below the old end, writes the
//! VHD footer at the new end and shrinks last; the VHDX log lives inside the file. So the
//! first test runs it with the limit at the file's own length and expects success; the second
//! puts the limit below the end the moves need and expects exit 7 with the image valid and
//! reading the same, and a re-run (without limit) finishing the job. Growth is tested
//! through `create`.

use std::path::Path;
use std::process::Command;

use super::killed::{Subject, compact, vhd_subject, vhdx_subject};
use super::support::interrupt::{EXIT_NO_SPACE, vdisk_under_fsize};
use super::support::{Out, file_len, require, run, tempdir, vdisk_cmd};

/// `vdisk ARGS` with the file size limit `limit`. SIGXFSZ is ignored (the disposition survives
/// `exec`), so the write fails with EFBIG instead of killing the process, as on a full disk.
fn vdisk_limited(limit: u64, args: &[&str], file: &Path) -> Out {
    let prlimit = require("prlimit", "util-linux");
    let vdisk = vdisk_cmd().get_program().to_owned();
    run(Command::new(require("sh", "dash"))
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$@\"")
        .arg("sh")
        .arg(prlimit)
        .arg(format!("--fsize={limit}"))
        .arg(vdisk)
        .args(args)
        .arg(file))
}

fn never_grows(subject: &Subject) {
    let file = subject.copy("limited");
    let len = file_len(&file);
    let out = vdisk_limited(len, &["compact", "--mode", "prezeroed"], &file);
    out.ok();
    assert!(file_len(&file) < len, "it shrank");
    subject.assert_valid(&file, "under the limit");
    subject.assert_same_content(&file, "under the limit");
}

#[test]
fn vhd_compaction_never_writes_past_the_original_end() {
    let dir = tempdir();
    never_grows(&vhd_subject(dir.path()));
}

#[test]
fn vhdx_compaction_never_writes_past_the_original_end() {
    let dir = tempdir();
    never_grows(&vhdx_subject(dir.path()));
}

/// Limits spread from the start of the data area to the final length: each run either fits
/// (exit 0) or fails with exit 7, naming the cause; the image is valid and reads the same
/// either way, and a re-run finishes.
fn runs_out_of_space(subject: &Subject, data_start: u64) {
    runs_out_of_space_with(subject, data_start, vdisk_limited);
}

fn runs_out_of_space_with(
    subject: &Subject,
    data_start: u64,
    vdisk_limited: fn(u64, &[&str], &Path) -> Out,
) {
    let reference = subject.copy("reference");
    compact(&reference).ok();
    let final_len = file_len(&reference);
    let mut no_space = 0;
    let steps = 6;
    for i in 0..steps {
        let limit = data_start + (final_len - data_start) * i / steps;
        let file = subject.copy(&format!("full-{i}"));
        let out = vdisk_limited(limit, &["compact", "--mode", "prezeroed"], &file);
        let what = format!("{} limit {limit} (exit {})", subject.qemu_format, out.code);
        assert!(
            matches!(out.code, 0 | EXIT_NO_SPACE),
            "{what}: {}{}",
            out.stdout,
            out.stderr
        );
        if out.code == EXIT_NO_SPACE {
            no_space += 1;
            // The cause as the OS names it (EFBIG here; "no space left" on a full disk) and
            // what became of the file.
            assert!(
                out.stderr.contains("File too large")
                    && out.stderr.contains("file-size limit")
                    && out
                        .stderr
                        .contains("the image is valid; run the same command again"),
                "{what}: the message says what is wrong and that the image is fine: {}",
                out.stderr
            );
        }
        subject.assert_valid(&file, &what);
        subject.assert_same_content(&file, &what);
        compact(&file).ok();
        assert_eq!(file_len(&file), final_len, "{what}: the re-run finishes");
        subject.assert_valid(&file, &what);
        subject.assert_same_content(&file, &what);
    }
    eprintln!(
        "{}: {no_space} of {steps} limited runs ran out of space",
        subject.qemu_format
    );
    assert!(no_space > 0, "no limit made the run fail");
}

#[test]
fn vhd_compaction_running_out_of_space_exits_7_with_a_valid_equivalent_image() {
    let dir = tempdir();
    // Footer copy, dynamic header and a 6144-entry BAT: data starts after 26 KiB.
    runs_out_of_space(&vhd_subject(dir.path()), 26 << 10);
}

#[test]
fn vhdx_compaction_running_out_of_space_exits_7_with_a_valid_equivalent_image() {
    let dir = tempdir();
    // Header section, log, metadata and BAT fill the first MiBs; data after 4 MiB.
    runs_out_of_space(&vhdx_subject(dir.path()), 4 << 20);
}

/// Issue 12 class 7: under a file-size limit the process used to die by SIGXFSZ with no word.
/// vdisk keeps the signal from killing it, so the write fails and is reported as no space
/// (exit 7, naming the limit); the image is valid and reads the same, and a re-run without the
/// limit finishes.
#[test]
fn vhd_compaction_under_a_file_size_limit_exits_7_instead_of_dying_by_sigxfsz() {
    let dir = tempdir();
    runs_out_of_space_with(&vhd_subject(dir.path()), 26 << 10, vdisk_under_fsize);
}

#[test]
fn vhdx_compaction_under_a_file_size_limit_exits_7_instead_of_dying_by_sigxfsz() {
    let dir = tempdir();
    runs_out_of_space_with(&vhdx_subject(dir.path()), 4 << 20, vdisk_under_fsize);
}

#[test]
fn create_under_a_file_size_limit_exits_7_naming_the_limit_instead_of_dying_by_sigxfsz() {
    let dir = tempdir();
    let file = dir.path().join("big.vhdx");
    let out = vdisk_under_fsize(
        1 << 20,
        &[
            "create", "--format", "vhdx", "--type", "fixed", "--size", "16M",
        ],
        &file,
    );
    assert_eq!(out.code, EXIT_NO_SPACE, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("file-size limit"), "{}", out.stderr);
    assert!(!file.exists(), "the partial file is gone");
}

#[test]
fn creating_an_image_the_disk_cannot_hold_exits_7_and_leaves_no_partial_file() {
    let dir = tempdir();
    for format in ["vhd", "vhdx"] {
        let file = dir.path().join(format!("big.{format}"));
        let out = vdisk_limited(
            1 << 20,
            &[
                "create", "--format", format, "--type", "fixed", "--size", "16M",
            ],
            &file,
        );
        assert_eq!(
            out.code, EXIT_NO_SPACE,
            "{format}: {}{}",
            out.stdout, out.stderr
        );
        assert!(
            out.stderr.contains("File too large") && out.stderr.contains("was removed"),
            "{format}: says why and that nothing is left behind: {}",
            out.stderr
        );
        assert!(!file.exists(), "{format}: the partial file is gone");
    }
}
