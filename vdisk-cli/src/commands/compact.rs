//! `vdisk compact`: core's [`compact_path`] for each file (open, analyse, guard children, plan,
//! dry-run report or apply), then the report in the CLI's words.

use std::path::Path;

use vdisk_core::{
    CancelToken, Children, CompactRequest, Failure, OpenOptions, Outcome, ParentPolicy, Toolkit,
    compact_path,
};

use crate::cli::CompactArgs;
use crate::exit::FirstFailure;
use crate::host_space::{self, HostSpace};
use crate::progress::Bar;
use crate::report::{self, CompactJson, Stage};

/// Runs `vdisk compact`.
pub fn run(
    args: &CompactArgs,
    toolkit: &Toolkit,
    parents: &ParentPolicy,
    cancel: &CancelToken,
) -> u8 {
    if args.is_batch() {
        return crate::batch::run(args, toolkit, parents, cancel);
    }
    let mut result = FirstFailure::default();
    let request = request(args, parents);
    for file in &args.files {
        let bar = Bar::new(file, !args.json);
        let allocated_before = host_space::allocated(file);
        let outcome = compact_path(file, toolkit, &request, &bar, cancel);
        let engine_notes = bar.finish();
        let code = match outcome {
            Ok(done) => {
                let mut notes = done.notes.clone();
                notes.extend(withheld_note(&done.withheld_for));
                notes.extend(engine_notes);
                notes.extend(sparse_note(file));
                let space = host_space::measured(file, allocated_before);
                print_done(file, args, &done, notes, space);
                0
            }
            Err(Failure {
                error,
                untouched,
                implicit_changes,
                ..
            }) => {
                // A replayed log is a change: never "the file was not changed" after one.
                let stage = if untouched {
                    report::changed_stage(Stage::Untouched, &implicit_changes)
                } else {
                    Stage::Applying
                };
                for n in &implicit_changes {
                    if !args.json {
                        report::note(file, n);
                    }
                }
                report::failure(file, &error, stage, args.json)
            }
        };
        result.record(code);
    }
    result.code()
}

/// What `args` ask of each file (batch mode asks the same of every file it compacts).
pub fn request(args: &CompactArgs, parents: &ParentPolicy) -> CompactRequest {
    CompactRequest::new(args.mode)
        .dry_run(args.dry_run)
        .force_children(args.force)
        .open_options(
            OpenOptions::read_only()
                .with_parents(parents.clone())
                .with_format(args.format.clone()),
        )
        .analysis_options(analysis_options(args))
}

/// Windows: the note for a file that carries the sparse attribute (WSL's sparse mode sets
/// it). vdisk compacts such a file like any other and never changes the attribute: it does
/// not set it (it never punches holes on Windows) and does not clear it (clearing allocates
/// every hole, which can need more space than the disk has free).
pub fn sparse_note(file: &Path) -> Option<String> {
    vdisk_core::has_sparse_attribute(file).then(|| {
        "the file carries windows' sparse attribute (wsl's sparse mode sets it); vdisk left it \
         as it was: wsl attaches the disk as it is, but hyper-v and disk management refuse a \
         sparse disk until the attribute is cleared (fsutil sparse setflag FILE 0, with the \
         disk detached)"
            .to_owned()
    })
}

fn print_done(
    file: &Path,
    args: &CompactArgs,
    done: &Outcome,
    notes: Vec<String>,
    space: Option<HostSpace>,
) {
    if args.json {
        report::json_line(&CompactJson::new(
            file,
            done.format,
            args.mode,
            &done.report,
            notes,
            done.analysis.as_ref(),
            space,
        ));
    } else {
        for n in &notes {
            report::note(file, n);
        }
        report::out(&report::compact_human(file, &done.report, space));
        if done.analysis.is_some() && !report::nothing_to_reclaim(&done.report) {
            report::out(&report::reclaim_sources(&done.report));
        }
    }
}

/// The notes saying why file-system free space was not reclaimed: the children that read
/// through the file, and the files that might.
pub fn withheld_note(w: &Children) -> Vec<String> {
    let mut notes = Vec::new();
    if !w.children.is_empty() {
        let names: Vec<String> = w
            .children
            .iter()
            .map(|k| report::shown(&k.canonicalize().unwrap_or_else(|_| k.clone())))
            .collect();
        notes.push(format!(
            "differencing images read through this one ({}): file-system free space is not \
             reclaimed, because that would change what they read; zero and trimmed blocks \
             still are (--force reclaims it anyway and invalidates them)",
            names.join(", ")
        ));
    }
    if !w.undetermined.is_empty() {
        let what: Vec<String> = w
            .undetermined
            .iter()
            .map(|u| format!("{}: {}", report::shown(&u.path), u.reason))
            .collect();
        notes.push(format!(
            "could not tell whether these files read through this one ({}): file-system free \
             space is not reclaimed, because that might change what they read; zero and \
             trimmed blocks still are (--force reclaims it anyway)",
            what.join("; ")
        ));
    }
    notes
}

/// The hazards the user accepted on the command line.
fn analysis_options(args: &CompactArgs) -> vdisk_core::AnalysisOptions {
    let mut options = vdisk_core::AnalysisOptions::default();
    if args.discard_shadow_copies {
        options = options.accepting(vdisk_ntfs::SHADOW_COPIES);
    }
    options
}
