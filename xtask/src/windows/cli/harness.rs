//! The pieces the Windows CLI cases share: running `vdisk.exe` under Wine and the Linux
//! `vdisk` side by side, Wine paths, qemu-made images and the Linux-side checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use super::super::Wine;
use crate::mutate::mutfuzz::layout::Format;
use crate::mutate::mutfuzz::oracle::{qemu_check, qemu_compare};

pub(super) const MIB: u64 = 1 << 20;

pub(super) fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One case of the suite.
pub(super) type Case = fn(&Tools) -> Result<(), String>;

/// What the cases run.
pub(super) struct Tools {
    pub(super) wine: Wine,
    pub(super) exe: PathBuf,
    pub(super) linux: PathBuf,
    pub(super) dir: PathBuf,
}

/// One run of a vdisk: exit code, stdout, stderr.
pub(super) struct Run {
    pub(super) code: Option<i32>,
    pub(super) out: String,
    pub(super) err: String,
    pub(super) what: String,
}

impl Run {
    pub(super) fn from(output: Output, what: String) -> Run {
        Run {
            code: output.status.code(),
            out: String::from_utf8_lossy(&output.stdout).into_owned(),
            err: String::from_utf8_lossy(&output.stderr).into_owned(),
            what,
        }
    }

    /// The run's description for a failure message.
    pub(super) fn show(&self) -> String {
        format!(
            "  {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
            self.what,
            self.code,
            self.out.trim(),
            self.err.trim()
        )
    }

    pub(super) fn expect(self, code: i32) -> Result<Run, String> {
        if self.code == Some(code) {
            Ok(self)
        } else {
            Err(format!("expected exit {code}:\n{}", self.show()))
        }
    }
}

impl Tools {
    /// `vdisk.exe ARGS` under Wine; paths in `args` are Windows paths already.
    pub(super) fn win(&self, args: &[&str]) -> Result<Run, String> {
        let out = self
            .wine
            .command()
            .arg(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run wine: {e}"))?;
        Ok(Run::from(out, format!("wine vdisk.exe {}", args.join(" "))))
    }

    /// The Linux `vdisk ARGS`.
    pub(super) fn lin(&self, args: &[&str]) -> Result<Run, String> {
        let out = Command::new(&self.linux)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.linux.display()))?;
        Ok(Run::from(out, format!("vdisk {}", args.join(" "))))
    }

    /// A fresh folder for one case.
    pub(super) fn folder(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    }
}

/// The Linux path `p` as Wine's drive Z: names it (`Z:\work\...`).
pub(super) fn winpath(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// The Linux `vdisk`: the binary `cargo test --workspace` builds for the CLI's integration
/// tests, asked for with the same feature resolution (every member's tests), so right after
/// that run (CI) this builds nothing. A `cargo build -p vdisk-cli` would resolve fewer
/// features (serde, zerocopy, vdisk-core) or another profile and rebuild the whole workspace.
pub(super) fn linux_vdisk() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::windows::run_status(
        Command::new(cargo).args(["test", "--workspace", "--no-run", "--test", "main"]),
        "cargo test --workspace --no-run --test main (the linux vdisk)",
    )?;
    Ok(crate::shared::target_dir().join("debug/vdisk"))
}

pub(super) fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed ({}): {text}", out.status))
    }
}

/// A 64 MiB dynamic image made by qemu-img and filled by qemu-io: data, allocated blocks of
/// zeros (what `prezeroed` and `full` reclaim), more data after them (what the moves carry).
pub(super) fn qemu_image(format: Format, path: &Path) -> Result<(), String> {
    let mut create = Command::new("qemu-img");
    create.args(["create", "-q", "-f", format.qemu()]);
    if format == Format::Vhdx {
        create.args(["-o", "block_size=1M"]);
    }
    sh(create.arg(path).arg("64M"))?;
    let writes = [
        "write -P 0x11 0 1M",
        "write -P 0 8M 4M",
        "write -P 0x22 20M 3M",
        "write -P 0 32M 6M",
        "write -P 0x33 50M 512k",
        "write -P 0x44 62M 2M",
    ];
    let mut io = Command::new("qemu-io");
    io.args(["-f", format.qemu()]);
    for w in writes {
        io.args(["-c", w]);
    }
    sh(io.arg(path)).map(drop)
}

pub(super) fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

pub(super) fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// `text` with both spellings of the image's path (Windows, JSON-escaped, and Linux) replaced
/// by `FILE`: what remains must be the same on both hosts.
pub(super) fn normalise(text: &str, win: &Path, lin: &Path) -> String {
    let escaped = winpath(win).replace('\\', "\\\\");
    text.replace(&escaped, "FILE")
        .replace(&winpath(win), "FILE")
        .replace(&lin.display().to_string(), "FILE")
}

/// qemu reads `image` exactly as `reference`, and `qemu-img check` passes.
pub(super) fn qemu_same(format: Format, reference: &Path, image: &Path) -> Result<(), String> {
    let (code, text) = qemu_compare(format, reference, image);
    if code != Some(0) {
        return Err(format!(
            "qemu-img compare {} {}: exit {code:?}: {text}",
            reference.display(),
            image.display()
        ));
    }
    let (ok, text) = qemu_check(format, image);
    if !ok {
        return Err(format!("qemu-img check {}: {text}", image.display()));
    }
    Ok(())
}

pub(super) fn len(p: &Path) -> Result<u64, String> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Bytes the file occupies on the Linux side (512-byte blocks), to tell a sparse file.
pub(super) fn allocated(p: &Path) -> Result<u64, String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .map(|m| m.blocks() * 512)
        .map_err(|e| format!("{}: {e}", p.display()))
}

pub(super) fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}
