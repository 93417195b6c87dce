//! Stopping a real `vdisk compact` at seeded random moments, shared by `killed.rs`,
//! `killed_modes.rs` and `disk_full.rs`: the ways a run ends early (signals, a full host file
//! system, a file-size limit), seeded random numbers so a failure can be replayed, a tmpfs of a
//! chosen size that is unmounted however the test ends, qemu's view of a VHDX with a pending
//! log, and a spec-level VHDX BAT edit that marks blocks trimmed the way a guest's TRIM does.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::{Out, qemu_img, require, run, vdisk_cmd};

/// Exit code for "no space left on the host" (a full disk or a file-size limit).
pub const EXIT_NO_SPACE: i32 = 7;
/// Exit code of a run cancelled by SIGINT or SIGTERM.
pub const EXIT_CANCELLED: i32 = 8;

/// Deterministic pseudo-random numbers (xorshift64*), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// How a run is stopped before it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: no handler, the process ends between two system calls.
    Kill,
    /// SIGINT (Ctrl-C): vdisk stops between two units and exits 8.
    Int,
    /// SIGTERM: as SIGINT.
    Term,
    /// The host file system fills up (a tmpfs with little room): exit 7.
    DiskFull,
    /// A file-size limit (`prlimit --fsize`): writes past it fail, exit 7.
    FileSize,
}

impl Stop {
    /// Every way, in the order the tests run them.
    pub const ALL: [Stop; 5] = [
        Stop::Kill,
        Stop::Int,
        Stop::Term,
        Stop::DiskFull,
        Stop::FileSize,
    ];

    /// The name `kill -s` takes, for the signals.
    pub fn signal(self) -> Option<&'static str> {
        match self {
            Stop::Kill => Some("KILL"),
            Stop::Int => Some("INT"),
            Stop::Term => Some("TERM"),
            Stop::DiskFull | Stop::FileSize => None,
        }
    }

    /// Whether vdisk catches it and reports exit 8.
    pub fn cancels(self) -> bool {
        matches!(self, Stop::Int | Stop::Term)
    }

    /// The exit codes a run stopped this way may end with: finished (0), the code the stop
    /// must produce, or (for signals) death by the signal before the handler was set (-1).
    pub fn allowed_codes(self) -> &'static [i32] {
        match self {
            Stop::Kill => &[0, -1],
            Stop::Int | Stop::Term => &[0, EXIT_CANCELLED, -1],
            Stop::DiskFull | Stop::FileSize => &[0, EXIT_NO_SPACE],
        }
    }
}

/// Sends `signal` (`KILL`, `INT`, `TERM`) to `child`.
pub fn send(child: &mut Child, signal: &str) {
    if signal == "KILL" {
        let _ = child.kill();
        return;
    }
    let _ = Command::new(require("kill", "procps"))
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
}

/// `vdisk ARGS FILE` under `prlimit --fsize=LIMIT` as a user runs it: SIGXFSZ keeps its default
/// action (end the process), so only vdisk itself can turn the limit into an error message.
pub fn vdisk_under_fsize(limit: u64, args: &[&str], file: &Path) -> Out {
    let prlimit = require("prlimit", "util-linux");
    run(Command::new(prlimit)
        .arg(format!("--fsize={limit}"))
        .arg(vdisk_cmd().get_program())
        .args(args)
        .arg(file))
}

/// A tmpfs mounted at a folder for one test (the tests run as root); unmounted on drop, also
/// when the test panics.
pub struct Tmpfs {
    /// The mount point.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `dir` (created if missing).
    #[track_caller]
    pub fn mount(dir: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new(require("mount", "mount"))
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir))
        .ok();
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Changes the size to `size` bytes (at least what its files already use).
    #[track_caller]
    pub fn resize(&self, size: u64) {
        run(Command::new(require("mount", "mount"))
            .arg("-o")
            .arg(format!("remount,size={size}"))
            .arg(&self.dir))
        .ok();
    }
}

impl Drop for Tmpfs {
    /// Unmounts; another test thread's fork may briefly hold a file open ("target is busy"),
    /// so it tries again, and finally detaches the mount lazily.
    fn drop(&mut self) {
        for _ in 0..20 {
            let quiet = Command::new("umount")
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status();
            if quiet.is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Bytes of host space `file` occupies (its allocated blocks).
pub fn allocated(file: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(file).unwrap().blocks() * 512
}

/// What qemu should read of `file` (qemu format `format`): for VHDX a copy on which
/// `qemu-img check -r all` has replayed a pending log (a run killed between writing a log
/// entry and applying it leaves one; qemu, like Hyper-V, replays it before use and refuses a
/// read-only open until then); the file itself for VHD.
#[track_caller]
pub fn for_qemu(file: &Path, format: &str, what: &str) -> PathBuf {
    if format != "vhdx" {
        return file.to_path_buf();
    }
    let copy = file.with_extension("replayed.vhdx");
    std::fs::copy(file, &copy).unwrap();
    let out = qemu_img([
        OsStr::new("check"),
        OsStr::new("-q"),
        OsStr::new("-r"),
        OsStr::new("all"),
        OsStr::new("-f"),
        OsStr::new("vhdx"),
        copy.as_os_str(),
    ]);
    assert_eq!(
        out.code, 0,
        "{what}: qemu-img check -r all: {}{}",
        out.stdout, out.stderr
    );
    copy
}

/// VHDX BAT entry state PAYLOAD_BLOCK_UNMAPPED (trimmed by the guest; may keep its offset).
pub const VHDX_UNMAPPED: u64 = 3;
/// The BAT region's GUID 2DC27766-F623-4200-9D64-115E9BFD4A08 as stored (mixed endian).
const BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08,
];

/// VHDX BAT entry state PAYLOAD_BLOCK_ZERO (reads zeros, also in a differencing image).
pub const VHDX_ZERO: u64 = 2;

/// Where the VHDX `file`'s BAT entry of payload block `b` lies. From the VHDX specification:
/// region table at 192 KiB (16-byte header, 32-byte entries: GUID, u64 offset, u32 length,
/// u32 flags); payload entry i at index i + i / chunk_ratio, with chunk_ratio = 2^23 * 512 /
/// `block_size` (512-byte logical sectors).
fn bat_entry_at(f: &std::fs::File, block_size: u64, b: u64) -> u64 {
    let mut table = [0u8; 16 + 32 * 8];
    f.read_exact_at(&mut table, 192 << 10).unwrap();
    assert_eq!(&table[..4], b"regi", "no region table");
    let count = u32::from_le_bytes(table[8..12].try_into().unwrap()) as usize;
    let bat = (0..count.min(8))
        .map(|i| &table[16 + 32 * i..16 + 32 * (i + 1)])
        .find(|e| e[..16] == BAT_GUID)
        .map(|e| u64::from_le_bytes(e[16..24].try_into().unwrap()))
        .expect("the region table names the BAT");
    let chunk_ratio = (1u64 << 23) * 512 / block_size;
    bat + 8 * (b + b / chunk_ratio)
}

/// The state bits (0-2) of the BAT entries of payload blocks `0..blocks` of the VHDX `file`.
#[track_caller]
pub fn vhdx_states(file: &Path, block_size: u64, blocks: u64) -> Vec<u64> {
    let f = std::fs::File::open(file).unwrap();
    (0..blocks)
        .map(|b| {
            let mut entry = [0u8; 8];
            f.read_exact_at(&mut entry, bat_entry_at(&f, block_size, b))
                .unwrap();
            u64::from_le_bytes(entry) & 7
        })
        .collect()
}

/// Sets the state bits of the BAT entries of payload `blocks` of the VHDX `file` to `state`,
/// keeping their FileOffsetMB, as a guest's TRIM through Hyper-V leaves them (the BAT has no
/// checksum).
#[track_caller]
pub fn set_vhdx_states(file: &Path, block_size: u64, blocks: &[u64], state: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    for &b in blocks {
        let at = bat_entry_at(&f, block_size, b);
        let mut entry = [0u8; 8];
        f.read_exact_at(&mut entry, at).unwrap();
        let v = u64::from_le_bytes(entry) & !7 | state;
        f.write_all_at(&v.to_le_bytes(), at).unwrap();
    }
    f.sync_all().unwrap();
}
