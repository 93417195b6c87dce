//! Helpers shared by the oracle tests: running `vdisk` and tools, reading its JSON reports,
//! temporary files and fixtures. The external oracles have their own modules ([`qemu`]:
//! qemu-img and qemu-io; [`libvhdi`]: libvhdi through `/usr/bin/python3`), re-exported here;
//! [`vhd`] is a small spec-level VHD structure check written from the VHD 1.0 specification.
//!
//! A missing oracle is a test failure that names the package to install, never a skip.

pub mod fifo;
pub mod fs_crash;
pub mod guest;
pub mod guest_btrfs;
pub mod guest_ext4;
pub mod guest_fat;
pub mod guest_lvm;
pub mod interrupt;
pub mod libvhdi;
pub mod ntfs;
pub mod qemu;
pub mod vhd;

pub use libvhdi::*;
pub use qemu::*;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use serde_json::Value;

/// qemu's default dynamic VHD block size.
pub const BLOCK: u64 = 2 << 20;
/// Host bytes one qemu dynamic block occupies: 512-byte sector bitmap + 2 MiB data.
pub const FOOTPRINT: u64 = BLOCK + 512;
/// 4 MiB, how much of a huge fixture the oracles read.
pub const MIB_4: u64 = 4 << 20;
/// Exit code of a usage error (CLI contract).
pub const EXIT_USAGE: i32 = 2;
/// Another program holds the image.
pub const EXIT_IN_USE: i32 = 3;
/// Invalid or corrupt image.
pub const EXIT_INVALID: i32 = 4;
/// Unsupported image type or mode.
pub const EXIT_UNSUPPORTED: i32 = 5;
/// Read-only file or permission denied.
pub const EXIT_READ_ONLY: i32 = 6;
/// No such file: the image, or the parent it names.
pub const EXIT_NOT_FOUND: i32 = 9;
/// `create`: the file exists already.
pub const EXIT_EXISTS: i32 = 10;

/// What a finished process left behind.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// The command line, for messages.
    pub cmdline: String,
}

impl Out {
    fn from_output(cmdline: String, out: Output) -> Out {
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            cmdline,
        }
    }

    /// Panics with the whole transcript unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the process exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Out {
        self.expect_code(0)
    }

    /// Every non-empty stdout line parsed as JSON.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "`{}`: stdout line is not JSON ({e}): {l:?}\nstderr:\n{}",
                        self.cmdline, self.stderr
                    )
                })
            })
            .collect()
    }

    /// The single JSON object on stdout (a `--json` run on one file; may be pretty-printed).
    #[track_caller]
    pub fn json(&self) -> Value {
        if let Ok(v) = serde_json::from_str(self.stdout.trim()) {
            return v;
        }
        let mut lines = self.json_lines();
        assert_eq!(
            lines.len(),
            1,
            "`{}`: expected one JSON object on stdout, got:\n{}\nstderr:\n{}",
            self.cmdline,
            self.stdout,
            self.stderr
        );
        lines.remove(0)
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion.
#[track_caller]
pub fn run(cmd: &mut Command) -> Out {
    let line = cmdline(cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    Out::from_output(line, out)
}

/// Finds `tool` on PATH (or as an absolute path); fails the test naming `package` if absent.
#[track_caller]
pub fn require(tool: &str, package: &str) -> PathBuf {
    let candidate = Path::new(tool);
    if candidate.is_absolute() {
        assert!(
            candidate.is_file(),
            "{tool} is missing: install the Debian package `{package}` (apt-get install {package})"
        );
        return candidate.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not on PATH: install the Debian package `{package}` \
                 (apt-get install {package})"
            )
        })
}

/// The `vdisk` binary under test.
pub fn vdisk_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vdisk"))
}

/// Runs `vdisk ARGS...`.
pub fn vdisk<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(vdisk_cmd().args(args))
}

/// `vdisk compact --json --mode MODE [extra...] FILE`, expecting success; returns the report.
#[track_caller]
pub fn compact_ok(file: &Path, mode: &str, extra: &[&str]) -> Value {
    let out = vdisk_compact(file, mode, extra);
    out.ok();
    let report = out.json();
    assert!(
        report.get("error").is_none(),
        "`{}` exited 0 but reported an error: {report}",
        out.cmdline
    );
    report
}

/// `vdisk compact --json --mode MODE [extra...] FILE`, whatever happens.
pub fn vdisk_compact(file: &Path, mode: &str, extra: &[&str]) -> Out {
    let mut cmd = vdisk_cmd();
    cmd.args(["compact", "--json", "--mode", mode]);
    cmd.args(extra);
    cmd.arg(file);
    run(&mut cmd)
}

/// `vdisk info --json FILE`, expecting success.
#[track_caller]
pub fn info_ok(file: &Path) -> Value {
    let out = run(vdisk_cmd().args(["info", "--json"]).arg(file));
    out.ok();
    out.json()
}

/// A numeric field of a JSON report; panics naming the field if absent.
#[track_caller]
pub fn num(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no unsigned field {field:?}: {v}"))
}

/// A string field of a JSON report.
#[track_caller]
pub fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("report has no string field {field:?}: {v}"))
}

/// A boolean field of a JSON report.
#[track_caller]
pub fn flag(v: &Value, field: &str) -> bool {
    v.get(field)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("report has no boolean field {field:?}: {v}"))
}

/// Fields every per-file compaction report must carry (CLI contract).
pub const REPORT_FIELDS: [&str; 11] = [
    "file",
    "format",
    "mode",
    "bytes_before",
    "bytes_after",
    "blocks_reclaimed",
    "blocks_moved",
    "dry_run",
    "blocks_reclaimed_zero",
    "blocks_reclaimed_trimmed",
    "notes",
];

/// Asserts the report has every contract field.
#[track_caller]
pub fn assert_report_fields(report: &Value) {
    for f in REPORT_FIELDS {
        assert!(report.get(f).is_some(), "report lacks {f:?}: {report}");
    }
    assert!(
        report["notes"].is_array(),
        "notes is not an array: {report}"
    );
}

/// The exact bytes and modification time of a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Vec<u8>,
    mtime: SystemTime,
}

impl Snapshot {
    /// Takes a snapshot of `file`.
    #[track_caller]
    pub fn of(file: &Path) -> Snapshot {
        let bytes = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mtime = fs::metadata(file).and_then(|m| m.modified()).unwrap();
        Snapshot { bytes, mtime }
    }

    /// Asserts `file` still has exactly these bytes (and, if `mtime`, the same mtime).
    #[track_caller]
    pub fn assert_unchanged(&self, file: &Path, mtime: bool, what: &str) {
        let now = Snapshot::of(file);
        assert!(
            now.bytes.len() == self.bytes.len(),
            "{what}: {} changed length from {} to {}",
            file.display(),
            self.bytes.len(),
            now.bytes.len()
        );
        if let Some(i) = now.bytes.iter().zip(&self.bytes).position(|(a, b)| a != b) {
            panic!(
                "{what}: {} changed; first differing byte at offset {i:#x}",
                file.display()
            );
        }
        if mtime {
            assert_eq!(
                now.mtime,
                self.mtime,
                "{what}: {} has a new mtime",
                file.display()
            );
        }
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vdisk-oracle-")
        .tempdir()
        .expect("tempdir")
}

/// The shared fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/real"
    ))
}

/// Decompresses fixture `name` (without `.bz2`) into `dir`; returns its path.
#[track_caller]
pub fn fixture(name: &str, dir: &Path) -> PathBuf {
    let src = fixtures_dir().join(format!("{name}.bz2"));
    assert!(src.is_file(), "fixture {} is missing", src.display());
    let dst = dir.join(name);
    let out = fs::File::create(&dst).expect("create fixture copy");
    let status = Command::new(require("bzcat", "bzip2"))
        .arg(&src)
        .stdout(out)
        .status()
        .expect("run bzcat");
    assert!(status.success(), "bzcat {} failed", src.display());
    dst
}

/// Copies `src` to `dir/name` and returns the new path.
#[track_caller]
pub fn copy_to(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    fs::copy(src, &dst).expect("copy image");
    dst
}

/// File length on the host.
#[track_caller]
pub fn file_len(file: &Path) -> u64 {
    fs::metadata(file)
        .unwrap_or_else(|e| panic!("stat {}: {e}", file.display()))
        .len()
}

/// The effective user id of this process (from /proc, so no unsafe code is needed).
pub fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .expect("Uid line in /proc/self/status")
}
