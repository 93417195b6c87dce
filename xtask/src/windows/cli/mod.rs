//! `cargo xtask windows cli-test`: the real `vdisk.exe` under Wine on images qemu made and
//! filled on the Linux side, every result checked on the Linux side with qemu-img and libvhdi,
//! and every answer compared with the Linux `vdisk` on a copy of the same file.
//!
//! What a case protects is its function's name. A case fails with the command, its exit code
//! and its output; a missing tool fails the suite (never skips it).

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{
    Case, MIB, Tools, allocated, copy, len, linux_vdisk, normalise, qemu_image, qemu_same, read,
    secs, utf16, winpath,
};

use super::Wine;
use crate::mutate::mutfuzz::layout::Format;
use crate::mutate::mutfuzz::oracle::{libvhdi_digest, qemu_check};
use crate::mutate::mutfuzz::seeds::{require, write};
/// Every mode the CLI knows.
const MODES: [&str; 5] = ["full", "quick", "prezeroed", "pretrimmed", "retrim"];

/// Runs the suite; prints the size and start-up time of `vdisk.exe`. CI runs the cases that
/// exercise what only Windows does (share modes, no sparse file, retrim refused, drive-letter
/// locators, the read-only attribute): each Wine start costs seconds on a 2-core machine.
/// `full` adds the cross-checks of every mode and of `create` against the Linux binary.
pub fn run(full: bool) -> Result<(), String> {
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
    let cases: [(&str, Case, bool); 7] = [
        (
            "startup_time_and_size_are_reported",
            startup_time_and_size_are_reported,
            true,
        ),
        (
            "every_mode_and_dry_run_answers_as_on_linux_and_qemu_reads_every_byte_the_same",
            every_mode_and_dry_run_answers_as_on_linux_and_qemu_reads_every_byte_the_same,
            false,
        ),
        (
            "retrim_is_refused_on_windows_before_anything_is_written",
            retrim_is_refused_on_windows_before_anything_is_written,
            true,
        ),
        (
            "images_created_on_windows_pass_qemu_check_and_match_linux_ones",
            images_created_on_windows_pass_qemu_check_and_match_linux_ones,
            false,
        ),
        (
            "a_differencing_chain_made_on_windows_stores_drive_letter_paths_and_compacts_identically",
            a_differencing_chain_made_on_windows_stores_drive_letter_paths_and_compacts_identically,
            true,
        ),
        (
            "a_file_another_windows_process_holds_for_writing_is_in_use_exit_3_and_unchanged",
            a_file_another_windows_process_holds_for_writing_is_in_use_exit_3_and_unchanged,
            true,
        ),
        (
            "a_file_with_the_read_only_attribute_gives_exit_6_and_is_unchanged",
            a_file_with_the_read_only_attribute_gives_exit_6_and_is_unchanged,
            true,
        ),
    ];
    let mut failed = Vec::new();
    for (name, case, windows_only) in cases {
        if !full && !windows_only {
            println!("windows cli: {name} ... not run (cross-check; cli-test --full runs it)");
            continue;
        }
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
        "windows cli: vdisk.exe (windows profile) is {:.1} MiB; `vdisk.exe --version` under wine \
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

fn retrim_is_refused_on_windows_before_anything_is_written(t: &Tools) -> Result<(), String> {
    for format in [Format::Vhd, Format::Vhdx] {
        let dir = t.folder(&format!("retrim-{}", format.name()))?;
        let orig = dir.join(format!("orig.{}", format.ext()));
        qemu_image(format, &orig)?;
        let fixed = dir.join(format!("fixed.{}", format.ext()));
        let fixed_win = winpath(&fixed);
        t.win(&[
            "create",
            "--format",
            format.name(),
            "--type",
            "fixed",
            "--size",
            "16M",
            &fixed_win,
        ])?
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
            let args = [
                "create",
                "--format",
                format.name(),
                "--type",
                kind,
                "--size",
                "24M",
            ];
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
        write(
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
