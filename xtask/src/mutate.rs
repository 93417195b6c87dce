//! `cargo xtask mutate`: the mutation fuzzer of `mutfuzz` against the release `vdisk` binary,
//! for a bounded time or number of cases; prints mutations tried and failures by class per
//! format and per command/mode.

use std::path::PathBuf;
use std::time::Duration;

#[path = "mutfuzz/mod.rs"]
pub mod mutfuzz;

/// Runs the task.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut time = Some(Duration::from_secs(60));
    let mut cases = None;
    let mut only_case = None;
    let mut seed = 1u64;
    let mut formats = mutfuzz::parse_formats("all")?;
    let mut keep = None;
    let mut workers = 2usize;
    let mut binary = None;
    let mut it = args.iter();
    let num = |v: Option<&String>, what: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => time = Some(Duration::from_secs(num(it.next(), "--time")?)),
            "--cases" => {
                cases = Some(num(it.next(), "--cases")?);
                time = None;
            }
            "--case" => only_case = Some(num(it.next(), "--case")?),
            "--seed" => seed = num(it.next(), "--seed")?,
            "--workers" => workers = usize::try_from(num(it.next(), "--workers")?).unwrap_or(1),
            "--format" => {
                formats = mutfuzz::parse_formats(it.next().ok_or("--format needs a value")?)?;
            }
            "--keep" => keep = Some(PathBuf::from(it.next().ok_or("--keep needs a folder")?)),
            "--vdisk" => {
                binary = Some(PathBuf::from(it.next().ok_or("--vdisk needs a path")?));
            }
            other => return Err(format!("unknown mutate argument {other:?}")),
        }
    }
    let vdisk = match binary {
        Some(b) => b,
        None => crate::shared::build_vdisk()?,
    };
    // One folder per run shape, so runs of different formats can go side by side.
    let formats_name: Vec<&str> = formats.iter().map(|f| f.name()).collect();
    let work = crate::shared::target_dir()
        .join("mutate")
        .join(format!("{}-seed{seed}", formats_name.join("-")));
    let vdisk = std::path::absolute(&vdisk).map_err(|e| format!("{}: {e}", vdisk.display()))?;
    let mut cfg = mutfuzz::Config::new(vdisk, work);
    cfg.formats = formats;
    cfg.seed = seed;
    cfg.keep = keep.map(|k| std::path::absolute(&k).unwrap_or(k));
    cfg.workers = workers;
    cfg.time = time;
    cfg.cases = cases;
    cfg.only_case = only_case;
    println!(
        "== mutate: seed {seed}, {} worker(s), {}",
        cfg.workers,
        match (only_case, cases, time) {
            (Some(c), ..) => format!("case {c} only"),
            (None, Some(n), _) => format!("{n} cases"),
            (None, None, Some(t)) => format!("{} s", t.as_secs()),
            _ => "unbounded".into(),
        }
    );
    let log = |line: &str| println!("{line}");
    let report = mutfuzz::run(&cfg, &log)?;
    println!("\n{report}");
    if report.failure_count() > 0 {
        return Err(format!(
            "{} failing runs (classes above){}",
            report.failure_count(),
            cfg.keep
                .as_ref()
                .map(|k| format!("; inputs and repro lines in {}", k.display()))
                .unwrap_or_default()
        ));
    }
    Ok(())
}
