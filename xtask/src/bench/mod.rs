//! `cargo xtask bench [--quick] [--runs N] [--out DIR] [--only CASE] [--keep]`: vdisk's
//! in-place compaction against the copy-based compaction users run today,
//! `qemu-img convert -O <same format>`, and for Linux guests `virt-sparsify`.
//!
//! 1. `cargo build --release -p vdisk-cli` (with the `cargo` that runs us).
//! 2. Reference images made with our own drivers (see `cases`), in a work folder under the
//!    target directory (not /tmp, which may be a small tmpfs).
//! 3. Per case, N interleaved runs: copy the pristine image and write the copy back (so no
//!    tool pays for the harness's own writes; the files stay in the page cache: every tool
//!    starts warm); time `vdisk compact --mode <mode> --json <copy>` and check with
//!    `qemu-img compare` that the content did not change (the bench fails loudly otherwise);
//!    then, where vdisk moved blocks, the hardware floor on another fresh copy
//!    ([`measure::floor`]: the same number of bytes moved with the same in-kernel copy, one
//!    sync, the truncation: the least I/O a durable in-place compaction does on this disk);
//!    then two peers: `qemu-img convert` as
//!    users run it (the output is never flushed) and `qemu-img convert -t writeback` (flushed
//!    before exit, durable like vdisk's result).
//! 4. Cases e (`e-wsl`) and f (`f-linux-guests`) are Linux guests built with the kernel and
//!    the file systems' own tools, timed from a cold page cache against `virt-sparsify` and
//!    `qemu-img convert` (see [`linux`]); they need root and fail before any work when a tool
//!    is missing.
//! 5. A table on stdout, `bench.json` and `bench.md` in --out (default `<target>/bench`).
//!
//! Case g (`g-qcow2`) is a qcow2 disk with an ext4 guest, against `qemu-img convert` for time
//! and against zeroing the guest's free space then `qemu-img convert` for size (see [`qcow2`]).
//!
//! `--only CASE` (repeatable) keeps the cases whose name contains CASE (`--only wsl`,
//! `--only linux-guests`, `--only a-`); the rows of f are `f-linux-guests/<id>` (`ext4-bare`,
//! `ext4-gpt`, `xfs`, `btrfs`, `fat32`, `exfat`, `lvm`).

mod cases;
mod ceiling;
mod guests;
mod host;
mod linux;
mod measure;
mod ntfs;
mod qcow2;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cases::Case;
pub use measure::floor;
use measure::{FileSize, Sample};

use crate::shared::{build_vdisk, target_dir};

const MIB: f64 = 1_048_576.0;

/// The names of the Linux-guest cases ([`linux`]).
const WSL: &str = "e-wsl-64g";
const TIB: &str = "e-wsl-1tib";
const GUESTS: &str = "f-linux-guests";
/// The qcow2 case ([`qcow2`]).
const QCOW2: &str = "g-qcow2";

/// The name of the hardware-floor row ([`measure::floor_command`]).
const FLOOR: &str = "floor: copy + sync + truncate";

/// Parsed arguments.
struct Options {
    quick: bool,
    runs: usize,
    out: Option<PathBuf>,
    /// Only cases whose name contains one of these.
    only: Vec<String>,
    /// Keep the work folder (images stay for profiling).
    keep: bool,
}

/// The names of every case (full size), for the help.
pub fn case_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = cases::all(false).iter().map(|c| c.name).collect();
    names.extend([WSL, TIB, GUESTS, QCOW2]);
    names
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        runs: 0,
        out: None,
        only: Vec::new(),
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => {
                let n = it.next().ok_or("--runs needs a number")?;
                o.runs = n
                    .parse()
                    .map_err(|_| format!("--runs {n:?}: not a number"))?;
                if o.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--out" => o.out = Some(it.next().ok_or("--out needs a folder")?.into()),
            "--only" => o
                .only
                .push(it.next().ok_or("--only needs a case name")?.clone()),
            "--keep" => o.keep = true,
            _ => {
                return Err(format!(
                    "bench takes --quick, --runs N, --out DIR, --only CASE, --keep; got {a:?}"
                ));
            }
        }
    }
    if o.runs == 0 {
        o.runs = if o.quick { 1 } else { 3 };
    }
    Ok(o)
}

/// One tool on one case.
struct ToolResult {
    tool: &'static str,
    samples: Vec<Sample>,
    before: FileSize,
    after: FileSize,
}

impl ToolResult {
    fn wall(&self) -> f64 {
        measure::median(&self.samples.iter().map(|s| s.wall).collect::<Vec<_>>())
    }
    fn rss_mib(&self) -> Option<f64> {
        let kib = self.samples.iter().filter_map(|s| s.rss_kib).max()?;
        Some(kib as f64 / 1024.0)
    }
    fn io_mib(&self) -> Option<(f64, f64)> {
        let io: Vec<(u64, u64)> = self.samples.iter().filter_map(|s| s.io_blocks).collect();
        if io.is_empty() {
            return None;
        }
        let mib = |f: fn(&(u64, u64)) -> u64| {
            measure::median(
                &io.iter()
                    .map(|x| f(x) as f64 * 512.0 / MIB)
                    .collect::<Vec<_>>(),
            )
        };
        Some((mib(|x| x.0), mib(|x| x.1)))
    }
}

/// Every tool on one case: vdisk first, then the peers (none for cases without one).
struct CaseResult {
    case: Case,
    description: String,
    tools: Vec<ToolResult>,
}

impl CaseResult {
    fn vdisk(&self) -> &ToolResult {
        &self.tools[0]
    }
    /// vdisk's median time over `peer`'s.
    fn ratio(&self, peer: &ToolResult) -> f64 {
        self.vdisk().wall() / peer.wall()
    }
}

/// Runs the bench.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let vdisk = build_vdisk()?;
    let xtask = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let target = target_dir();
    let work = target.join(format!("bench-work-{}", std::process::id()));
    let out = opts.out.clone().unwrap_or_else(|| target.join("bench"));
    for d in [&work, &out] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    if !measure::have_gnu_time() {
        println!("!! /usr/bin/time is missing (Debian package `time`): peak RSS and I/O are n/a");
    }
    let mut warnings = Vec::new();
    let mut results = Vec::new();
    let chosen =
        |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o.as_str()));
    let cases: Vec<Case> = cases::all(opts.quick)
        .into_iter()
        .filter(|c| chosen(c.name))
        .collect();
    let rows: Vec<guests::Guest> = guests::Guest::ALL
        .into_iter()
        .filter(|g| chosen(&format!("{GUESTS}/{}", g.id())))
        .collect();
    let (wsl, tib, guests) = (chosen(WSL), chosen(TIB), !rows.is_empty());
    let qcow2 = chosen(QCOW2);
    if cases.is_empty() && !wsl && !tib && !guests && !qcow2 {
        return Err(format!("no case matches --only {:?}", opts.only));
    }
    // The Linux-guest cases need root and peers that may be missing: fail before any work.
    if wsl || tib || guests || qcow2 {
        let mut needed = rows.clone();
        if wsl || tib || qcow2 {
            needed.push(guests::Guest::Ext4Bare);
        }
        linux::preflight(&needed)?;
    }
    for case in cases {
        let tools = (vdisk.as_path(), xtask.as_path());
        match bench_case(tools, &case, &work, opts.runs, opts.keep, &mut warnings) {
            Ok(r) => results.push(r),
            Err(e) => {
                return Err(format!("{e}\n(the work folder {} is kept)", work.display()));
            }
        }
    }
    let mut linux_sections = Vec::new();
    let sizes = linux::Sizes::new(opts.quick);
    let keep_note = |e: String| format!("{e}\n(the work folder {} is kept)", work.display());
    if wsl {
        let s = linux::wsl(&vdisk, &work, opts.runs, &sizes).map_err(keep_note)?;
        linux_sections.push(("e_wsl_64g", s));
    }
    if tib {
        let s = linux::tib_analysis(&vdisk, &work, opts.runs, &sizes).map_err(keep_note)?;
        linux_sections.push(("e_wsl_1tib", s));
    }
    if guests {
        let s = linux::linux_guests(&vdisk, &work, &sizes, &rows).map_err(keep_note)?;
        linux_sections.push(("f_linux_guests", s));
    }
    if qcow2 {
        let s = qcow2::run(&vdisk, &work, opts.runs, opts.quick).map_err(keep_note)?;
        linux_sections.push(("g_qcow2", s));
    }
    if opts.keep {
        println!("kept the work folder {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }

    let facts = machine_facts(&opts);
    let table = if results.is_empty() {
        String::new()
    } else {
        markdown(&results)
    };
    let linux_md: String = linux_sections
        .iter()
        .map(|(_, s)| format!("{}\n", s.markdown))
        .collect();
    println!("\n{}\n\n{table}", facts_text(&facts));
    println!("{}", scaling_text(&results));
    println!("{}", floor_text(&results));
    println!("{linux_md}");
    for w in &warnings {
        println!("!! {w}");
    }
    let md = format!(
        "# vdisk bench\n\n{}\n\n{table}\n{}\n{}\n{}\n{linux_md}",
        facts_text(&facts),
        scaling_text(&results),
        floor_text(&results),
        results
            .iter()
            .map(|r| format!("- {}: {}\n", r.case.name, r.description))
            .collect::<String>()
    );
    write(&out.join("bench.md"), &md)?;
    let linux_json: Vec<String> = linux_sections
        .iter()
        .map(|(k, s)| format!("\"{k}\": {}", s.json))
        .collect();
    write(
        &out.join("bench.json"),
        &json(&facts, &results, &warnings, &linux_json),
    )?;
    println!("\nwrote {} and bench.json", out.join("bench.md").display());
    Ok(())
}

/// Runs one case; `tools` are the vdisk binary and this xtask (for the floor).
fn bench_case(
    (vdisk, xtask): (&Path, &Path),
    case: &Case,
    work: &Path,
    runs: usize,
    keep: bool,
    warnings: &mut Vec<String>,
) -> Result<CaseResult, String> {
    let ext = case.format.ext();
    let orig = work.join(format!("{}.orig.{ext}", case.name));
    let copy = work.join(format!("{}.copy.{ext}", case.name));
    let conv = work.join(format!("{}.qemu.{ext}", case.name));
    let stats = work.join("time.txt");
    let description = case.describe();
    println!("== {}: {description}", case.name);
    let t = std::time::Instant::now();
    let _ = std::fs::remove_file(&orig);
    case.make(&orig, work)
        .map_err(|e| format!("making {} failed: {e}", orig.display()))?;
    measure::settle(&orig)?;
    let before = measure::file_size(&orig)?;
    println!(
        "   made in {:.1} s: {:.1} MiB ({:.1} MiB allocated)",
        t.elapsed().as_secs_f64(),
        before.len as f64 / MIB,
        before.alloc as f64 / MIB
    );
    let fmt = case.format.qemu();
    let new_tool = |tool| ToolResult {
        tool,
        samples: Vec::new(),
        before,
        after: before,
    };
    let mut tools = vec![new_tool("vdisk")];
    if case.peer {
        tools.push(new_tool("qemu-img"));
        tools.push(new_tool("qemu-img -t writeback"));
    }
    for run in 1..=runs {
        if let Some(w) = measure::copy_sparse(&orig, &copy)? {
            println!("!! {w}");
            warnings.push(w);
        }
        // Neither tool may pay for writing back the harness's own copy.
        measure::settle(&copy)?;
        tools[0].before = measure::file_size(&copy)?;
        let args = [
            OsStr::new("compact"),
            OsStr::new("--mode"),
            OsStr::new(case.mode),
            OsStr::new("--json"),
            copy.as_os_str(),
        ];
        let s = measure::run_timed(vdisk.as_os_str(), &args, &stats)?;
        match case.layout {
            // Full mode may zero free clusters: the files are what must not change.
            cases::Layout::Ntfs { files } => ntfs::verify_files(&copy, fmt, files, work)?,
            _ => measure::same_content(fmt, &orig, &copy)?,
        }
        tools[0].after = measure::file_size(&copy)?;
        println!(
            "   run {run}: {:<22} {:8.3} s (content identical)",
            "vdisk", s.wall
        );
        let moved = measure::moved_by(&s.stdout);
        tools[0].samples.push(s);

        // The floor: the same bytes moved and synced without any compaction logic, on a
        // fresh copy.
        if let Some((moved, after)) = moved.filter(|_| case.peer) {
            if !tools.iter().any(|t| t.tool == FLOOR) {
                tools.insert(1, new_tool(FLOOR));
            }
            measure::copy_sparse(&orig, &copy)?;
            measure::settle(&copy)?;
            let args = measure::floor_args(&copy, moved, after)?;
            let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
            let s = measure::run_timed(xtask.as_os_str(), &args, &stats)?;
            let t = &mut tools[1];
            t.after = measure::file_size(&copy)?;
            println!("   run {run}: {:<22} {:8.3} s", t.tool, s.wall);
            t.samples.push(s);
        }

        for cache in [None, Some("writeback")] {
            let name = if cache.is_some() {
                "qemu-img -t writeback"
            } else {
                "qemu-img"
            };
            let Some(t) = tools.iter_mut().find(|t| t.tool == name) else {
                continue;
            };
            let _ = std::fs::remove_file(&conv);
            let mut args = vec![OsStr::new("convert")];
            // Default: no flush at all (qemu-img's cache=unsafe for the output); writeback:
            // the output is flushed to stable storage before qemu-img exits.
            if let Some(c) = cache {
                args.extend([OsStr::new("-t"), OsStr::new(c)]);
            }
            args.extend([
                OsStr::new("-f"),
                OsStr::new(fmt),
                OsStr::new("-O"),
                OsStr::new(fmt),
                OsStr::new("-o"),
                OsStr::new(case.format.qemu_options()),
                orig.as_os_str(),
                conv.as_os_str(),
            ]);
            let s = measure::run_timed(OsStr::new("qemu-img"), &args, &stats)?;
            t.after = measure::file_size(&conv)?;
            println!("   run {run}: {:<22} {:8.3} s", t.tool, s.wall);
            t.samples.push(s);
            // The next tool starts without this one's dirty pages waiting to be written.
            measure::settle(&conv)?;
        }
    }
    if !keep {
        for f in [&orig, &copy, &conv] {
            let _ = std::fs::remove_file(f);
        }
    }
    Ok(CaseResult {
        case: case.clone(),
        description,
        tools,
    })
}

/// Facts about the machine and the run, as (key, value) pairs.
fn machine_facts(opts: &Options) -> Vec<(&'static str, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or_else(
            || "?".to_string(),
            |kib| format!("{:.1} GiB", kib as f64 / MIB),
        );
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    vec![
        (
            "date",
            measure::command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        ),
        ("nproc", nproc.to_string()),
        ("memory", mem),
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        (
            "qemu-img",
            measure::command_line("qemu-img", &["--version"]),
        ),
        (
            "mode",
            if opts.quick { "quick" } else { "full" }.to_string(),
        ),
        ("runs", opts.runs.to_string()),
        (
            "measured",
            if measure::have_gnu_time() {
                "wall: median of runs; RSS: max of runs; I/O: median of runs, block-layer only \
                 (/usr/bin/time %I %O; page-cache hits not counted)"
            } else {
                "wall: median of runs; RSS and I/O n/a (/usr/bin/time missing)"
            }
            .to_string(),
        ),
    ]
}

fn facts_text(facts: &[(&str, String)]) -> String {
    facts
        .iter()
        .map(|(k, v)| format!("- {k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}"))
}

fn size(f: FileSize) -> String {
    format!("{:.1} / {:.1}", f.len as f64 / MIB, f.alloc as f64 / MIB)
}

/// The result table (Markdown, also readable as plain text).
fn markdown(results: &[CaseResult]) -> String {
    let mut s = String::from(
        "| case | tool | wall s (median) | peak RSS MiB | read MiB | written MiB \
         | before MiB (size / alloc) | after MiB (size / alloc) | time vdisk / this tool |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        for t in &r.tools {
            let io = t.io_mib();
            let ratio = if t.tool == "vdisk" {
                String::new()
            } else {
                format!("{:.3}", r.ratio(t))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {ratio} |",
                r.case.name,
                t.tool,
                t.wall(),
                opt(t.rss_mib()),
                opt(io.map(|x| x.0)),
                opt(io.map(|x| x.1)),
                size(t.before),
                size(t.after),
            );
        }
    }
    s
}

/// Case (c): how time grows from the small disk to the huge one with the same data.
fn scaling_text(results: &[CaseResult]) -> String {
    let find = |n: &str| results.iter().find(|r| r.case.name == n);
    let (Some(big), Some(small)) = (find("c-vhdx-huge"), find("c-vhdx-small")) else {
        return String::new();
    };
    let factor = big.case.virtual_size / small.case.virtual_size;
    let peer = |r: &CaseResult| {
        r.tools
            .iter()
            .find(|t| t.tool == "qemu-img")
            .map_or(f64::NAN, ToolResult::wall)
    };
    format!(
        "case c, same data on a {factor}x larger virtual disk: time ratio huge/small: \
         vdisk {:.2}, qemu-img {:.2} (1.0 = cost follows data, not virtual size)\n",
        big.vdisk().wall() / small.vdisk().wall(),
        peer(big) / peer(small)
    )
}

/// Per case with a floor: how close vdisk is to it, and the best speed-up over qemu-img that
/// any durable in-place compaction could reach on this disk.
fn floor_text(results: &[CaseResult]) -> String {
    let mut s = String::new();
    for r in results {
        let by = |name: &str| {
            r.tools
                .iter()
                .find(|t| t.tool == name)
                .map(ToolResult::wall)
        };
        let (Some(floor), Some(qemu)) = (by(FLOOR), by("qemu-img")) else {
            continue;
        };
        let _ = writeln!(
            s,
            "{}: vdisk takes {:.2}x the floor; the floor alone is {:.2}x faster than qemu-img \
             convert, the most any in-place compaction moving the same bytes durably can gain here",
            r.case.name,
            r.vdisk().wall() / floor,
            qemu / floor
        );
    }
    s
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn jnum(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "null".to_string(), |x| format!("{x:.6}"))
}

fn json_tool(t: &ToolResult) -> String {
    let io = t.io_mib();
    let walls: Vec<String> = t.samples.iter().map(|s| format!("{:.6}", s.wall)).collect();
    // vdisk prints one JSON object per file; keep the last run's as it is.
    let report = t
        .samples
        .last()
        .map(|s| s.stdout.as_str())
        .filter(|s| s.starts_with('{'))
        .unwrap_or("null");
    format!(
        "{{\"tool\": {}, \"wall_s\": [{}], \"wall_median_s\": {}, \"peak_rss_mib\": {}, \
         \"read_mib\": {}, \"written_mib\": {}, \"before\": {{\"size\": {}, \"allocated\": {}}}, \
         \"after\": {{\"size\": {}, \"allocated\": {}}}, \"report\": {report}}}",
        js(t.tool),
        walls.join(", "),
        jnum(Some(t.wall())),
        jnum(t.rss_mib()),
        jnum(io.map(|x| x.0)),
        jnum(io.map(|x| x.1)),
        t.before.len,
        t.before.alloc,
        t.after.len,
        t.after.alloc
    )
}

fn json(
    facts: &[(&str, String)],
    results: &[CaseResult],
    warnings: &[String],
    linux: &[String],
) -> String {
    let facts: Vec<String> = facts
        .iter()
        .map(|(k, v)| format!("    {}: {}", js(k), js(v)))
        .collect();
    let cases: Vec<String> = results
        .iter()
        .map(|r| {
            let ratios: Vec<String> = r.tools[1..]
                .iter()
                .map(|t| format!("{}: {}", js(t.tool), jnum(Some(r.ratio(t)))))
                .collect();
            let tools: Vec<String> = r.tools.iter().map(json_tool).collect();
            format!(
                "    {{\"case\": {}, \"description\": {}, \"mode\": {}, \"virtual_size\": {}, \
                 \"block_size\": {}, \"time_ratio_vdisk_over\": {{{}}},\n     \"tools\": [\n      {}]}}",
                js(r.case.name),
                js(&r.description),
                js(r.case.mode),
                r.case.virtual_size,
                r.case.block,
                ratios.join(", "),
                tools.join(",\n      ")
            )
        })
        .collect();
    let warnings: Vec<String> = warnings.iter().map(|w| js(w)).collect();
    format!(
        "{{\n  \"machine\": {{\n{}\n  }},\n  \"cases\": [\n{}\n  ],\n  \"linux\": {{{}}},\n  \"warnings\": [{}]\n}}\n",
        facts.join(",\n"),
        cases.join(",\n"),
        linux.join(", "),
        warnings.join(", ")
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
