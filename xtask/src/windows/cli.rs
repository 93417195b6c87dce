//! `cargo xtask windows cli-test`: the real `vdisk.exe` under Wine on images qemu made and
//! filled on the Linux side, every result checked on the Linux side with qemu-img and libvhdi,
//! and every answer compared with the Linux `vdisk` on a copy of the same file.
//!
//! What a case protects is its function's name. A case fails with the command, its exit code
//! and its output; a missing tool fails the suite (never skips it).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vdisk_core::{Access, FormatDriver, OpenOptions, StdFile};

use super::Wine;
use crate::mutate::mutfuzz::layout::Format;
use crate::mutate::mutfuzz::oracle::{libvhdi_digest, qemu_check, qemu_compare};
use crate::mutate::mutfuzz::seeds::require;

const MIB: u64 = 1 << 20;
/// Every mode the CLI knows.
const MODES: [&str; 5] = ["full", "quick", "prezeroed", "pretrimmed", "retrim"];

/// Runs the suite; prints the size and start-up time of `vdisk.exe`.
pub fn run() -> Result<(), String> {
    for (tool, package) in [("qemu-img", "qemu-utils"), ("qemu-io", "qemu-utils")] {
        require(tool, package)?;
    }
    let exe = super::build_vdisk_exe()?;
    let wine = Wine::prepare()?;
    let linux = linux_vdisk()?;
    let dir = super::windows_dir().join("cli-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let t = Tools {
        wine,
        exe,
        linux,
        dir,
    };
    let started = Instant::now();
    let cases: [(&str, Case); 7] = [
        (
            "startup_time_and_size_are_reported",
            startup_time_and_size_are_reported,
        ),
        (
            "every_mode_and_dry_run_answers_as_on_linux_and_qemu_reads_every_byte_the_same",
            every_mode_and_dry_run_answers_as_on_linux_and_qemu_reads_every_byte_the_same,
        ),
        (
            "retrim_is_refused_on_windows_before_anything_is_written",
            retrim_is_refused_on_windows_before_anything_is_written,
        ),
        (
            "images_created_on_windows_pass_qemu_check_and_match_linux_ones",
            images_created_on_windows_pass_qemu_check_and_match_linux_ones,
        ),
        (
            "a_differencing_chain_made_on_windows_stores_drive_letter_paths_and_compacts_identically",
            a_differencing_chain_made_on_windows_stores_drive_letter_paths_and_compacts_identically,
        ),
        (
            "a_file_another_windows_process_holds_for_writing_is_in_use_exit_3_and_unchanged",
            a_file_another_windows_process_holds_for_writing_is_in_use_exit_3_and_unchanged,
        ),
        (
            "a_file_with_the_read_only_attribute_gives_exit_6_and_is_unchanged",
            a_file_with_the_read_only_attribute_gives_exit_6_and_is_unchanged,
        ),
    ];
    let mut failed = Vec::new();
    for (name, case) in cases {
        let at = Instant::now();
        match case(&t) {
            Ok(()) => println!("windows cli: {name} ... ok ({:.1} s)", secs(at)),
            Err(e) => {
                println!("windows cli: {name} ... FAILED\n{e}");
                failed.push(name);
            }
        }
    }
    println!("windows cli: {:.1} s in all", secs(started));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("windows cli cases failed: {}", failed.join(", ")))
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One case of the suite.
type Case = fn(&Tools) -> Result<(), String>;

/// What the cases run.
struct Tools {
    wine: Wine,
    exe: PathBuf,
    linux: PathBuf,
    dir: PathBuf,
}

/// One run of a vdisk: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
    what: String,
}

impl Run {
    fn from(output: Output, what: String) -> Run {
        Run {
            code: output.status.code(),
            out: String::from_utf8_lossy(&output.stdout).into_owned(),
            err: String::from_utf8_lossy(&output.stderr).into_owned(),
            what,
        }
    }

    /// The run's description for a failure message.
    fn show(&self) -> String {
        format!(
            "  {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
            self.what,
            self.code,
            self.out.trim(),
            self.err.trim()
        )
    }

    fn expect(self, code: i32) -> Result<Run, String> {
        if self.code == Some(code) {
            Ok(self)
        } else {
            Err(format!("expected exit {code}:\n{}", self.show()))
        }
    }
}

impl Tools {
    /// `vdisk.exe ARGS` under Wine; paths in `args` are Windows paths already.
    fn win(&self, args: &[&str]) -> Result<Run, String> {
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
    fn lin(&self, args: &[&str]) -> Result<Run, String> {
        let out = Command::new(&self.linux)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.linux.display()))?;
        Ok(Run::from(out, format!("vdisk {}", args.join(" "))))
    }

    /// A fresh folder for one case.
    fn folder(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    }
}

/// The Linux path `p` as Wine's drive Z: names it (`Z:\work\...`).
fn winpath(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// The Linux `vdisk` (debug build of the default toolchain; quick when `cargo test` ran).
fn linux_vdisk() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    super::run_status(
        Command::new(cargo).args(["build", "-p", "vdisk-cli", "--bin", "vdisk"]),
        "cargo build -p vdisk-cli (linux)",
    )?;
    Ok(crate::shared::target_dir().join("debug/vdisk"))
}

fn sh(cmd: &mut Command) -> Result<String, String> {
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
fn qemu_image(format: Format, path: &Path) -> Result<(), String> {
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

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// `text` with both spellings of the image's path (Windows, JSON-escaped, and Linux) replaced
/// by `FILE`: what remains must be the same on both hosts.
fn normalise(text: &str, win: &Path, lin: &Path) -> String {
    let escaped = winpath(win).replace('\\', "\\\\");
    text.replace(&escaped, "FILE")
        .replace(&winpath(win), "FILE")
        .replace(&lin.display().to_string(), "FILE")
}

/// qemu reads `image` exactly as `reference`, and `qemu-img check` passes.
fn qemu_same(format: Format, reference: &Path, image: &Path) -> Result<(), String> {
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

fn startup_time_and_size_are_reported(t: &Tools) -> Result<(), String> {
    let size = std::fs::metadata(&t.exe).map_err(|e| e.to_string())?.len();
    // The first run starts the wineserver; the rest is what a user waits for.
    t.win(&["--version"])?.expect(0)?;
    let runs = 5;
    let at = Instant::now();
    for _ in 0..runs {
        t.win(&["--version"])?.expect(0)?;
    }
    let each = at.elapsed() / runs;
    let linux = Instant::now();
    t.lin(&["--version"])?.expect(0)?;
    println!(
        "windows cli: vdisk.exe (test profile) is {:.1} MiB; `vdisk.exe --version` under wine \
         takes {} ms (the Linux binary: {} ms)",
        size as f64 / MIB as f64,
        each.as_millis(),
        linux.elapsed().as_millis()
    );
    if each > Duration::from_secs(5) {
        return Err(format!("start-up under wine took {each:?}"));
    }
    Ok(())
}

fn every_mode_and_dry_run_answers_as_on_linux_and_qemu_reads_every_byte_the_same(
    t: &Tools,
) -> Result<(), String> {
    for format in [Format::Vhd, Format::Vhdx] {
        let base = t.folder(&format!("modes-{}", format.name()))?;
        let orig = base.join(format!("orig.{}", format.ext()));
        qemu_image(format, &orig)?;
        let name = format!("image.{}", format.ext());
        let (wdir, ldir) = (base.join("win"), base.join("lin"));
        for d in [&wdir, &ldir] {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let (w, l) = (wdir.join(&name), ldir.join(&name));
        copy(&orig, &w)?;
        copy(&orig, &l)?;
        let ws = winpath(&w);
        let ls = l.display().to_string();
        for args in [["info", "--json"], ["check", "--json"]] {
            let a = t.win(&[args[0], args[1], &ws])?.expect(0)?;
            let b = t.lin(&[args[0], args[1], &ls])?.expect(0)?;
            if normalise(&a.out, &w, &l) != normalise(&b.out, &w, &l) {
                return Err(format!(
                    "windows and linux differ:\n{}\n{}",
                    a.show(),
                    b.show()
                ));
            }
        }
        let original = read(&orig)?;
        for mode in MODES.iter().filter(|m| **m != "retrim") {
            for dry in [true, false] {
                copy(&orig, &w)?;
                copy(&orig, &l)?;
                let mut args = vec!["compact", "--json", "--mode", mode];
                if dry {
                    args.push("--dry-run");
                }
                let a = t.win(&[args.as_slice(), &[ws.as_str()]].concat())?;
                let b = t.lin(&[args.as_slice(), &[ls.as_str()]].concat())?;
                if a.code != b.code || normalise(&a.out, &w, &l) != normalise(&b.out, &w, &l) {
                    return Err(format!(
                        "windows and linux differ:\n{}\n{}",
                        a.show(),
                        b.show()
                    ));
                }
                if a.code != Some(0) {
                    return Err(format!("compaction failed on both hosts:\n{}", a.show()));
                }
                if dry && read(&w)? != original {
                    return Err(format!("the dry run changed the file:\n{}", a.show()));
                }
                qemu_same(format, &orig, &w).map_err(|e| format!("{e}\n{}", a.show()))?;
                let (wl, ll) = (len(&w)?, len(&l)?);
                if wl != ll {
                    return Err(format!(
                        "windows left {wl} bytes, linux {ll}:\n{}\n{}",
                        a.show(),
                        b.show()
                    ));
                }
                let shrinks = !dry && matches!(*mode, "full" | "prezeroed");
                if shrinks && wl >= original.len() as u64 {
                    return Err(format!("{mode} freed nothing:\n{}", a.show()));
                }
            }
        }
    }
    Ok(())
}

fn len(p: &Path) -> Result<u64, String> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Bytes the file occupies on the Linux side (512-byte blocks), to tell a sparse file.
fn allocated(p: &Path) -> Result<u64, String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .map(|m| m.blocks() * 512)
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn retrim_is_refused_on_windows_before_anything_is_written(t: &Tools) -> Result<(), String> {
    for format in [Format::Vhd, Format::Vhdx] {
        let dir = t.folder(&format!("retrim-{}", format.name()))?;
        let orig = dir.join(format!("orig.{}", format.ext()));
        qemu_image(format, &orig)?;
        let fixed = dir.join(format!("fixed.{}", format.ext()));
        let fixed_win = winpath(&fixed);
        t.win(&["create", "--type", "fixed", "--size", "16M", &fixed_win])?
            .expect(0)?;
        for image in [&orig, &fixed] {
            let before = read(image)?;
            let held = allocated(image)?;
            for dry in [false, true] {
                let mut args = vec!["compact", "--mode", "retrim"];
                if dry {
                    args.push("--dry-run");
                }
                let path = winpath(image);
                args.push(&path);
                let run = t.win(&args)?.expect(5)?;
                if !run.err.contains("sparse") || !run.err.contains("nothing was changed") {
                    return Err(format!("the refusal does not say why:\n{}", run.show()));
                }
                if read(image)? != before || allocated(image)? != held {
                    return Err(format!(
                        "the refused retrim changed the file:\n{}",
                        run.show()
                    ));
                }
            }
        }
    }
    Ok(())
}

fn images_created_on_windows_pass_qemu_check_and_match_linux_ones(t: &Tools) -> Result<(), String> {
    let dir = t.folder("create")?;
    for format in [Format::Vhd, Format::Vhdx] {
        for kind in ["dynamic", "fixed"] {
            let name = format!("{kind}.{}", format.ext());
            let (w, l) = (dir.join(format!("w-{name}")), dir.join(format!("l-{name}")));
            let args = ["create", "--type", kind, "--size", "24M"];
            let ws = winpath(&w);
            let ls = l.display().to_string();
            t.win(&[args.as_slice(), &[ws.as_str()]].concat())?
                .expect(0)?;
            t.lin(&[args.as_slice(), &[ls.as_str()]].concat())?
                .expect(0)?;
            qemu_same(format, &l, &w)?;
            if len(&w)? != len(&l)? {
                return Err(format!(
                    "{name}: windows and linux made files of different sizes"
                ));
            }
            t.win(&["check", &ws])?.expect(0)?;
            t.lin(&["check", &ls])?.expect(0)?;
        }
    }
    Ok(())
}

/// Writes `(offset, byte, len)` through vdisk's own driver (qemu cannot write differencing
/// VHDX or VHD chains).
fn write_through_library(
    format: Format,
    file: &Path,
    writes: &[(u64, u8, usize)],
) -> Result<(), String> {
    let driver: &dyn FormatDriver = match format {
        Format::Vhd => &vdisk_vhd::DRIVER,
        Format::Vhdx => &vdisk_vhdx::DRIVER,
    };
    let f = StdFile::open(file, Access::ReadWrite).map_err(|e| e.to_string())?;
    let img = driver
        .open(Box::new(f), &OpenOptions::read_write())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    for &(at, byte, len) in writes {
        img.write_at(&vec![byte; len], at)
            .map_err(|e| e.to_string())?;
    }
    img.flush().map_err(|e| e.to_string())
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn a_differencing_chain_made_on_windows_stores_drive_letter_paths_and_compacts_identically(
    t: &Tools,
) -> Result<(), String> {
    for format in [Format::Vhd, Format::Vhdx] {
        let dir = t.folder(&format!("chain-{}", format.name()))?;
        let parent = dir.join(format!("base.{}", format.ext()));
        qemu_image(format, &parent)?;
        let child = dir.join(format!("child.{}", format.ext()));
        let (ps, cs) = (winpath(&parent), winpath(&child));
        t.win(&["create", "--type", "differencing", "--parent", &ps, &cs])?
            .expect(0)?;
        // The absolute locator is the drive-letter path Windows itself would write, without
        // the `\\?\` prefix a canonical path carries.
        let bytes = read(&child)?;
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        if !contains(&utf16(&ps)) || contains(&utf16("\\\\?\\")) {
            return Err(format!(
                "{}: the locators do not hold {ps} as a plain drive-letter path",
                child.display()
            ));
        }
        // Blocks that repeat the parent (reclaimable), blocks of its own, a zero block.
        write_through_library(
            format,
            &child,
            &[
                (0, 0x11, 1 << 20),
                (20 * MIB, 0x22, 2 << 20),
                (44 * MIB, 0x5a, 1 << 20),
                (56 * MIB, 0x00, 2 << 20),
            ],
        )?;
        let before = libvhdi_digest(&child, Some(&parent), None)?;
        let info = t.win(&["info", "--json", &cs])?.expect(0)?;
        if !info
            .out
            .to_lowercase()
            .contains(&ps.replace('\\', "\\\\").to_lowercase())
        {
            return Err(format!(
                "info does not show the parent chain:\n{}",
                info.show()
            ));
        }
        t.win(&["check", &cs])?.expect(0)?;
        let size = len(&child)?;
        let run = t
            .win(&["compact", "--json", "--mode", "prezeroed", &cs])?
            .expect(0)?;
        let after = libvhdi_digest(&child, Some(&parent), None)?;
        if before != after {
            return Err(format!(
                "libvhdi reads the child differently after compaction:\n{}",
                run.show()
            ));
        }
        if len(&child)? >= size {
            return Err(format!("the child did not shrink:\n{}", run.show()));
        }
        t.lin(&["check", &child.display().to_string()])?.expect(0)?;
    }
    Ok(())
}

fn a_file_another_windows_process_holds_for_writing_is_in_use_exit_3_and_unchanged(
    t: &Tools,
) -> Result<(), String> {
    let dir = t.folder("in-use")?;
    for format in [Format::Vhd, Format::Vhdx] {
        let image = dir.join(format!("held.{}", format.ext()));
        qemu_image(format, &image)?;
        let before = read(&image)?;
        let path = winpath(&image);
        let mut holder = t
            .wine
            .command()
            .arg(&t.wine.holder)
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start holder.exe: {e}"))?;
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
        }
        let result = (|| {
            if line.trim() != "held" {
                return Err(format!("holder.exe did not hold the file: {line:?}"));
            }
            for args in [
                vec!["compact", path.as_str()],
                vec!["compact", "--dry-run", path.as_str()],
                vec!["info", path.as_str()],
            ] {
                let run = t.win(&args)?.expect(3)?;
                if !run.err.contains("in use") {
                    return Err(format!("no \"in use\" message:\n{}", run.show()));
                }
            }
            Ok(())
        })();
        // Closing its input ends the holder, which closes the file.
        if let Some(mut stdin) = holder.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = holder.wait();
        result?;
        if read(&image)? != before {
            return Err("the held file was changed".into());
        }
        t.win(&["compact", &path])?.expect(0)?;
        qemu_check(format, &image)
            .0
            .then_some(())
            .ok_or("qemu-img check failed")?;
    }
    Ok(())
}

fn a_file_with_the_read_only_attribute_gives_exit_6_and_is_unchanged(
    t: &Tools,
) -> Result<(), String> {
    let dir = t.folder("read-only")?;
    for format in [Format::Vhd, Format::Vhdx] {
        let image = dir.join(format!("ro.{}", format.ext()));
        qemu_image(format, &image)?;
        let before = read(&image)?;
        let path = winpath(&image);
        let attrib = |flag: &str| {
            t.wine
                .command()
                .args(["cmd", "/c", "attrib", flag, &path])
                .output()
                .map_err(|e| format!("cannot run wine cmd /c attrib: {e}"))
                .and_then(|o| {
                    o.status
                        .success()
                        .then_some(())
                        .ok_or(format!("attrib {flag} {path} failed"))
                })
        };
        attrib("+r")?;
        let result = (|| {
            let run = t.win(&["compact", &path])?.expect(6)?;
            if !run.err.contains("read-only") {
                return Err(format!(
                    "the message does not say read-only:\n{}",
                    run.show()
                ));
            }
            // Reading needs no write access.
            t.win(&["info", &path])?.expect(0)?;
            t.win(&["compact", "--dry-run", &path])?.expect(0).map(drop)
        })();
        attrib("-r")?;
        result?;
        if read(&image)? != before {
            return Err("the read-only file was changed".into());
        }
    }
    Ok(())
}
