//! Real processes, real files, VHD and VHDX: `vdisk compact` killed with SIGKILL at seeded
//! random moments, and stopped with SIGTERM / SIGINT, on images of thousands of small blocks
//! (VHD) or dozens of 1 MiB blocks (VHDX) so the signal lands inside the run. After each
//! signal `qemu-img check` accepts the file (a VHDX after qemu replays a pending log, on a
//! copy) and `qemu-img compare` finds the content of the original; a re-run then finishes the job (same length as an uninterrupted run) and both
//! checks pass again. `interrupted.rs` sweeps fixed delays on a small VHD; this module covers
//! VHDX, SIGTERM, long runs and random moments.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vdisk_core::{CreateSpec, DiskImage, FormatDriver, ImageKind, MemFile};

use super::support::interrupt::{EXIT_CANCELLED, Rng, for_qemu, send};
use super::support::{Out, file_len, qemu_img, run, tempdir, vdisk_cmd};

/// One test image: where it is, qemu's name for its format, and the uninterrupted result.
pub struct Subject {
    /// The pristine image (never compacted).
    pub pristine: PathBuf,
    /// `vpc` or `vhdx`.
    pub qemu_format: &'static str,
}

/// Writes an image made by our own driver: every block allocated, every third one all zeros
/// (allocated with data first, then zeroed), the others with 512 bytes of a per-block byte.
pub fn build(
    dir: &Path,
    name: &str,
    driver: &dyn FormatDriver,
    blocks: u64,
    block_size: u64,
) -> PathBuf {
    let mem = MemFile::new();
    let spec = CreateSpec::new(ImageKind::Dynamic, blocks * block_size).block_size(block_size);
    let image: Box<dyn DiskImage> = driver.create(Box::new(mem.clone()), &spec).unwrap();
    for b in 0..blocks {
        let at = b * block_size + (b % 8) * 512;
        image
            .write_at(&[u8::try_from(b % 251 + 1).unwrap(); 512], at)
            .unwrap();
        if b % 3 == 1 {
            image.write_at(&[0; 512], at).unwrap();
        }
    }
    drop(image);
    let path = dir.join(name);
    std::fs::write(&path, mem.to_vec()).unwrap();
    path
}

/// 6144 blocks of 4 KiB (27 MiB file): 2048 to free, about 1365 to move.
pub fn vhd_subject(dir: &Path) -> Subject {
    Subject {
        pristine: build(dir, "many.vhd", &vdisk_vhd::DRIVER, 6144, 4096),
        qemu_format: "vpc",
    }
}

/// 48 blocks of 1 MiB (52 MiB file): 16 to free, 11 to move.
pub fn vhdx_subject(dir: &Path) -> Subject {
    Subject {
        pristine: build(dir, "many.vhdx", &vdisk_vhdx::DRIVER, 48, 1 << 20),
        qemu_format: "vhdx",
    }
}

impl Subject {
    #[track_caller]
    fn for_qemu(&self, file: &Path, what: &str) -> PathBuf {
        for_qemu(file, self.qemu_format, what)
    }

    /// `qemu-img check` passes (qemu's vpc driver has no checker: exit 63 says so, and then
    /// `qemu-img compare` below still opens and reads every byte).
    #[track_caller]
    pub fn assert_valid(&self, file: &Path, what: &str) {
        let file = self.for_qemu(file, what);
        let out = qemu_img([
            OsStr::new("check"),
            OsStr::new("-f"),
            OsStr::new(self.qemu_format),
            file.as_os_str(),
        ]);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.code == 0 || (out.code == 63 && all.contains("does not support checks")),
            "{what}: qemu-img check failed ({}):\n{all}",
            out.code
        );
    }

    /// `qemu-img compare` finds the pristine content.
    #[track_caller]
    pub fn assert_same_content(&self, file: &Path, what: &str) {
        let file = self.for_qemu(file, what);
        let out = qemu_img([
            OsStr::new("compare"),
            OsStr::new("-f"),
            OsStr::new(self.qemu_format),
            OsStr::new("-F"),
            OsStr::new(self.qemu_format),
            self.pristine.as_os_str(),
            file.as_os_str(),
        ]);
        assert_eq!(
            out.code, 0,
            "{what}: qemu-img compare: {}{}",
            out.stdout, out.stderr
        );
    }

    /// A fresh copy named `name`.
    pub fn copy(&self, name: &str) -> PathBuf {
        let ext = self.pristine.extension().unwrap().to_str().unwrap();
        let dst = self.pristine.with_file_name(format!("{name}.{ext}"));
        std::fs::copy(&self.pristine, &dst).unwrap();
        dst
    }
}

/// `vdisk compact --mode prezeroed FILE` to completion.
pub fn compact(file: &Path) -> Out {
    run(vdisk_cmd()
        .args(["compact", "--mode", "prezeroed"])
        .arg(file))
}

/// Runs the interruption rounds for one subject and signal; returns (rounds run, rounds that
/// stopped mid-run, exit codes seen).
fn interrupt(subject: &Subject, signal: &str, rounds: u32, seed: u64) -> (u32, u32, Vec<i32>) {
    // An uninterrupted run gives the final length and how long a run takes here; the
    // signals are spread over 0..1.1 of that (the timing only picks moments, nothing asserts
    // on it).
    let reference = subject.copy("reference");
    let started = Instant::now();
    compact(&reference).ok();
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let final_len = file_len(&reference);
    assert!(final_len < file_len(&subject.pristine), "the image shrinks");
    let original = std::fs::read(&subject.pristine).unwrap();
    let mut rng = Rng(seed);
    let (mut midway, mut codes) = (0, Vec::new());
    // For SIGTERM/SIGINT, rounds continue (up to 3x) until one was cancelled mid-run, with
    // the moments drawn from a halving window: if this machine got faster since the timing
    // run, later signals still land inside a run. Seeded either way.
    let max_rounds = if signal == "KILL" { rounds } else { rounds * 3 };
    let mut round = 0;
    while round < max_rounds {
        if round >= rounds && codes.contains(&EXIT_CANCELLED) {
            break;
        }
        let window = match round.checked_sub(rounds) {
            None => took.saturating_add(took / 10),
            Some(extra) => (took >> (extra + 1).min(16)).max(1),
        };
        let delay = rng.below(window);
        let file = subject.copy(&format!("{signal}-{round}"));
        let mut child = vdisk_cmd()
            .args(["compact", "--mode", "prezeroed"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vdisk");
        std::thread::sleep(Duration::from_micros(delay));
        send(&mut child, signal);
        let out = child.wait_with_output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let what = format!(
            "{} SIG{signal} round {round} after {delay} us (exit {code})",
            subject.qemu_format
        );
        if signal != "KILL" {
            // Finished, cancelled cleanly, or the signal came before the handler was set.
            assert!(
                matches!(code, 0 | EXIT_CANCELLED | -1),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        codes.push(code);
        let now = std::fs::read(&file).unwrap();
        if now != original && now.len() as u64 != final_len {
            midway += 1;
        }
        subject.assert_valid(&file, &what);
        subject.assert_same_content(&file, &what);
        compact(&file).ok();
        assert_eq!(
            file_len(&file),
            final_len,
            "{what}: the re-run finishes the job"
        );
        subject.assert_valid(&file, &what);
        subject.assert_same_content(&file, &what);
        std::fs::remove_file(&file).unwrap();
        round += 1;
    }
    (round, midway, codes)
}

fn kill_rounds(subject: &Subject, seed: u64) {
    let (rounds, midway, _) = interrupt(subject, "KILL", 8, seed);
    eprintln!(
        "{}: {rounds} SIGKILLs (seed {seed:#x}), {midway} landed between the first write and the end",
        subject.qemu_format
    );
}

/// SIGTERM and SIGINT: every run ends with 0 or 8 (or dies before the handler is set), the
/// image valid; and at least one of the rounds really is cancelled mid-run with exit 8.
fn cancel_rounds(subject: &Subject, seed: u64) {
    for signal in ["TERM", "INT"] {
        let (rounds, midway, codes) = interrupt(subject, signal, 6, seed);
        let cancelled = codes.iter().filter(|&&c| c == EXIT_CANCELLED).count();
        eprintln!(
            "{}: {rounds} SIG{signal}s (seed {seed:#x}): {cancelled} exit 8, {midway} stopped mid-run, codes {codes:?}",
            subject.qemu_format
        );
        assert!(
            cancelled > 0,
            "SIG{signal} never produced exit 8 in {rounds} rounds: {codes:?}"
        );
    }
}

#[test]
fn vhd_compaction_killed_at_random_moments_stays_valid_and_a_rerun_finishes() {
    let dir = tempdir();
    kill_rounds(&vhd_subject(dir.path()), 0x5eed_0001);
}

#[test]
fn vhdx_compaction_killed_at_random_moments_stays_valid_and_a_rerun_finishes() {
    let dir = tempdir();
    kill_rounds(&vhdx_subject(dir.path()), 0x5eed_0002);
}

#[test]
fn vhd_compaction_stopped_by_sigterm_or_sigint_exits_8_with_a_valid_image() {
    let dir = tempdir();
    cancel_rounds(&vhd_subject(dir.path()), 0x5eed_0003);
}

#[test]
fn vhdx_compaction_stopped_by_sigterm_or_sigint_exits_8_with_a_valid_image() {
    let dir = tempdir();
    cancel_rounds(&vhdx_subject(dir.path()), 0x5eed_0004);
}
