//! `vdisk compact` for many disks at once: the files named, or with `--recursive` the images
//! below the folders named, each compacted by core's [`compact_path`] exactly as a single
//! `compact` does (its own exclusive lock, the same guards), up to `--jobs` at a time.
//!
//! ```text
//!   walk (globs, no links) ─► files ─► N workers ─► per file: [dry-run estimate ─► threshold]
//!                                                            ─► compact_path ─► Row
//!   Row ─► one line on stdout (human or JSON) · one append to --report (CSV / JSON Lines)
//!   end ─► summary line (files by state, bytes saved, time) · exit code (see exit::HELP)
//! ```
//!
//! Each file ends in one of the stable [`State`]s. Ctrl-C trips the shared token: files not
//! started end `cancelled` without being opened, the ones in progress stop at their next safe
//! point as a single compaction does (`cancelled`, the image valid).

pub mod holder;
pub mod report_file;
pub mod row;
pub mod threshold;
pub mod walk;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vdisk_core::{
    CancelToken, CompactRequest, ErrorKind, Failure, Outcome, ParentPolicy, Toolkit, compact_path,
    nothing_to_reclaim,
};

use crate::cli::CompactArgs;
use crate::commands::compact::{request, sparse_note, withheld_note};
use crate::exit;
use crate::host_space;
use crate::progress::Bar;
use crate::report::{self, Stage, human_size, shown};
use report_file::ReportFile;
use row::{Row, State, host_name, rfc3339};
use threshold::saved;
use walk::Selection;

/// Runs a batch; returns the exit code: 0 if no file failed (in-use files with
/// `--skip-in-use`, below-threshold and nothing-to-reclaim are not failures), 8 if the run
/// was cancelled, else the code of the first file, in walk order, that failed.
pub fn run(
    args: &CompactArgs,
    toolkit: &Toolkit,
    parents: &ParentPolicy,
    cancel: &CancelToken,
) -> u8 {
    let clock = Instant::now();
    let selection = match Selection::new(&args.include, &args.exclude) {
        Ok(s) => s,
        Err(e) => {
            report::err(&format!("vdisk: {e}"));
            return exit::USAGE;
        }
    };
    // Before any image is touched: a report that cannot be written stops the run.
    let report_file = match args
        .report
        .as_deref()
        .map(|p| ReportFile::open(p, args.report_format))
        .transpose()
    {
        Ok(r) => r,
        Err((code, e)) => {
            report::err(&format!("vdisk: {e}"));
            return code;
        }
    };
    let walk = walk::walk(&args.files, args.recursive, &selection);
    for link in &walk.links_skipped {
        report::note(
            link,
            "a symbolic link: not followed (compact its target by name)",
        );
    }
    let jobs = usize::from(args.jobs.unwrap_or(1)).clamp(1, walk.files.len().max(1));
    let total = walk.files.len() + walk.errors.len();
    let batch = Batch {
        args,
        toolkit,
        request: request(args, parents),
        estimate: request(args, parents).dry_run(true),
        cancel,
        host: host_name(),
        bars_per_file: jobs == 1 && !args.json,
        sink: Sink {
            report_file,
            files_bar: files_bar(total, jobs, args.json),
            json: args.json,
            report_failed: Mutex::new(false),
        },
    };
    let mut rows: Vec<Option<Row>> = Vec::with_capacity(total);
    for (path, why, code) in &walk.errors {
        let row = batch.unwalkable(path, why, *code);
        batch.sink.emit(&row);
        rows.push(Some(row));
    }
    let first_file = rows.len();
    rows.resize(total, None);
    let rows = Mutex::new(rows);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = walk.files.get(i) else { break };
                    let row = batch.process(file);
                    batch.sink.emit(&row);
                    rows.lock().unwrap_or_else(|p| p.into_inner())[first_file + i] = Some(row);
                }
            });
        }
    });
    batch.sink.files_bar.finish_and_clear();
    let rows: Vec<Row> = rows
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let line = summary(&rows, args.dry_run, clock.elapsed().as_secs_f64());
    if args.json {
        report::err(&line);
    } else {
        report::out(&line);
    }
    let report_failed = *batch
        .sink
        .report_failed
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    exit_code(&rows, report_failed)
}

/// The run's exit code from its rows (in walk order): see [`run`].
fn exit_code(rows: &[Row], report_failed: bool) -> u8 {
    if rows.iter().any(|r| r.state == State::Cancelled) {
        return exit::CANCELLED;
    }
    rows.iter()
        .find(|r| r.state == State::Failed)
        .map(|r| r.exit_code.max(exit::OTHER))
        .unwrap_or(if report_failed { exit::OTHER } else { exit::OK })
}

/// "vdisk: 24 files in 3.2 s: 12 compacted, 5 nothing-to-reclaim, ...; 245.0 MiB saved".
fn summary(rows: &[Row], dry_run: bool, seconds: f64) -> String {
    let counts: Vec<String> = State::ALL
        .iter()
        .map(|s| {
            let n = rows.iter().filter(|r| r.state == *s).count();
            format!("{n} {}", s.as_str())
        })
        .collect();
    let saved: u64 = rows.iter().map(|r| r.bytes_saved).sum();
    let files = if rows.len() == 1 { "file" } else { "files" };
    let how = if dry_run {
        "would be saved (dry run, nothing written)"
    } else {
        "saved"
    };
    format!(
        "vdisk: {} {files} in {seconds:.1} s: {}; {} {how}",
        rows.len(),
        counts.join(", "),
        human_size(saved)
    )
}

/// A bar counting finished files, for more than one job on a terminal; hidden otherwise.
fn files_bar(total: usize, jobs: usize, json: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
    if jobs > 1 && !json && std::io::stderr().is_terminal() {
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files ({elapsed})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("compacting, {jobs} at a time"));
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar
}

/// What every worker shares.
struct Batch<'a> {
    args: &'a CompactArgs,
    toolkit: &'a Toolkit,
    request: CompactRequest,
    /// The dry run that estimates the savings for --min-savings.
    estimate: CompactRequest,
    cancel: &'a CancelToken,
    host: String,
    /// One job on a terminal: each file gets today's progress bar.
    bars_per_file: bool,
    sink: Sink,
}

impl Batch<'_> {
    /// Compacts one file (estimating first if there is a threshold) and says how it ended.
    fn process(&self, file: &Path) -> Row {
        let start = SystemTime::now();
        let clock = Instant::now();
        let len = std::fs::symlink_metadata(file).map_or(0, |m| m.len());
        let mut row = Row {
            path: shown(file),
            state: State::Failed,
            start: rfc3339(start),
            end: String::new(),
            seconds: 0.0,
            bytes_before: len,
            bytes_after: len,
            bytes_saved: 0,
            mode: self.args.mode.as_str(),
            message: String::new(),
            format: String::new(),
            dry_run: self.args.dry_run,
            exit_code: exit::OK,
            host: self.host.clone(),
        };
        self.compact(file, &mut row);
        let elapsed = clock.elapsed();
        row.end = rfc3339(start + elapsed);
        row.seconds = elapsed.as_millis() as f64 / 1000.0;
        row
    }

    fn compact(&self, file: &Path, row: &mut Row) {
        if self.cancel.is_cancelled() {
            row.state = State::Cancelled;
            row.message = "not started (the run was cancelled); the file was not changed".into();
            row.exit_code = exit::CANCELLED;
            return;
        }
        if let Some(min) = self.args.min_savings.filter(|_| !self.args.dry_run) {
            let bar = Bar::new(file, self.bars_per_file);
            let estimate = compact_path(file, self.toolkit, &self.estimate, &bar, self.cancel);
            let engine_notes = bar.finish();
            match estimate {
                Err(f) => return self.failed(file, f, row),
                Ok(est) => {
                    let r = &est.report;
                    let would = saved(r, None);
                    if !nothing_to_reclaim(r) && !min.reached(would, r.bytes_before) {
                        row.state = State::BelowThreshold;
                        row.format = est.format.to_string();
                        row.bytes_before = r.bytes_before;
                        row.bytes_after = r.bytes_before;
                        let share = if r.bytes_before == 0 {
                            0.0
                        } else {
                            would as f64 * 100.0 / r.bytes_before as f64
                        };
                        row.message = format!(
                            "would save {} ({share:.1}% of {}), below --min-savings {}; the file \
                             was not changed",
                            human_size(would),
                            human_size(r.bytes_before),
                            min.describe()
                        );
                        append_notes(&mut row.message, &notes(file, &est, engine_notes));
                        return;
                    }
                }
            }
        }
        let bar = Bar::new(file, self.bars_per_file);
        let allocated_before = host_space::allocated(file);
        let outcome = compact_path(file, self.toolkit, &self.request, &bar, self.cancel);
        let engine_notes = bar.finish();
        match outcome {
            Ok(done) => {
                let r = &done.report;
                row.state = if nothing_to_reclaim(r) {
                    State::NothingToReclaim
                } else {
                    State::Compacted
                };
                row.format = done.format.to_string();
                row.bytes_before = r.bytes_before;
                row.bytes_after = r.bytes_after;
                let space = host_space::measured(file, allocated_before);
                row.bytes_saved = saved(r, space);
                let line = report::compact_human(file, r, space);
                let name = shown(file);
                let what = line.strip_prefix(name.as_str()).unwrap_or(&line);
                row.message = what.trim_start_matches(':').trim().to_string();
                if done.analysis.is_some() && !nothing_to_reclaim(r) {
                    row.message.push_str("; ");
                    row.message.push_str(report::reclaim_sources(r).trim());
                }
                append_notes(&mut row.message, &notes(file, &done, engine_notes));
            }
            Err(f) => self.failed(file, f, row),
        }
    }

    /// Fills `row` for a failure: in-use (with --skip-in-use, when nothing was written),
    /// cancelled, or failed, the message saying what it means for the file.
    fn failed(&self, file: &Path, f: Failure, row: &mut Row) {
        let Failure {
            error,
            untouched,
            implicit_changes,
            ..
        } = f;
        let kind = error.kind();
        let stage = if untouched {
            report::changed_stage(Stage::Untouched, &implicit_changes)
        } else {
            Stage::Applying
        };
        let mut message = report::error_message(file, &error);
        if kind == ErrorKind::Internal {
            message = format!("internal error (a bug in vdisk; please report it): {message}");
        }
        if kind == ErrorKind::InUse {
            // Named after the fact: the holder may have gone since; the lock decided.
            if let Some(holder) = holder::describe(file) {
                message.push_str(&format!("; {holder}"));
            }
        }
        if kind != ErrorKind::NotFound {
            message.push_str(&format!(" ({})", stage.promise()));
        }
        append_notes(&mut message, &implicit_changes);
        row.exit_code = exit::code_for(kind);
        row.state = match kind {
            ErrorKind::Cancelled => State::Cancelled,
            ErrorKind::InUse if self.args.skip_in_use && stage == Stage::Untouched => State::InUse,
            _ => State::Failed,
        };
        row.message = message;
        row.bytes_after = std::fs::symlink_metadata(file).map_or(row.bytes_before, |m| m.len());
        row.bytes_saved = row.bytes_before.saturating_sub(row.bytes_after);
    }

    /// The row of a folder the walk could not read.
    fn unwalkable(&self, path: &Path, why: &str, exit_code: u8) -> Row {
        let now = rfc3339(SystemTime::now());
        Row {
            path: shown(path),
            state: State::Failed,
            start: now.clone(),
            end: now,
            seconds: 0.0,
            bytes_before: 0,
            bytes_after: 0,
            bytes_saved: 0,
            mode: self.args.mode.as_str(),
            message: why.to_string(),
            format: String::new(),
            dry_run: self.args.dry_run,
            exit_code,
            host: self.host.clone(),
        }
    }
}

/// Every note about a compaction: the analysis' notes, why file-system free space was
/// withheld, the engine's own, and (Windows) that the file carries the sparse attribute.
fn notes(file: &Path, done: &Outcome, engine: Vec<String>) -> Vec<String> {
    let mut notes = done.notes.clone();
    notes.extend(withheld_note(&done.withheld_for));
    notes.extend(engine);
    notes.extend(sparse_note(file));
    notes
}

fn append_notes(message: &mut String, notes: &[String]) {
    for n in notes {
        message.push_str("; note: ");
        message.push_str(n);
    }
}

/// Where rows go: stdout (one line each, never mixed) and the report file.
struct Sink {
    report_file: Option<ReportFile>,
    files_bar: ProgressBar,
    json: bool,
    report_failed: Mutex<bool>,
}

impl Sink {
    fn emit(&self, row: &Row) {
        let line = if self.json {
            row.json_line().trim_end().to_string()
        } else {
            format!("{:<18} {}: {}", row.state.as_str(), row.path, row.message)
        };
        // One locked write per line; the bar steps aside while it is printed.
        self.files_bar.suspend(|| report::out(&line));
        self.files_bar.inc(1);
        if let Some(r) = &self.report_file
            && let Err(e) = r.append(row)
        {
            let mut failed = self.report_failed.lock().unwrap_or_else(|p| p.into_inner());
            if !*failed {
                report::err(&format!(
                    "vdisk: {}: cannot append to the report: {e} (the compactions go on; \
                     their results are on stdout)",
                    r.path().display()
                ));
            }
            *failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: State, code: u8, saved: u64) -> Row {
        Row {
            path: "p".into(),
            state,
            start: String::new(),
            end: String::new(),
            seconds: 0.0,
            bytes_before: 0,
            bytes_after: 0,
            bytes_saved: saved,
            mode: "full",
            message: String::new(),
            format: String::new(),
            dry_run: false,
            exit_code: code,
            host: String::new(),
        }
    }

    #[test]
    fn skipped_files_do_not_fail_the_run_failures_and_cancels_do() {
        let fine = [
            row(State::Compacted, 0, 5),
            row(State::NothingToReclaim, 0, 0),
            row(State::BelowThreshold, 0, 0),
            row(State::InUse, exit::IN_USE, 0),
        ];
        assert_eq!(exit_code(&fine, false), exit::OK);
        assert_eq!(exit_code(&fine, true), exit::OTHER);
        let mut failing = fine.to_vec();
        failing.push(row(State::Failed, exit::INVALID, 0));
        failing.push(row(State::Failed, exit::IN_USE, 0));
        assert_eq!(exit_code(&failing, false), exit::INVALID);
        failing.push(row(State::Cancelled, exit::CANCELLED, 0));
        assert_eq!(exit_code(&failing, false), exit::CANCELLED);
    }

    #[test]
    fn the_summary_counts_every_state_and_the_bytes_saved() {
        let rows = [
            row(State::Compacted, 0, 3 << 20),
            row(State::Compacted, 0, 1 << 20),
            row(State::InUse, 3, 0),
        ];
        assert_eq!(
            summary(&rows, false, 2.04),
            "vdisk: 3 files in 2.0 s: 2 compacted, 0 nothing-to-reclaim, 0 below-threshold, \
             1 in-use, 0 failed, 0 cancelled; 4.0 MiB saved"
        );
    }
}
