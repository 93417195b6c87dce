//! Running one tool once and measuring it: wall time, and from `/usr/bin/time` the child's
//! peak RSS and block I/O. Also file sizes (apparent and allocated) and the correctness check.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vdisk_core::{HostFile, StdFile};

/// GNU time, used for the child's peak RSS and I/O (Debian package `time`).
const GNU_TIME: &str = "/usr/bin/time";

/// One run of one tool.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Wall time in seconds.
    pub wall: f64,
    /// Peak resident set of the child, KiB (None without GNU time).
    pub rss_kib: Option<u64>,
    /// File-system inputs and outputs of the child in 512-byte blocks (None without GNU time).
    /// These count I/O that reached the block layer; page-cache hits are not in them.
    pub io_blocks: Option<(u64, u64)>,
    /// What the tool printed on stdout.
    pub stdout: String,
}

/// Apparent size (`st_size`) and allocated bytes (`st_blocks * 512`) of a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSize {
    pub len: u64,
    pub alloc: u64,
}

/// Whether GNU time is there to measure RSS and I/O.
pub fn have_gnu_time() -> bool {
    Path::new(GNU_TIME).is_file()
}

/// Runs `program args`, under GNU time when present; fails unless it exits 0.
pub fn run_timed(program: &OsStr, args: &[&OsStr], stats_file: &Path) -> Result<Sample, String> {
    let shown = || {
        let mut s = program.to_string_lossy().into_owned();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let gnu = have_gnu_time();
    let mut cmd = if gnu {
        let mut c = Command::new(GNU_TIME);
        c.arg("-f").arg("%M %I %O").arg("-o").arg(stats_file);
        c.arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", shown()))?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}{}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (mut rss_kib, mut io_blocks) = (None, None);
    if gnu {
        let text = std::fs::read_to_string(stats_file)
            .map_err(|e| format!("cannot read {}: {e}", stats_file.display()))?;
        // The last line holds the numbers (earlier ones would be notes such as a signal).
        let nums: Vec<u64> = text
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [rss, read, written] = nums[..] {
            rss_kib = Some(rss);
            io_blocks = Some((read, written));
        }
    }
    Ok(Sample {
        wall,
        rss_kib,
        io_blocks,
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    })
}

/// Sizes of `path`.
pub fn file_size(path: &Path) -> Result<FileSize, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    Ok(FileSize {
        len: m.len(),
        alloc: m.blocks() * 512,
    })
}

/// Copies the pristine image and checks the copy kept its holes (it should: `std::fs::copy`
/// uses `copy_file_range` on Linux). Returns a warning if the copy is clearly less sparse.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<Option<String>, String> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    let (src, dst) = (file_size(from)?, file_size(to)?);
    // Allow a little slack for file-system allocation granularity.
    if dst.alloc > src.alloc + src.alloc / 10 + (1 << 20) {
        Ok(Some(format!(
            "the copy of {} lost holes ({} allocated bytes, source {}): vdisk starts from a \
             less sparse file than the original",
            from.display(),
            dst.alloc,
            src.alloc
        )))
    } else {
        Ok(None)
    }
}

/// `qemu-img compare`: fails unless both images have identical content.
pub fn same_content(format: &str, a: &Path, b: &Path) -> Result<(), String> {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", format, "-F", format])
        .arg(a)
        .arg(b)
        .output()
        .map_err(|e| format!("cannot run qemu-img compare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "CONTENT MISMATCH: `qemu-img compare` of {} and {} says ({}):\n{}{}",
            a.display(),
            b.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The median of a non-empty list (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Output of a command's stdout, trimmed; "?" if it cannot run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".to_string())
}

/// Writes back `path`'s dirty pages and waits for them (the file stays in the page cache), so
/// the next timed tool starts from a clean, warm file and pays only for its own writes.
pub fn settle(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

/// The unsigned number of field `name` in vdisk's `--json` report (the first occurrence).
pub fn report_field(report: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let rest = report[report.find(&key)? + key.len()..].trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What the vdisk run of a case moved, from its `--json` report: bytes moved and the final
/// file length. `None` when it moved nothing (no floor to measure).
pub fn moved_by(report: &str) -> Option<(u64, u64)> {
    let field = |name: &str| report_field(report, name);
    let moved = field("blocks_moved")?.checked_mul(field("block_size")?)?;
    (moved > 0).then_some((moved, field("bytes_after")?))
}

/// The arguments of `xtask bench-floor` (see [`floor`]) for an in-place compaction that
/// moved `moved` bytes of `file` and left it `after` bytes long: the bytes are taken from the
/// end of the file and put right after its first MiB.
pub fn floor_args(file: &Path, moved: u64, after: u64) -> Result<Vec<String>, String> {
    let len = file_size(file)?.len;
    let from = len
        .checked_sub(moved)
        .filter(|&f| f >= moved + (1 << 20))
        .ok_or_else(|| format!("cannot place a {moved}-byte floor move in {len} bytes"))?;
    Ok(vec![
        "bench-floor".into(),
        file.display().to_string(),
        from.to_string(),
        (1u64 << 20).to_string(),
        moved.to_string(),
        after.to_string(),
    ])
}

/// `xtask bench-floor FILE FROM TO LEN AFTER`: the hardware floor of an in-place compaction.
/// Copies LEN bytes from FROM to TO inside FILE with vdisk's own in-kernel copy (32 MiB at a
/// time, as relocation does), syncs once, truncates to AFTER and syncs again. No planning, no
/// metadata, no crash-safety ordering: the I/O any durable in-place compaction that moves
/// those bytes must at least do on this disk, with the same copy primitive.
pub fn floor(args: &[String]) -> Result<(), String> {
    let [file, from, to, len, after] = args else {
        return Err("bench-floor takes FILE FROM TO LEN AFTER".into());
    };
    let num = |s: &String| s.parse::<u64>().map_err(|_| format!("{s:?}: not a number"));
    let (from, to, len, after) = (num(from)?, num(to)?, num(len)?, num(after)?);
    let e = |e: vdisk_core::Error| e.to_string();
    let f = StdFile::open(file, vdisk_core::Access::ReadWrite).map_err(e)?;
    let piece = 32u64 << 20;
    let mut done = 0;
    while done < len {
        let n = piece.min(len - done);
        f.copy_within(from + done, to + done, n).map_err(e)?;
        done += n;
    }
    f.sync().map_err(e)?;
    f.set_len(after).map_err(e)?;
    f.sync().map_err(e)
}
