//! An image another program has open is not compacted (exit 3, file untouched), and two
//! compactions racing on one file never corrupt it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use super::roundtrip::{Scenario, mixed};
use super::support::vhd;
use super::support::{
    EXIT_IN_USE, FOOTPRINT, Snapshot, assert_qemu_identical, compact_ok, file_len, num, require,
    tempdir, vdisk_cmd, vdisk_compact,
};

/// A qemu-io process holding the image open (with qemu's locks) until dropped.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    /// Starts `qemu-io -f vpc [extra] FILE` reading commands from a pipe and waits until it has
    /// read from the image, so the image is certainly open and locked.
    fn start(file: &Path, extra: &[&str]) -> Holder {
        Holder::start_format(file, "vpc", extra)
    }

    /// [`Holder::start`] for qemu's `format` (`vpc`, `vhdx`).
    pub fn start_format(file: &Path, format: &str, extra: &[&str]) -> Holder {
        let mut child = Command::new(require("qemu-io", "qemu-utils"))
            .args(["-f", format])
            .args(extra)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn qemu-io");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"read 0 512\n").unwrap();
        stdin.flush().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("read 512/512 bytes") {
                return Holder {
                    child,
                    stdin: Some(stdin),
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("qemu-io did not open {}:\n{seen}", file.display());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"quit\n");
        }
        if self.child.try_wait().ok().flatten().is_none() {
            // Closing stdin (dropped above) makes qemu-io exit; wait for it.
            let _ = self.child.wait();
        }
    }
}

fn assert_in_use(s: &Scenario, holder_args: &[&str], what: &str) {
    let pristine = Snapshot::of(&s.image);
    {
        let _holder = Holder::start(&s.image, holder_args);
        for (mode, extra) in [("prezeroed", &[][..]), ("pretrimmed", &[][..])] {
            let out = vdisk_compact(&s.image, mode, extra);
            out.expect_code(EXIT_IN_USE);
            let r = out.json();
            assert_eq!(r["error"]["kind"].as_str(), Some("in-use"), "{what}: {r}");
            assert_eq!(r["error"]["exit_code"].as_u64(), Some(3), "{what}: {r}");
            pristine.assert_unchanged(&s.image, true, &format!("{what}: {mode} while in use"));
        }
    }
    // Once the holder is gone, the same command succeeds: the lock was the reason.
    let r = compact_ok(&s.image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), s.zero_blocks, "{what}: {r}");
    assert_qemu_identical(&s.pristine, &s.image);
}

#[test]
fn image_open_for_writing_in_qemu_io_is_refused_with_exit_3_and_unchanged() {
    let dir = tempdir();
    assert_in_use(&mixed(dir.path()), &[], "qemu-io read-write");
}

#[test]
fn image_open_read_only_in_qemu_io_is_refused_with_exit_3_and_unchanged() {
    let dir = tempdir();
    assert_in_use(&mixed(dir.path()), &["-r"], "qemu-io -r");
}

#[test]
fn two_concurrent_compactions_of_one_file_never_corrupt_it() {
    for round in 0..4 {
        let dir = tempdir();
        let s = mixed(dir.path());
        let expect_len = file_len(&s.image) - s.zero_blocks * FOOTPRINT;
        let spawn = || {
            vdisk_cmd()
                .args(["compact", "--json", "--mode", "prezeroed"])
                .arg(&s.image)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn vdisk")
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap_or(-1)).collect();
        let transcript: String = outs
            .iter()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .collect();
        assert!(
            codes.iter().all(|&c| c == 0 || c == EXIT_IN_USE) && codes.contains(&0),
            "round {round}: exit codes {codes:?}; each must succeed or say in use (3):\n{transcript}"
        );
        assert_qemu_identical(&s.pristine, &s.image);
        assert_eq!(
            vhd::check_dynamic(&s.image),
            Ok(s.allocated - s.zero_blocks),
            "round {round}"
        );
        assert_eq!(
            file_len(&s.image),
            expect_len,
            "round {round}: compacted once, fully"
        );
    }
}

#[test]
fn read_only_commands_refuse_an_image_qemu_is_writing_but_share_it_with_readers() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let file = s.image.to_str().unwrap();
    {
        let _writer = Holder::start(&s.image, &[]);
        // Numbers read while a VM writes would be stale: refused like a compaction.
        super::support::vdisk(["info", "--json", file]).expect_code(EXIT_IN_USE);
        super::support::vdisk(["check", "--json", file]).expect_code(EXIT_IN_USE);
        vdisk_compact(&s.image, "prezeroed", &["--dry-run"]).expect_code(EXIT_IN_USE);
    }
    {
        let _reader = Holder::start(&s.image, &["-r"]);
        super::support::vdisk(["info", "--json", file]).expect_code(0);
        vdisk_compact(&s.image, "prezeroed", &["--dry-run"]).expect_code(0);
    }
    // Two vdisk readers at once do not mistake each other for writers.
    let a = vdisk_cmd().args(["info", "--json", file]).spawn().unwrap();
    super::support::vdisk(["info", "--json", file]).expect_code(0);
    assert!(a.wait_with_output().unwrap().status.success());
}
