//! `cargo xtask help [TASK]` and `cargo xtask TASK --help`: what each task does and every
//! option it takes. The lists that change with the code (fuzz targets, bench cases) are made
//! from the same tables the tasks run, so the help cannot fall behind them.

/// One task's help.
pub struct Task {
    /// The word after `cargo xtask`.
    pub name: &'static str,
    /// The options, as on a usage line.
    pub synopsis: &'static str,
    /// What it does and what each option means.
    pub about: fn() -> String,
}

/// Every task, in the order `help` lists them.
pub const TASKS: &[Task] = &[
    Task {
        name: "demo",
        synopsis: "[--keep]",
        about: || {
            "build vdisk, make a bloated sample VHD and show info, compact and check on it.\n\
             --keep  leave the temporary folder (and the sample) in place"
                .to_string()
        },
    },
    Task {
        name: "bench",
        synopsis: "[--quick] [--runs N] [--out DIR] [--only CASE]... [--keep]",
        about: bench_about,
    },
    Task {
        name: "bench-floor",
        synopsis: "FILE FROM TO LEN AFTER",
        about: || {
            "run by bench as a peer, not for direct use: copy LEN bytes FROM -> TO inside FILE, \
             sync, truncate to AFTER: the least I/O an in-place compaction moving LEN bytes does"
                .to_string()
        },
    },
    Task {
        name: "fuzz",
        synopsis: "[--time SECS] [TARGET]",
        about: fuzz_about,
    },
    Task {
        name: "mutate",
        synopsis: "[--time SECS | --cases N] [--seed N] [--format vhd|vhdx|vdi|qcow2|all]\n         \
                   [--keep DIR] [--case N] [--workers N] [--vdisk PATH]",
        about: || {
            "mutate VHD/VHDX/VDI/qcow2 seeds (made by qemu and vdisk) field by field and run info, \
             check, compact --dry-run and compact in every mode of the release vdisk on each (no \
             hang, panic, signal or memory blow-up; failed runs leave the file unchanged; \
             compactions read the same (qemu-img compare, through the backing file for qcow2 \
             children; libvhdi for VHD/VHDX children, qemu block by block over the parent for \
             VDI children); qemu-img check finds no corruption and no leak it did not find in \
             the input).\n\
             --time SECS     run for SECS seconds (default 60)\n\
             --cases N       run exactly N cases instead of for a time\n\
             --seed N        the random seed (default 1); the same seed gives the same cases\n\
             --format F      vhd, vhdx, vdi, qcow2 or all (default all)\n\
             --keep DIR      write each failing input to DIR with a line that replays it\n\
             --case N        replay case N only (same --seed and --format)\n\
             --workers N     cases run in parallel (default 2)\n\
             --vdisk PATH    use this vdisk binary instead of building the release one"
                .to_string()
        },
    },
    Task {
        name: "windows",
        synopsis: "build | test | cli-test [--full] | all",
        about: || {
            "vdisk for a Windows host, built with Debian's rustc-web toolchain (-Zbuild-std, \
             x86_64-pc-windows-gnu, linked by mingw) into <target>/windows and run under Wine \
             (wine64, its own prefix made once). vdisk.exe and the library tests come from one \
             cargo run, so the standard library and the dependencies are built once.\n\
             build           build vdisk.exe and print its path\n\
             test            the library tests of vdisk-core and the format crates under wine\n\
             cli-test        the real vdisk.exe under wine on images made by qemu-img and \
             checked with qemu-img and libvhdi: share modes (exit 3), no sparse file, retrim \
             refused, drive-letter locators, read-only attribute (exit 6), size and start-up\n\
             cli-test --full also every mode, --dry-run and --json, and create, cross-checked \
             against the Linux vdisk\n\
             all             test, then cli-test --full"
                .to_string()
        },
    },
    Task {
        name: "macos-check",
        synopsis: "",
        about: || {
            "cargo check of vdisk (and so every crate it links) for aarch64-apple-darwin and \
             x86_64-apple-darwin in one cargo run, with the standard library checked from \
             source by Debian's rustc-web (no macOS linker or SDK needed)"
                .to_string()
        },
    },
    Task {
        name: "dist",
        synopsis: "",
        about: || {
            "the release binaries users download, in <target>/dist: vdisk (Linux x86-64, the \
             default toolchain) and vdisk.exe (Windows x86-64, rustc-web and mingw), with \
             SHA256SUMS as sha256sum --check reads it"
                .to_string()
        },
    },
    Task {
        name: "help",
        synopsis: "[TASK]",
        about: || "this text, or one task's (also: cargo xtask TASK --help)".to_string(),
    },
];

fn bench_about() -> String {
    let cases: Vec<&str> = crate::bench::case_names();
    format!(
        "vdisk compact against qemu-img convert on reference images (cases a-d), and against \
         virt-sparsify and qemu-img convert on Linux guests (e-wsl-64g: a 64 GiB WSL ext4.vhdx; \
         e-wsl-1tib: the analysis of a 1 TiB ext4; f-linux-guests: the 4 GiB guest table, one \
         row with --only f-linux-guests/ID; these need root and libguestfs-tools), cold page \
         cache, same run; writes bench.json and bench.md into the output folder.\n\
         --quick       smaller images and one run each\n\
         --runs N      runs per tool and case (default 3, 1 with --quick)\n\
         --out DIR     where the results go (default <target>/bench)\n\
         --only CASE   only the cases whose name contains CASE (may be repeated)\n\
         --keep        keep the work folder and its images (for profiling)\n\
         cases: {}",
        cases.join(", ")
    )
}

fn fuzz_about() -> String {
    let targets: Vec<&str> = crate::fuzz::target_names();
    format!(
        "write the seed corpora, then run each cargo-fuzz target of fuzz/ for SECS seconds and \
         print executions and crashes per target (needs cargo-fuzz; the stable toolchain builds \
         it with RUSTC_BOOTSTRAP=1, no nightly needed).\n\
         --time SECS   seconds per target (default 60)\n\
         TARGET        run only this target\n\
         targets: {}",
        targets.join(", ")
    )
}

/// `text` with every line broken at spaces to fit `WIDTH` columns after `indent` spaces. A
/// broken line continues under its description: after an option's name ("--out DIR  where
/// ...") or a label ("cases: ...").
fn reflow(text: &str, indent: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let first = line.split(' ').next().unwrap_or("");
        let hang = if first.ends_with(':') {
            first.len() + 1
        } else {
            // An option line: its name, then two spaces or more, then the description.
            line.find("  ")
                .map(|i| i + line[i..].len() - line[i..].trim_start().len())
                .unwrap_or(0)
        };
        let mut current = " ".repeat(indent);
        let mut fresh = true;
        for word in line.split(' ') {
            if !fresh && current.chars().count() + 1 + word.chars().count() > WIDTH {
                out.push_str(current.trim_end());
                out.push('\n');
                current = " ".repeat(indent + hang);
                fresh = true;
            }
            if !fresh {
                current.push(' ');
            }
            current.push_str(word);
            fresh = false;
        }
        out.push_str(current.trim_end());
        out.push('\n');
    }
    out
}

/// The widest help line.
const WIDTH: usize = 80;

/// The overview: every task with its options and what it does.
pub fn overview() -> String {
    let mut text = String::from(
        "usage: cargo xtask <task> [options]\n       cargo xtask help [TASK] | cargo xtask TASK --help\n\ntasks:\n",
    );
    for t in TASKS {
        text.push_str(&format!("\n  {} {}\n", t.name, t.synopsis));
        text.push_str(&reflow(&(t.about)(), 6));
    }
    text
}

/// One task's help, or `None` if there is no such task.
pub fn task(name: &str) -> Option<String> {
    let t = TASKS.iter().find(|t| t.name == name)?;
    let full = format!("usage: cargo xtask {} {}", t.name, t.synopsis);
    // A synopsis too wide for one line is left to the option list below it.
    let usage = if full.lines().all(|l| l.chars().count() <= WIDTH) {
        full
    } else {
        format!("usage: cargo xtask {} [options]", t.name)
    };
    Some(format!("{usage}\n\n{}", reflow(&(t.about)(), 0)))
}

/// True if `args` (after the task name) ask for help.
pub fn asked(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fuzz_target_of_the_fuzz_crate_is_run_and_listed() {
        let manifest =
            std::fs::read_to_string(crate::fuzz::workspace_root().join("fuzz/Cargo.toml"))
                .expect("fuzz/Cargo.toml");
        let bins: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = ")))
            .map(|n| n.trim_matches('"'))
            .collect();
        assert!(!bins.is_empty());
        let help = task("fuzz").unwrap();
        for bin in &bins {
            assert!(
                crate::fuzz::target_names().contains(bin),
                "{bin} is never run"
            );
            assert!(help.contains(bin), "{bin} missing from the help: {help}");
        }
        assert_eq!(crate::fuzz::target_names().len(), bins.len());
    }

    #[test]
    fn every_task_has_help_and_every_bench_option_and_case_is_listed() {
        for t in TASKS {
            assert!(task(t.name).is_some());
            assert!(overview().contains(&format!("  {} ", t.name)), "{}", t.name);
        }
        let bench = task("bench").unwrap();
        for option in ["--quick", "--runs", "--out", "--only", "--keep"] {
            assert!(bench.contains(option), "{option}: {bench}");
        }
        for case in crate::bench::case_names() {
            assert!(bench.contains(case), "{case}: {bench}");
        }
        assert!(task("demo").unwrap().contains("--keep"));
        let mutate = task("mutate").unwrap();
        for format in ["vhd", "vhdx", "vdi", "qcow2", "all"] {
            assert!(crate::mutate::mutfuzz::parse_formats(format).is_ok());
            assert!(mutate.contains(format), "{format}: {mutate}");
        }
        let windows = task("windows").unwrap();
        for option in ["build", "test", "cli-test", "--full", "all"] {
            assert!(windows.contains(option), "{option}: {windows}");
        }
        assert!(task("nonsense").is_none());
    }

    #[test]
    fn no_help_line_is_wider_than_80_columns() {
        let each = TASKS.iter().filter_map(|t| task(t.name));
        for line in overview()
            .lines()
            .chain(each.collect::<Vec<_>>().join("\n").lines())
        {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
    }
}
