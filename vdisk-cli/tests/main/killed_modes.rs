//! Issue 12, "interruption at random moments in every mode": `vdisk compact` in each mode that
//! applies to the image type, on a dynamic VHD, a dynamic VHDX, a VHD and a VHDX differencing
//! child, fixed VHD and VHDX (retrim) and an NTFS disk (full, quick), stopped by SIGKILL,
//! SIGINT, SIGTERM, a full host file system (a small tmpfs holding a sparse copy) and a
//! file-size limit (`prlimit --fsize`), each at a seeded random moment. After every stop:
//! the exit code is the one the stop must give (8 for SIGINT/SIGTERM, 7 for no space, or 0 if
//! the run finished first); `vdisk check` passes; qemu-img checks the file and finds the
//! original content (byte-exact modes; for NTFS, changes only inside ntfs-3g's free
//! clusters, with every file read back by ntfscat); a child reads the same through libvhdi with
//! its parent set, and the parent is byte-identical. Then a re-run finishes (the length of an
//! uninterrupted run) and a third run has nothing left to do and changes no byte.
//!
//! Every image has work in every mode it is run in: all-zero blocks, blocks marked UNMAPPED
//! (VHDX, with their old offsets, as a guest TRIM leaves them), child blocks that read as the
//! parent, and data blocks after the holes so blocks move. VHD has no trimmed state, so
//! `pretrimmed` (and `quick` without a file system) would have nothing to do there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vdisk_core::{Access, FormatDriver, OpenOptions, StdFile};

use super::chain::libvhdi_chain;
use super::killed::{Subject, build};
use super::support::interrupt::{
    EXIT_CANCELLED, EXIT_NO_SPACE, Rng, Stop, Tmpfs, VHDX_UNMAPPED, VHDX_ZERO, allocated, for_qemu,
    send, set_vhdx_states, vdisk_under_fsize, vhdx_states,
};
use super::support::ntfs::{self, Table};
use super::support::{
    Out, Snapshot, file_len, num, qemu_create, require, run, tempdir, vdisk, vdisk_cmd,
};

/// What decides that an interrupted image still reads right.
enum Oracle {
    /// qemu-img check and qemu-img compare with the pristine image: byte-exact.
    Qemu,
    /// qemu-img check, and every byte outside ntfs-3g's free clusters as before, every file
    /// read back by ntfscat.
    Ntfs(ntfs::Disk),
    /// libvhdi with the parent set reads these bytes; the parent stays byte-identical.
    Chain {
        parent: PathBuf,
        content: Vec<u8>,
        snapshot: Snapshot,
    },
}

/// One image type and the modes run on it.
struct Case {
    name: &'static str,
    subject: Subject,
    oracle: Oracle,
    modes: &'static [&'static str],
}

/// How the runs of one case ended, by stop.
#[derive(Default)]
struct Tally {
    codes: Vec<(Stop, i32)>,
    log_pending: u32,
    /// The longest uninterrupted run, in microseconds.
    longest_us: u64,
}

impl Tally {
    fn count(&self, stop: Stop, code: i32) -> usize {
        self.codes.iter().filter(|c| **c == (stop, code)).count()
    }
}

fn compact_json(file: &Path, mode: &str) -> Out {
    run(vdisk_cmd()
        .args(["compact", "--json", "--mode", mode])
        .arg(file))
}

impl Case {
    /// `vdisk check`, the oracle's verdict on structure and content, and the parent untouched.
    #[track_caller]
    fn verify(&self, file: &Path, what: &str, tally: &mut Tally) {
        let check = vdisk(["check".as_ref(), file.as_os_str()]);
        assert_eq!(
            check.code, 0,
            "{what}: vdisk check: {}{}",
            check.stdout, check.stderr
        );
        match &self.oracle {
            Oracle::Qemu => {
                self.subject.assert_valid(file, what);
                self.subject.assert_same_content(file, what);
            }
            Oracle::Ntfs(disk) => {
                let replayed = for_qemu(file, self.subject.qemu_format, what);
                disk.assert_content_kept(&replayed, self.subject.qemu_format);
            }
            Oracle::Chain {
                parent,
                content,
                snapshot,
            } => {
                snapshot.assert_unchanged(parent, true, what);
                // libvhdi reads the BAT as it is: with a log entry not yet applied (a VHDX run
                // killed between logging and applying) the content is checked after the
                // re-run, which replays the log first, as Hyper-V would.
                let info = vdisk(["info".as_ref(), "--json".as_ref(), file.as_os_str()]);
                info.ok();
                let log = info.json()["details"]["log"].as_str().map(str::to_owned);
                if log.as_deref().is_some_and(|l| l != "empty") {
                    tally.log_pending += 1;
                    return;
                }
                let mut now = libvhdi_chain(&[file, parent]);
                if self.subject.qemu_format == "vhdx" {
                    // libvhdi reads a ZERO block of a child through to the parent; the VHDX
                    // specification (2.5.1.1) says reads of ZERO "MUST return zeros", as
                    // Hyper-V and vdisk do. Apply that rule to what libvhdi read.
                    const BLOCK: usize = 1 << 20;
                    let blocks = (content.len() / BLOCK) as u64;
                    for (b, state) in vhdx_states(file, BLOCK as u64, blocks)
                        .into_iter()
                        .enumerate()
                    {
                        if state == VHDX_ZERO {
                            now[b * BLOCK..(b + 1) * BLOCK].fill(0);
                        }
                    }
                }
                assert!(
                    now == *content,
                    "{what}: libvhdi reads different content through the child"
                );
            }
        }
    }

    /// Runs `mode` once uninterrupted (final length, duration), then stops it every way.
    fn run_mode(&self, mode: &str, rng: &mut Rng, tally: &mut Tally) {
        let reference = self.subject.copy(&format!("{mode}-reference"));
        let started = Instant::now();
        let out = compact_json(&reference, mode);
        out.ok();
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.longest_us = tally.longest_us.max(took);
        let report = out.json();
        assert!(
            num(&report, "blocks_reclaimed") > 0,
            "{} {mode}: the image gives the mode work: {report}",
            self.name
        );
        let final_len = file_len(&reference);
        let moved_bytes = num(&report, "blocks_moved") * num(&report, "block_size");
        std::fs::remove_file(&reference).unwrap();
        for stop in Stop::ALL {
            // A cancel may land before the handler is set or after the end: up to four more
            // tries, each with half the window, until one is cancelled mid-run.
            let tries = if stop.cancels() { 5 } else { 1 };
            for attempt in 0..tries {
                let window = (took + took / 10) >> attempt;
                let code = self.stop_once(mode, stop, rng, window, moved_bytes, final_len, tally);
                if code == EXIT_CANCELLED || !stop.cancels() {
                    break;
                }
            }
        }
    }

    /// One stopped run, its checks, the re-run and the converged third run; returns the exit
    /// code of the stopped run.
    #[allow(clippy::too_many_arguments)]
    fn stop_once(
        &self,
        mode: &str,
        stop: Stop,
        rng: &mut Rng,
        window: u64,
        moved_bytes: u64,
        final_len: u64,
        tally: &mut Tally,
    ) -> i32 {
        let file = self.subject.copy(&format!("{mode}-{stop:?}"));
        let (code, stderr, detail) = match stop {
            Stop::Kill | Stop::Int | Stop::Term => {
                let delay = rng.below(window);
                let mut child = vdisk_cmd()
                    .args(["compact", "--mode", mode])
                    .arg(&file)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn vdisk");
                std::thread::sleep(Duration::from_micros(delay));
                send(&mut child, stop.signal().unwrap());
                let out = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                (out.status.code().unwrap_or(-1), err, format!("{delay} us"))
            }
            Stop::DiskFull => self.on_full_tmpfs(&file, mode, rng, moved_bytes),
            Stop::FileSize => {
                let limit = final_len / 2 + rng.below(final_len / 2);
                let out = vdisk_under_fsize(limit, &["compact", "--mode", mode], &file);
                (out.code, out.stderr, format!("fsize {limit}"))
            }
        };
        let what = format!(
            "{} --mode {mode} stopped by {stop:?} at {detail} (exit {code})",
            self.name
        );
        tally.codes.push((stop, code));
        assert!(stop.allowed_codes().contains(&code), "{what}: {stderr}");
        if code == EXIT_NO_SPACE {
            assert!(
                stderr.contains("the image is valid; run the same command again"),
                "{what}: says the image is fine and what to do: {stderr}"
            );
        }
        self.verify(&file, &what, tally);
        compact_json(&file, mode).ok();
        assert_eq!(file_len(&file), final_len, "{what}: the re-run finishes");
        self.verify(&file, &format!("{what}, re-run"), tally);
        let (before, host) = (std::fs::read(&file).unwrap(), allocated(&file));
        let third = compact_json(&file, mode);
        third.ok();
        let r = third.json();
        // A fixed image's blocks already punched are not reclaimed again: nothing to do.
        assert!(
            num(&r, "blocks_reclaimed") == 0 && num(&r, "blocks_moved") == 0,
            "{what}: a third run finds nothing to reclaim: {r}"
        );
        assert!(
            std::fs::read(&file).unwrap() == before && allocated(&file) == host,
            "{what}: a third run changes no byte and frees no host space"
        );
        std::fs::remove_file(&file).unwrap();
        let _ = std::fs::remove_file(file.with_extension("replayed.vhdx"));
        code
    }

    /// Runs `mode` on a sparse copy of `file` (its zero blocks host holes, as `cp --sparse` or
    /// `qemu-img convert` leave them) in a tmpfs with a random amount of room, at most the
    /// bytes the run moves; copies the result back over `file` and unmounts.
    fn on_full_tmpfs(
        &self,
        file: &Path,
        mode: &str,
        rng: &mut Rng,
        moved_bytes: u64,
    ) -> (i32, String, String) {
        let mnt = file.with_extension("mnt");
        let tmpfs = Tmpfs::mount(&mnt, 4 * file_len(file));
        let inside = mnt.join(file.file_name().unwrap());
        std::fs::copy(file, &inside).unwrap();
        run(
            std::process::Command::new(require("fallocate", "util-linux"))
                .arg("--dig-holes")
                .arg(&inside),
        )
        .ok();
        let room = rng.below(moved_bytes.max(1 << 20));
        tmpfs.resize((allocated(&inside) + room).next_multiple_of(4096));
        let mut cmd = vdisk_cmd();
        cmd.args(["compact", "--mode", mode]);
        if let Oracle::Chain { parent, .. } = &self.oracle {
            // The parent stays in the test folder, outside the tmpfs: name it.
            cmd.arg("--parent").arg(parent);
        }
        let out = run(cmd.arg(&inside));
        std::fs::copy(&inside, file).unwrap();
        drop(tmpfs);
        (out.code, out.stderr, format!("{room} bytes free"))
    }
}

/// Runs every mode of `case` with every stop; checks the exit codes the stops must give.
fn matrix(case: &Case, seed: u64) {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for mode in case.modes {
        case.run_mode(mode, &mut rng, &mut tally);
    }
    for stop in Stop::ALL {
        let codes: Vec<i32> = tally
            .codes
            .iter()
            .filter(|c| c.0 == stop)
            .map(|c| c.1)
            .collect();
        eprintln!(
            "{} {stop:?} (seed {seed:#x}): exit codes {codes:?}",
            case.name
        );
    }
    if tally.log_pending > 0 {
        eprintln!(
            "{}: {} stops left a log pending (content checked after the re-run)",
            case.name, tally.log_pending
        );
    }
    // Timing decides whether a signal lands mid-run: where a run takes 100 ms or more, at
    // least one of SIGINT and SIGTERM must have cancelled one with exit 8 (a retrim of a fixed
    // disk may take a few milliseconds, less than starting the process on a busy machine).
    assert!(
        tally.longest_us < 100_000
            || tally.count(Stop::Int, EXIT_CANCELLED) + tally.count(Stop::Term, EXIT_CANCELLED) > 0,
        "{}: neither SIGINT nor SIGTERM cancelled a run with exit 8",
        case.name
    );
}

/// A VHDX made by vdisk's driver: 48 blocks of 1 MiB, every third all zeros, and six data
/// blocks marked UNMAPPED with their offsets kept (qemu and libvhdi read them as zeros).
fn vhdx_dynamic(dir: &Path) -> Subject {
    let pristine = build(dir, "dyn.vhdx", &vdisk_vhdx::DRIVER, 48, 1 << 20);
    set_vhdx_states(&pristine, 1 << 20, &[3, 9, 15, 21, 27, 33], VHDX_UNMAPPED);
    Subject {
        pristine,
        qemu_format: "vhdx",
    }
}

/// A fixed image of 24 MiB (VHD made by qemu-img, VHDX with 1 MiB blocks by `vdisk create`,
/// as qemu leaves a fixed VHDX's unwritten blocks not present) written by qemu-io in 1 MiB
/// stripes, every third one zeros.
fn fixed(dir: &Path, format: &'static str) -> Subject {
    let ext = if format == "vpc" { "vhd" } else { "vhdx" };
    let pristine = dir.join(format!("fixed.{ext}"));
    if format == "vpc" {
        qemu_create(&pristine, "fixed", 24 << 20);
    } else {
        let args = [
            "create", "--format", "vhdx", "--type", "fixed", "--size", "24M",
        ];
        run(vdisk_cmd()
            .args(args)
            .args(["--block-size", "1M"])
            .arg(&pristine))
        .ok();
    }
    let mut cmd = std::process::Command::new(require("qemu-io", "qemu-utils"));
    cmd.args(["-f", format]);
    for i in 0..24u64 {
        let pattern = if i % 3 == 1 { 0 } else { i + 1 };
        cmd.arg("-c").arg(format!("write -P {pattern} {i}M 1M"));
    }
    run(cmd.arg(&pristine)).ok();
    Subject {
        pristine,
        qemu_format: format,
    }
}

/// A child over a base made by vdisk's driver (`blocks` x `block`, every third zero, the
/// others with 512 bytes of data), written through vdisk's own writer: every third block the
/// same bytes the parent holds there (reads as the parent: reclaimable), every third block
/// other data, the others left to the parent; in a VHDX child also zeros over parent data
/// (reclaimable as ZERO).
fn child(dir: &Path, ext: &str, driver: &dyn FormatDriver, blocks: u64, block: u64) -> Case {
    let base = build(dir, &format!("base.{ext}"), driver, blocks, block);
    let pristine = dir.join(format!("child.{ext}"));
    run(vdisk_cmd()
        .args(["create", "--type", "differencing", "--block-size"])
        .arg(block.to_string())
        .arg("--parent")
        .arg(&base)
        .arg(&pristine))
    .ok();
    let image = driver
        .open(
            Box::new(StdFile::open(&pristine, Access::ReadWrite).unwrap()),
            &OpenOptions::read_write(),
        )
        .unwrap();
    for b in 0..blocks {
        let at = b * block + (b % 8) * 512;
        let parent_byte = if b % 3 == 1 {
            0
        } else {
            u8::try_from(b % 251 + 1).unwrap()
        };
        let data = match b % 3 {
            0 => [parent_byte; 512],
            1 if ext == "vhdx" && b % 2 == 0 => continue,
            1 => [0xA5; 512],
            _ => [0; 512],
        };
        image.write_at(&data, at).unwrap();
    }
    if ext == "vhdx" {
        // Zeros over parent data, a whole block: the child reads zeros there.
        for b in (2..blocks).step_by(6) {
            let zeros = vec![0; usize::try_from(block).unwrap()];
            image.write_at(&zeros, b * block).unwrap();
        }
    }
    image.flush().unwrap();
    drop(image);
    let content = libvhdi_chain(&[&pristine, &base]);
    Case {
        name: if ext == "vhd" {
            "vhd child"
        } else {
            "vhdx child"
        },
        oracle: Oracle::Chain {
            snapshot: Snapshot::of(&base),
            parent: base,
            content,
        },
        subject: Subject {
            pristine,
            qemu_format: if ext == "vhd" { "vpc" } else { "vhdx" },
        },
        modes: &["full", "prezeroed"],
    }
}

fn ntfs_case(format: &'static str) -> Case {
    let disk = ntfs::build(Table::Mbr, None);
    let pristine = disk.image(format, "dynamic");
    Case {
        name: if format == "vpc" {
            "ntfs vhd"
        } else {
            "ntfs vhdx"
        },
        subject: Subject {
            pristine,
            qemu_format: format,
        },
        oracle: Oracle::Ntfs(disk),
        modes: &["full", "quick"],
    }
}

#[test]
fn every_mode_on_a_dynamic_vhd_stopped_any_way_at_random_moments_keeps_content_and_converges() {
    let dir = tempdir();
    let case = Case {
        name: "vhd dynamic",
        subject: super::killed::vhd_subject(dir.path()),
        oracle: Oracle::Qemu,
        modes: &["full", "prezeroed", "retrim"],
    };
    matrix(&case, 0x6b11_0001);
}

#[test]
fn every_mode_on_a_dynamic_vhdx_stopped_any_way_at_random_moments_keeps_content_and_converges() {
    let dir = tempdir();
    let case = Case {
        name: "vhdx dynamic",
        subject: vhdx_dynamic(dir.path()),
        oracle: Oracle::Qemu,
        modes: &["full", "quick", "prezeroed", "pretrimmed", "retrim"],
    };
    matrix(&case, 0x6b11_0002);
}

#[test]
fn compacting_a_vhd_child_stopped_any_way_keeps_what_it_reads_and_its_parent_untouched() {
    let dir = tempdir();
    let case = child(dir.path(), "vhd", &vdisk_vhd::DRIVER, 3072, 4096);
    matrix(&case, 0x6b11_0003);
}

#[test]
fn compacting_a_vhdx_child_stopped_any_way_keeps_what_it_reads_and_its_parent_untouched() {
    let dir = tempdir();
    let case = child(dir.path(), "vhdx", &vdisk_vhdx::DRIVER, 48, 1 << 20);
    matrix(&case, 0x6b11_0004);
}

#[test]
fn retrim_of_fixed_vhd_and_vhdx_stopped_any_way_keeps_content_and_converges() {
    let dir = tempdir();
    for (name, format) in [("vhd fixed", "vpc"), ("vhdx fixed", "vhdx")] {
        let case = Case {
            name,
            subject: fixed(dir.path(), format),
            oracle: Oracle::Qemu,
            modes: &["retrim"],
        };
        matrix(&case, 0x6b11_0005);
    }
}

#[test]
fn fs_aware_modes_on_ntfs_stopped_any_way_change_only_free_clusters_and_converge() {
    for format in ["vpc", "vhdx"] {
        matrix(&ntfs_case(format), 0x6b11_0006);
    }
}
