//! `vdisk compact`: open (locked) → plan → dry-run report, or apply.

use std::path::Path;

use vdisk_core::{
    BlockDevice, CancelToken, CompactOptions, CompactReport, Compactor, DiskAnalysis, Error,
    ErrorKind, GenericCompactor, ImageKind, OpenOptions, ParentPolicy, Registry, analyze_disk_with,
};

use crate::children::ChildIndex;
use crate::cli::CompactArgs;
use crate::exit::FirstFailure;
use crate::progress::Bar;
use crate::registry;
use crate::report::{self, CompactJson, Stage};
use crate::volumes;

/// Runs `vdisk compact`.
pub fn run(
    args: &CompactArgs,
    registry: &Registry,
    parents: &ParentPolicy,
    cancel: &CancelToken,
) -> u8 {
    let mut result = FirstFailure::default();
    let mut children = ChildIndex::default();
    for file in &args.files {
        let code = match compact_one(file, args, registry, parents, &mut children, cancel) {
            Ok(Done {
                format,
                report,
                notes,
                analysis,
            }) => {
                if args.json {
                    report::json_line(&CompactJson::new(
                        file,
                        format,
                        args.mode,
                        &report,
                        notes,
                        analysis.as_ref(),
                    ));
                } else {
                    for n in &notes {
                        report::note(file, n);
                    }
                    report::out(&report::compact_human(file, &report));
                    if analysis.is_some() && !report::nothing_to_reclaim(&report) {
                        report::out(&report::reclaim_sources(&report));
                    }
                }
                0
            }
            Err((e, stage)) => report::failure(file, &e, stage, args.json),
        };
        result.record(code);
    }
    result.code()
}

/// What a successful compaction of one file gives the report.
struct Done {
    format: &'static str,
    report: CompactReport,
    notes: Vec<String>,
    /// The file-system analysis, for modes that use one.
    analysis: Option<DiskAnalysis>,
}

fn compact_one(
    file: &Path,
    args: &CompactArgs,
    registry: &Registry,
    parents: &ParentPolicy,
    children: &mut ChildIndex,
    cancel: &CancelToken,
) -> Result<Done, (Error, Stage)> {
    let untouched = |e: Error| (e, Stage::Untouched);
    if cancel.is_cancelled() {
        return Err(untouched(Error::new(
            ErrorKind::Cancelled,
            "cancelled before this file was started",
        )));
    }
    // Asked before the writable open: each child's open takes a shared lock on this file.
    let kids = if args.mode.uses_file_system() && !args.force {
        children.children_of(file, registry)
    } else {
        Vec::new()
    };
    let opts = if args.dry_run {
        OpenOptions::read_only()
    } else {
        OpenOptions::read_write()
    }
    .with_parents(parents.clone())
    .with_format(args.format.clone());
    let mut image = registry.open_path(file, &opts).map_err(untouched)?;
    let format = image.format();
    let mode = args.mode;
    let bar = Bar::new(&report::shown(file), !args.json);
    let mut opts = CompactOptions::new(mode);
    // A fixed disk in a block-moving mode is refused by the planner: no need to read it first.
    let refused = image.kind() == ImageKind::Fixed && mode.moves_blocks();
    let analysis = if mode.uses_file_system() && !refused {
        let disk: &dyn BlockDevice = &*image;
        let analysis = analyze_disk_with(disk, registry::analyzers(), &analysis_options(args))
            .map_err(untouched)?;
        for n in volumes::notes(&analysis, mode) {
            vdisk_core::Progress::note(&bar, &n);
        }
        if kids.is_empty() {
            opts.fs_free = Some(analysis.free.clone());
        } else if !analysis.free.is_empty() {
            let names: Vec<String> = kids.iter().map(|k| report::shown(k)).collect();
            vdisk_core::Progress::note(
                &bar,
                &format!(
                    "differencing images read through this one ({}): file-system free space \
                     is not reclaimed, because that would change what they read; zero and \
                     trimmed blocks still are (--force reclaims it anyway and invalidates them)",
                    names.join(", ")
                ),
            );
        }
        Some(analysis)
    } else {
        None
    };
    let compactor = GenericCompactor;
    let outcome = compactor
        .plan(&mut *image, &opts, &bar, cancel)
        .map_err(untouched)
        .and_then(|plan| {
            let dry = plan.report(true);
            if args.dry_run || report::nothing_to_reclaim(&dry) {
                // Nothing is written: a dry run, or a plan that changes nothing.
                Ok(plan.report(args.dry_run))
            } else {
                compactor
                    .apply(&mut *image, &plan, &bar, cancel)
                    .map_err(|e| (e, Stage::Applying))
            }
        });
    let notes = bar.finish();
    let report = outcome?;
    Ok(Done {
        format,
        report,
        notes,
        analysis,
    })
}

/// The hazards the user accepted on the command line.
fn analysis_options(args: &CompactArgs) -> vdisk_core::AnalysisOptions {
    let mut options = vdisk_core::AnalysisOptions::default();
    if args.discard_shadow_copies {
        options = options.accepting(vdisk_ntfs::SHADOW_COPIES);
    }
    options
}
