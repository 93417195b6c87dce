//! Mutation fuzzing of the real `vdisk` binary (issue 12, "how to prove it").
//!
//! Seeds are small VHD, VHDX, VDI and qcow2 images (fixed, dynamic, differencing or backed,
//! compressed, with snapshots) made at run time by qemu and by `vdisk create` ([`seeds`]).
//! Each case draws one field-aware [`mutator`] mutation of one seed (a field of a footer,
//! header, region table, metadata item, locator or log; a VDI or qcow2 header field set to
//! one of its boundary values; a BAT, block map, L1, L2 or refcount table entry in any state
//! with or without an offset; a refcount; a cut or an extension; another format's signature
//! planted in guest data), half of them with checksums recomputed (VDI and qcow2 have none).
//! Then every command runs on it under a timeout and memory and file-size limits
//! ([`oracle`]): `info`, `check`, `compact --dry-run` and `compact` in every mode. The rules:
//! - no hang, no memory exhaustion, no panic, no signal, no exit 2 (the arguments are valid);
//! - `info`, `check` and every dry run leave the file byte-identical, and so does any run
//!   that fails; a differencing child's parent is never changed;
//! - a successful compaction reads the same, by `qemu-img compare` (through the backing file
//!   for a qcow2 child; libvhdi through the chain for VHD/VHDX differencing images) against
//!   the mutated input, when that oracle opens the input (the seeds hold no file system, so
//!   every mode must be byte-exact; a VDI child, which neither opens, by qemu's reads of
//!   child and parent merged by the child's map); `qemu-img check` finds no corruption, and
//!   no leak, that it did not find in the input, and `vdisk check` still passes on the result
//!   when it passed on the input.
//!
//! Used by `cargo xtask mutate` and by the fixed-seed slice in the CLI tests (included there
//! with `#[path]`), so both run the same code.

// Random numbers are cut to bytes on purpose, and every offset cast indexes an image held
// in memory (a 64-bit host), so truncating casts are the point here, not a bug.
#![allow(clippy::cast_possible_truncation)]

pub mod layout;
pub mod mutator;
pub mod oracle;
pub mod report;
pub mod seeds;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use layout::Format;
use mutator::{Mutation, Rng};
use oracle::{Limits, Outcome};
pub use report::{Finding, Report};
use seeds::Seed;

/// Compaction modes, all of them.
pub const MODES: [&str; 5] = ["full", "quick", "prezeroed", "pretrimmed", "retrim"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `vdisk` binary under test.
    pub vdisk: PathBuf,
    /// Formats to fuzz (cases alternate between them).
    pub formats: Vec<Format>,
    /// Run seed: case `i` of seed `s` is always the same mutation.
    pub seed: u64,
    /// Scratch folder (seeds and per-worker folders are made inside).
    pub work: PathBuf,
    /// Where failing inputs and their repro lines go.
    pub keep: Option<PathBuf>,
    /// Parallel workers.
    pub workers: usize,
    /// Stop starting cases after this long.
    pub time: Option<Duration>,
    /// Stop after this many cases.
    pub cases: Option<u64>,
    /// Run only this case.
    pub only_case: Option<u64>,
    /// Limits of each `vdisk` run.
    pub limits: Limits,
}

impl Config {
    /// Defaults: every format, 2 workers, 20 s per command, 1 GiB address space, 256 MiB files.
    pub fn new(vdisk: PathBuf, work: PathBuf) -> Config {
        Config {
            vdisk,
            formats: vec![Format::Vhd, Format::Vhdx, Format::Vdi, Format::Qcow2],
            seed: 1,
            work,
            keep: None,
            workers: 2,
            time: None,
            cases: None,
            only_case: None,
            limits: Limits {
                timeout: Duration::from_secs(20),
                address_space: 1 << 30,
                file_size: 256 << 20,
            },
        }
    }
}

/// One command run on a mutated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `vdisk info`.
    Info,
    /// `vdisk check`.
    Check,
    /// `vdisk compact --dry-run --mode M`.
    DryRun(&'static str),
    /// `vdisk compact --mode M`.
    Compact(&'static str),
}

impl Cmd {
    /// Every command, in run order.
    pub fn all() -> Vec<Cmd> {
        let mut v = vec![Cmd::Info, Cmd::Check];
        v.extend(MODES.iter().map(|m| Cmd::DryRun(m)));
        v.extend(MODES.iter().map(|m| Cmd::Compact(m)));
        v
    }

    /// Label in reports.
    pub fn label(self) -> String {
        match self {
            Cmd::Info => "info".into(),
            Cmd::Check => "check".into(),
            Cmd::DryRun(m) => format!("dry-run {m}"),
            Cmd::Compact(m) => format!("compact {m}"),
        }
    }

    fn args(self) -> Vec<&'static str> {
        match self {
            Cmd::Info => vec!["info"],
            Cmd::Check => vec!["check"],
            Cmd::DryRun(m) => vec!["compact", "--dry-run", "--mode", m],
            Cmd::Compact(m) => vec!["compact", "--mode", m],
        }
    }
}

/// Makes the seeds, then runs cases until the time or count is reached.
pub fn run(cfg: &Config, log: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
    oracle::require_oracles()?;
    let seed_dir = cfg.work.join("seeds");
    let _ = std::fs::remove_dir_all(&seed_dir);
    let seeds = seeds::make(&cfg.vdisk, &seed_dir, &cfg.formats)?;
    log(&format!("{} seeds in {}", seeds.len(), seed_dir.display()));
    let next = AtomicU64::new(cfg.only_case.unwrap_or(0));
    let total = Mutex::new(Report::default());
    let started = Instant::now();
    let workers = if cfg.only_case.is_some() {
        1
    } else {
        cfg.workers.max(1)
    };
    let result: Result<(), String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (next, total, seeds) = (&next, &total, &seeds);
                s.spawn(move || -> Result<(), String> {
                    let mut worker = Worker::new(cfg, seeds, w)?;
                    loop {
                        let case = next.fetch_add(1, Ordering::Relaxed);
                        let done = match (cfg.only_case, cfg.cases) {
                            (Some(only), _) => case != only,
                            (None, Some(n)) => case >= n,
                            (None, None) => false,
                        } || cfg.time.is_some_and(|t| started.elapsed() >= t);
                        if done {
                            break;
                        }
                        let r = worker.case(case, log)?;
                        total.lock().map_err(|_| "poisoned")?.merge(r);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "a worker panicked".to_string())?)
    });
    result?;
    total.into_inner().map_err(|_| "poisoned".to_string())
}

/// Lazily computed verdicts of the oracles on one mutated input.
#[derive(Default)]
struct Input {
    /// qemu (or libvhdi for a child) reads it: the digest or compare basis.
    oracle: Option<Option<String>>,
    /// What `qemu-img check` finds in it ([`oracle::qemu_check_level`]).
    qemu_check: Option<u8>,
    vdisk_check: Option<bool>,
}

struct Worker<'a> {
    cfg: &'a Config,
    seeds: Vec<(&'a Seed, Vec<u8>)>,
    dir: PathBuf,
    /// Parent copies in `dir`, with their pristine bytes.
    parents: Vec<(PathBuf, Vec<u8>)>,
    /// (format, command, class) already minimised and kept by this worker.
    seen: HashSet<(Format, String, &'static str)>,
}

impl<'a> Worker<'a> {
    fn new(cfg: &'a Config, seeds: &'a [Seed], id: usize) -> Result<Worker<'a>, String> {
        let dir = cfg.work.join(format!("worker{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("orig")).map_err(|e| e.to_string())?;
        let mut parents = Vec::new();
        let mut loaded = Vec::new();
        for s in seeds {
            let bytes = std::fs::read(&s.path).map_err(|e| e.to_string())?;
            if let Some(p) = &s.parent {
                let to = dir.join(p.file_name().ok_or("parent name")?);
                std::fs::copy(p, &to).map_err(|e| e.to_string())?;
                parents.push((to, std::fs::read(p).map_err(|e| e.to_string())?));
            }
            loaded.push((s, bytes));
        }
        Ok(Worker {
            cfg,
            seeds: loaded,
            dir,
            parents,
            seen: HashSet::new(),
        })
    }

    fn case(&mut self, case: u64, log: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
        let mut rng = Rng::new(self.cfg.seed, case);
        let format = self.cfg.formats[(case % self.cfg.formats.len() as u64) as usize];
        let choices: Vec<usize> = (0..self.seeds.len())
            .filter(|&i| self.seeds[i].0.format == format)
            .collect();
        let pick = choices[rng.below(choices.len() as u64) as usize];
        let (seed, original) = (self.seeds[pick].0, self.seeds[pick].1.clone());
        let mutation = Mutation::draw(&mut rng, format, &original);
        let bytes = mutation.apply(format, &original);
        let mut report = Report::default();
        *report.cases.entry(format).or_default() += 1;
        let mut input = Input::default();
        for cmd in Cmd::all() {
            *report.tried.entry((format, cmd.label())).or_default() += 1;
            let verdict = self.probe(seed, &bytes, cmd, &mut input)?;
            let (class, detail) = match verdict {
                Verdict::Pass => continue,
                Verdict::Compared => {
                    *report.compared.entry((format, cmd.label())).or_default() += 1;
                    continue;
                }
                Verdict::Unopenable => {
                    *report.unopenable.entry((format, cmd.label())).or_default() += 1;
                    continue;
                }
                Verdict::Fail(class, detail) => (class, detail),
            };
            *report
                .failures
                .entry((format, cmd.label(), class))
                .or_default() += 1;
            if !self.seen.insert((format, cmd.label(), class)) {
                continue;
            }
            let minimal = self.minimise(seed, &original, &mutation, cmd, class)?;
            let min_bytes = minimal.apply(format, &original);
            let kept = self.keep(seed, case, cmd, class, &min_bytes, &detail)?;
            let finding = Finding {
                seed: seed.name.clone(),
                format,
                case,
                cmd: cmd.label(),
                class,
                detail,
                mutation: minimal.to_string(),
                kept,
            };
            log(&format!(
                "FAIL [{}] {} case {case} on {}: {} — {} ({})",
                class,
                format.name(),
                finding.seed,
                finding.cmd,
                finding.detail,
                finding.mutation
            ));
            report.findings.push(finding);
        }
        Ok(report)
    }

    fn case_path(&self, format: Format) -> PathBuf {
        self.dir.join(format!("case.{}", format.ext()))
    }

    /// Runs `cmd` on `bytes` and applies every rule.
    fn probe(
        &self,
        seed: &Seed,
        bytes: &[u8],
        cmd: Cmd,
        input: &mut Input,
    ) -> Result<Verdict, String> {
        let format = seed.format;
        let file = self.case_path(format);
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        let name = format!("case.{}", format.ext());
        let mut args = cmd.args();
        args.push(&name);
        let out: Outcome = oracle::run_vdisk(&self.cfg.vdisk, &self.dir, &args, &self.cfg.limits);
        if let Some(class) = out.crash_class() {
            return Ok(Verdict::Fail(class, out.summary()));
        }
        if out.code.is_none() || out.stderr.starts_with("prlimit:") {
            return Err(format!("cannot run vdisk: {}", out.stderr));
        }
        for (p, pristine) in &self.parents {
            if std::fs::read(p).ok().as_deref() != Some(&pristine[..]) {
                std::fs::write(p, pristine).map_err(|e| e.to_string())?;
                return Ok(Verdict::Fail("parent-changed", out.summary()));
            }
        }
        let now = std::fs::read(&file).map_err(|e| e.to_string())?;
        let changed = now != bytes;
        let succeeded = out.code == Some(0);
        if matches!(cmd, Cmd::Check) {
            input.vdisk_check = Some(succeeded);
        }
        if changed && !matches!(cmd, Cmd::Compact(_)) {
            return Ok(Verdict::Fail("read-only-run-changed-file", out.summary()));
        }
        if changed && !succeeded {
            return Ok(Verdict::Fail("failed-run-changed-file", out.summary()));
        }
        if !succeeded || !matches!(cmd, Cmd::Compact(_)) {
            return Ok(Verdict::Pass);
        }
        self.after_compaction(seed, bytes, input, &out)
    }

    /// The content and validity oracles on a successful compaction of `bytes` (the result is
    /// in the case file).
    fn after_compaction(
        &self,
        seed: &Seed,
        bytes: &[u8],
        input: &mut Input,
        out: &Outcome,
    ) -> Result<Verdict, String> {
        let format = seed.format;
        let file = self.case_path(format);
        let orig = self.dir.join("orig").join(format!("case.{}", format.ext()));
        std::fs::write(&orig, bytes).map_err(|e| e.to_string())?;
        let parent = seed
            .parent
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| self.dir.join(n));
        // qemu reads a qcow2 chain itself, through the backing file named relative to the
        // child: the copy compared with finds a pristine copy of the parent beside it.
        let parent = match parent {
            Some(p) if format == Format::Qcow2 => {
                let beside = self
                    .dir
                    .join("orig")
                    .join(p.file_name().ok_or("parent name")?);
                if !beside.exists() {
                    std::fs::copy(&p, &beside).map_err(|e| e.to_string())?;
                }
                None
            }
            other => other,
        };
        let replayed = self
            .dir
            .join("orig")
            .join(format!("replayed.{}", format.ext()));
        let oracle = input.oracle.get_or_insert_with(|| match &parent {
            // libvhdi does not replay a pending log: its view is not the content then.
            Some(_) if format == Format::Vhdx && layout::vhdx_log_pending(bytes) => None,
            Some(p) => self.chain_digest(format, &orig, p, bytes).ok(),
            // qemu ignores a VDI's per-block extra data (it reads slot n at data + n * block
            // size, VirtualBox past n * (extra + size) + extra): its view is not the content.
            None if format == Format::Vdi && layout::vdi::Header::read(bytes).block_extra != 0 => {
                None
            }
            None if oracle::qemu_opens(format, &orig) => Some(String::new()),
            // qemu refuses a read-only open of a VHDX whose log is pending: compare with a
            // copy qemu has replayed (`qemu-img check -r all`).
            None => (format == Format::Vhdx
                && std::fs::copy(&orig, &replayed).is_ok()
                && oracle::qemu_replay(&replayed)
                && oracle::qemu_opens(format, &replayed))
            .then(|| "replayed".to_string()),
        });
        let Some(before) = oracle.clone() else {
            return Ok(Verdict::Unopenable);
        };
        let orig = if before == "replayed" { replayed } else { orig };
        match &parent {
            Some(p) => {
                let result = std::fs::read(&file).map_err(|e| e.to_string())?;
                let who = if format == Format::Vdi {
                    "qemu (child over parent)"
                } else {
                    "libvhdi"
                };
                match self.chain_digest(format, &file, p, &result) {
                    Ok(after) if after == before => {}
                    Ok(after) => {
                        return Ok(Verdict::Fail(
                            "content-changed",
                            format!("{who} reads {after} after, {before} before"),
                        ));
                    }
                    Err(e) => {
                        return Ok(Verdict::Fail(
                            "result-unreadable",
                            format!("{who} refuses the result: {e}"),
                        ));
                    }
                }
                if format == Format::Vdi {
                    // qemu checks the child's map and counts read as a dynamic image's.
                    let as_dynamic = |from: &Path, name: &str| {
                        let to = self.dir.join("orig").join(name);
                        oracle::vdi_as_dynamic(from, &to)
                            .map(|()| oracle::qemu_check_level(format, &to))
                    };
                    let before = match input.qemu_check {
                        Some(level) => level,
                        None => as_dynamic(&orig, "check-before.vdi")?.0,
                    };
                    input.qemu_check = Some(before);
                    let (after, text) = as_dynamic(&file, "check-after.vdi")?;
                    if after > before {
                        return Ok(Verdict::Fail(check_class(after), first_line(&text)));
                    }
                }
            }
            None => {
                let (code, text) = oracle::qemu_compare(format, &orig, &file);
                match code {
                    Some(0) => {}
                    Some(1) => {
                        return Ok(Verdict::Fail("content-changed", first_line(&text)));
                    }
                    _ => return Ok(Verdict::Fail("result-unreadable", first_line(&text))),
                }
                let before = *input
                    .qemu_check
                    .get_or_insert_with(|| oracle::qemu_check_level(format, &orig).0);
                let (after, text) = oracle::qemu_check_level(format, &file);
                if after > before {
                    return Ok(Verdict::Fail(check_class(after), check_line(&text)));
                }
            }
        }
        if input.vdisk_check == Some(true) {
            let name = format!("case.{}", format.ext());
            // Named, not detected: cutting trailing bytes past the last cluster may leave
            // guest data that looks like a fixed VHD footer at the new end (a planted one),
            // which detection rightly calls ambiguous; the rule is about the structure.
            let c = oracle::run_vdisk(
                &self.cfg.vdisk,
                &self.dir,
                &["check", "--format", format.name(), &name],
                &self.cfg.limits,
            );
            if c.code != Some(0) {
                return Ok(Verdict::Fail(
                    "vdisk-check-fails-after",
                    format!("{} (compaction said: {})", c.summary(), out.summary()),
                ));
            }
        }
        Ok(Verdict::Compared)
    }

    /// What the chain of the child `file` over `parent` reads: libvhdi for VHD and VHDX,
    /// qemu block by block for VDI.
    fn chain_digest(
        &self,
        format: Format,
        file: &Path,
        parent: &Path,
        bytes: &[u8],
    ) -> Result<String, String> {
        match format {
            Format::Vdi => oracle::vdi_chain_digest(file, parent, &self.dir.join("orig")),
            _ => oracle::libvhdi_digest(file, Some(parent), zero_blocks(format, bytes)),
        }
    }

    /// Drops edits (and the checksum fix) one at a time while the same class still fails.
    fn minimise(
        &self,
        seed: &Seed,
        original: &[u8],
        m: &Mutation,
        cmd: Cmd,
        class: &'static str,
    ) -> Result<Mutation, String> {
        let mut best = m.clone();
        let mut i = 0;
        while i < best.edits.len() && best.edits.len() > 1 {
            let mut t = best.clone();
            t.edits.remove(i);
            if self.fails_as(seed, original, &t, cmd, class)? {
                best = t;
            } else {
                i += 1;
            }
        }
        if best.fix {
            let t = Mutation {
                fix: false,
                ..best.clone()
            };
            if self.fails_as(seed, original, &t, cmd, class)? {
                best = t;
            }
        }
        Ok(best)
    }

    fn fails_as(
        &self,
        seed: &Seed,
        original: &[u8],
        m: &Mutation,
        cmd: Cmd,
        class: &'static str,
    ) -> Result<bool, String> {
        let bytes = m.apply(seed.format, original);
        let mut input = Input::default();
        if matches!(cmd, Cmd::Compact(_)) {
            // The check verdict on the input is one of the rules.
            self.probe(seed, &bytes, Cmd::Check, &mut input)?;
        }
        Ok(matches!(self.probe(seed, &bytes, cmd, &mut input)?, Verdict::Fail(c, _) if c == class))
    }

    /// Saves the input of a finding (the first of each format/command/class) with its parent
    /// and a one-line repro.
    fn keep(
        &self,
        seed: &Seed,
        case: u64,
        cmd: Cmd,
        class: &str,
        bytes: &[u8],
        detail: &str,
    ) -> Result<Option<PathBuf>, String> {
        let Some(dir) = &self.cfg.keep else {
            return Ok(None);
        };
        let label = cmd.label().replace(' ', "-");
        let sub = dir.join(format!("{}-{label}-{class}", seed.format.name()));
        if sub.exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
        let name = format!("case{case}.{}", seed.format.ext());
        std::fs::write(sub.join(&name), bytes).map_err(|e| e.to_string())?;
        if let Some(p) = &seed.parent {
            std::fs::copy(p, sub.join(p.file_name().ok_or("parent name")?))
                .map_err(|e| e.to_string())?;
        }
        let repro = format!(
            "cd {} && cp {name} try.{} && vdisk {} try.{}   # {class}: {detail} \
             (replay: cargo xtask mutate --seed {} --case {case} --format {})\n",
            sub.display(),
            seed.format.ext(),
            cmd.args().join(" "),
            seed.format.ext(),
            self.cfg.seed,
            if self.cfg.formats.len() > 1 {
                "all"
            } else {
                seed.format.name()
            }
        );
        std::fs::write(sub.join("repro.txt"), repro).map_err(|e| e.to_string())?;
        Ok(Some(sub.join(name)))
    }
}

enum Verdict {
    Pass,
    Compared,
    Unopenable,
    Fail(&'static str, String),
}

/// The VHDX blocks the oracle reads as zeros itself (see [`layout::vhdx_zero_blocks`]).
fn zero_blocks(format: Format, bytes: &[u8]) -> Option<(u64, Vec<u64>)> {
    (format == Format::Vhdx)
        .then(|| layout::vhdx_zero_blocks(bytes))
        .flatten()
}

/// The failure class of a `qemu-img check` that finds more after a compaction than before.
fn check_class(level: u8) -> &'static str {
    if level == 1 {
        "qemu-check-leaks-after"
    } else {
        "qemu-check-fails-after"
    }
}

/// The line of a `qemu-img check` report that counts what it found (else the first line).
fn check_line(text: &str) -> String {
    text.lines()
        .find(|l| l.contains("errors were found") || l.contains("leaked clusters were found"))
        .map_or_else(|| first_line(text), |l| l.chars().take(200).collect())
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// Parses `vhd`, `vhdx`, `vdi`, `qcow2` or `all`.
pub fn parse_formats(s: &str) -> Result<Vec<Format>, String> {
    match s {
        "vhd" => Ok(vec![Format::Vhd]),
        "vhdx" => Ok(vec![Format::Vhdx]),
        "vdi" => Ok(vec![Format::Vdi]),
        "qcow2" => Ok(vec![Format::Qcow2]),
        "all" => Ok(vec![Format::Vhd, Format::Vhdx, Format::Vdi, Format::Qcow2]),
        other => Err(format!(
            "--format takes vhd, vhdx, vdi, qcow2 or all, not {other:?}"
        )),
    }
}
