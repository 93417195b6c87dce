//! Running the real `vdisk` binary under limits (timeout, address space, file size) and the
//! oracles nobody here wrote: `qemu-img compare`/`check` and libvhdi (pyvhdi through
//! `/usr/bin/python3`, which reads VHD/VHDX differencing chains qemu cannot open). A VDI
//! child, which neither opens, is read by qemu as a dynamic image and laid over qemu's read
//! of its parent where its map says free ([`vdi_chain_digest`]).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::{Format, vdi};

/// How a `vdisk` run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal that killed it (not counting our own timeout kill).
    pub signal: Option<i32>,
    /// It ran past the timeout and was killed.
    pub timed_out: bool,
    /// Standard error (first 64 KiB).
    pub stderr: String,
}

impl Outcome {
    /// The failure class of a run that must never end this way, whatever the input: a hang,
    /// memory exhaustion, a panic, a signal, or a usage error (the arguments are always valid,
    /// so exit 2 means an image problem was reported as the user's mistake).
    pub fn crash_class(&self) -> Option<&'static str> {
        if self.timed_out {
            Some("hang")
        } else if self.stderr.contains("memory allocation of") {
            Some("memory")
        } else if self.code == Some(101) || self.stderr.contains("panicked") {
            Some("panic")
        } else if self.signal == Some(25) {
            Some("file-size-limit")
        } else if self.signal.is_some() {
            Some("signal")
        } else if self.code == Some(2) {
            Some("usage-exit")
        } else {
            None
        }
    }

    /// One line: exit code or signal, and the first line of stderr.
    pub fn summary(&self) -> String {
        let how = match (self.timed_out, self.code, self.signal) {
            (true, ..) => "timed out".to_string(),
            (_, Some(c), _) => format!("exit {c}"),
            (_, _, Some(s)) => format!("signal {s}"),
            _ => "?".to_string(),
        };
        let first = self
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        format!("{how}: {}", first.chars().take(200).collect::<String>())
    }
}

/// Limits every `vdisk` run gets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock limit: past it the run is a hang.
    pub timeout: Duration,
    /// RLIMIT_AS in bytes.
    pub address_space: u64,
    /// RLIMIT_FSIZE in bytes (a file grown past it is a finding, not a full /tmp).
    pub file_size: u64,
}

/// Runs `vdisk ARGS` in `dir` under `limits` (through `prlimit`).
pub fn run_vdisk(vdisk: &Path, dir: &Path, args: &[&str], limits: &Limits) -> Outcome {
    let err_path = dir.join("stderr.txt");
    let Ok(err_file) = std::fs::File::create(&err_path) else {
        return failed_to_start("cannot create stderr file");
    };
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={}", limits.address_space))
        .arg(format!("--fsize={}", limits.file_size))
        .arg("--")
        .arg(vdisk)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed_to_start(&format!("cannot run prlimit: {e}")),
    };
    let started = Instant::now();
    let mut pause = Duration::from_micros(500);
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(s)) => break (Some(s), false),
            Ok(None) if started.elapsed() > limits.timeout => {
                let _ = child.kill();
                break (child.wait().ok(), true);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(_) => break (None, false),
        }
    };
    let mut stderr = std::fs::read(&err_path).unwrap_or_default();
    stderr.truncate(64 << 10);
    Outcome {
        code: status.and_then(|s| s.code()),
        signal: if timed_out {
            None
        } else {
            status.and_then(|s| s.signal())
        },
        timed_out,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn failed_to_start(why: &str) -> Outcome {
    Outcome {
        code: None,
        signal: None,
        timed_out: false,
        stderr: why.to_string(),
    }
}

fn quiet(cmd: &mut Command) -> (Option<i32>, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (None, format!("cannot run {cmd:?}: {e}")),
    }
}

/// qemu opens and reads `file` as `format` (`qemu-img compare` of the file with itself reads
/// every byte).
pub fn qemu_opens(format: Format, file: &Path) -> bool {
    qemu_compare(format, file, file).0 == Some(0)
}

/// `qemu-img check -r all -f vhdx FILE` replays a pending log (as Hyper-V would on open).
pub fn qemu_replay(file: &Path) -> bool {
    quiet(
        Command::new("qemu-img")
            .args(["check", "-q", "-r", "all", "-f", "vhdx"])
            .arg(file),
    )
    .0 == Some(0)
}

/// `qemu-img compare -f F -F F a b`: exit 0 same, 1 different, else an error.
pub fn qemu_compare(format: Format, a: &Path, b: &Path) -> (Option<i32>, String) {
    quiet(
        Command::new("qemu-img")
            .args(["compare", "-f", format.qemu(), "-F", format.qemu()])
            .arg(a)
            .arg(b),
    )
}

/// What `qemu-img check` finds: 0 nothing (`vpc` has no checker and says so with exit 63:
/// that counts as nothing, `qemu_compare` has read every byte), 1 leaked clusters only
/// (exit 3: harmless, a later run reclaims them), 2 corruption or a check that could not run.
pub fn qemu_check_level(format: Format, file: &Path) -> (u8, String) {
    let (code, text) = quiet(
        Command::new("qemu-img")
            .args(["check", "-f", format.qemu()])
            .arg(file),
    );
    let level = match code {
        Some(0) => 0,
        Some(63) if text.contains("does not support checks") => 0,
        Some(3) => 1,
        _ => 2,
    };
    (level, text)
}

/// `qemu-img check` finds nothing ([`qemu_check_level`] 0).
pub fn qemu_check(format: Format, file: &Path) -> (bool, String) {
    let (level, text) = qemu_check_level(format, file);
    (level == 0, text)
}

const PYVHDI: &str = "
import hashlib, sys, pyvhdi
path, parent, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
zero = set(int(x) for x in sys.argv[4].split(',') if x)
f = pyvhdi.file(); f.open(path)
if parent:
    p = pyvhdi.file(); p.open(parent); f.set_parent(p)
n = f.get_media_size(); h = hashlib.sha256(); off = 0
step = block if block else 1 << 20
while off < n:
    want = min(step, n - off)
    if block and off // block in zero:
        b = bytes(want)
    else:
        b = f.read_buffer_at_offset(want, off)
    if len(b) != want: sys.exit('short read')
    h.update(b); off += want
print(n, h.hexdigest())
";

/// What libvhdi reads through `file` (with `parent` set): media size and SHA-256, or why
/// it refused. `zero`: block size and the blocks to read as zeros instead (VHDX blocks in
/// state ZERO, which libvhdi reads through to the parent).
pub fn libvhdi_digest(
    file: &Path,
    parent: Option<&Path>,
    zero: Option<(u64, Vec<u64>)>,
) -> Result<String, String> {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c").arg(PYVHDI).arg(file);
    cmd.arg(parent.map(Path::as_os_str).unwrap_or_default());
    let (block, list) = zero.unwrap_or_default();
    let list: Vec<String> = list.iter().map(u64::to_string).collect();
    cmd.arg(block.to_string()).arg(list.join(","));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run /usr/bin/python3: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().last().unwrap_or("").to_string())
    }
}

/// A copy of the VDI `file` at `to` with its image type set to dynamic and its parent links
/// (link UUID, parent modification UUID) nil, so qemu (which opens no differencing VDI, nor
/// one with a link) reads its blocks: free and zero entries read zeros, the rest its data.
pub fn vdi_as_dynamic(file: &Path, to: &Path) -> Result<(), String> {
    let mut b = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let at = vdi::IMAGE_TYPE as usize;
    if b.len() >= at + 4 {
        b[at..at + 4].copy_from_slice(&vdi::TYPE_DYNAMIC.to_le_bytes());
    }
    if let Some(links) = b.get_mut(vdi::LINKS..vdi::LINKS + 32) {
        links.fill(0);
    }
    std::fs::write(to, b).map_err(|e| format!("{}: {e}", to.display()))
}

fn qemu_raw(format: &str, file: &Path, to: &Path) -> Result<Vec<u8>, String> {
    let (code, text) = quiet(
        Command::new("qemu-img")
            .args(["convert", "-f", format, "-O", "raw"])
            .arg(file)
            .arg(to),
    );
    if code != Some(0) {
        return Err(format!("qemu-img convert: {}", text.trim()));
    }
    std::fs::read(to).map_err(|e| format!("{}: {e}", to.display()))
}

/// What a VDI differencing chain reads, by qemu: each block of the child is qemu's read of
/// the child as a dynamic image ([`vdi_as_dynamic`]) unless the child's map entry is free,
/// then qemu's read of `parent` (zeros past its end); a file whose type is no longer
/// differencing reads as itself alone. Media size and a 128-bit digest, or
/// why qemu refused. `scratch` is a folder for the copies.
pub fn vdi_chain_digest(child: &Path, parent: &Path, scratch: &Path) -> Result<String, String> {
    let bytes = std::fs::read(child).map_err(|e| format!("{}: {e}", child.display()))?;
    let (block, _, map) = vdi::map(&bytes).ok_or("the block map is not inside the file")?;
    if vdi::Header::read(&bytes).block_extra != 0 {
        // qemu reads slot n at data + n * block size, ignoring the extra data VirtualBox
        // puts before each block: its view of such a file is not the content.
        return Err("qemu ignores the block extra data of this image".into());
    }
    let patched = scratch.join("chain-child.vdi");
    vdi_as_dynamic(child, &patched)?;
    let mine = qemu_raw("vdi", &patched, &scratch.join("chain-child.raw"))?;
    let theirs = qemu_raw("vdi", parent, &scratch.join("chain-parent.raw"))?;
    let block = usize::try_from(block).map_err(|e| e.to_string())?;
    // A child whose type no longer says differencing is an image of its own: its free
    // blocks read zeros, not the parent's.
    let differencing = vdi::image_type(&bytes) == vdi::TYPE_DIFFERENCING;
    let mut out = Vec::with_capacity(mine.len());
    for (i, chunk) in mine.chunks(block).enumerate() {
        if differencing && map.get(i) == Some(&vdi::FREE) {
            let from = (i * block).min(theirs.len());
            let to = (from + chunk.len()).min(theirs.len());
            out.extend_from_slice(&theirs[from..to]);
            out.resize(i * block + chunk.len(), 0);
        } else {
            out.extend_from_slice(chunk);
        }
    }
    let digest = |salt: u64| {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&salt, &mut h);
        std::hash::Hash::hash(&out, &mut h);
        std::hash::Hasher::finish(&h)
    };
    Ok(format!(
        "{} {:016x}{:016x}",
        out.len(),
        digest(1),
        digest(2)
    ))
}

/// Fails naming the package when an oracle is missing (never a silent skip).
pub fn require_oracles() -> Result<(), String> {
    for (tool, package) in [
        ("qemu-img", "qemu-utils"),
        ("qemu-io", "qemu-utils"),
        ("prlimit", "util-linux"),
        ("fallocate", "util-linux"),
    ] {
        super::seeds::require(tool, package)?;
    }
    let (code, text) = quiet(Command::new("/usr/bin/python3").args(["-c", "import pyvhdi"]));
    if code != Some(0) {
        return Err(format!(
            "pyvhdi is missing for /usr/bin/python3: install the Debian package \
             `python3-libvhdi` ({})",
            text.trim()
        ));
    }
    Ok(())
}
