//! `vdisk compact`: open (locked) → plan → dry-run report, or apply.

use std::path::Path;

use vdisk_core::{
    CancelToken, CompactOptions, CompactReport, Compactor, Error, ErrorKind, GenericCompactor,
    Mode, OpenOptions, ParentPolicy, Registry,
};

use crate::cli::CompactArgs;
use crate::exit::FirstFailure;
use crate::progress::Bar;
use crate::report::{self, CompactJson, Stage};

/// The mode actually run, and a note if it differs from the one asked for. There is no
/// file-system analyser yet, so the file-system-aware modes fall back to their agnostic halves.
fn effective_mode(requested: Mode) -> (Mode, Option<String>) {
    match requested {
        Mode::Full => (
            Mode::Prezeroed,
            Some(
                "full: no file-system analyser yet, so this ran as prezeroed \
                 (all-zero and trimmed blocks only; file-system free space is not reclaimed)"
                    .to_string(),
            ),
        ),
        Mode::Quick => (
            Mode::Pretrimmed,
            Some(
                "quick: no file-system analyser yet, so this ran as pretrimmed \
                 (only blocks the image already marks trimmed)"
                    .to_string(),
            ),
        ),
        other => (other, None),
    }
}

/// Runs `vdisk compact`.
pub fn run(
    args: &CompactArgs,
    registry: &Registry,
    parents: &ParentPolicy,
    cancel: &CancelToken,
) -> u8 {
    let mut result = FirstFailure::default();
    for file in &args.files {
        let code = match compact_one(file, args, registry, parents, cancel) {
            Ok((format, report, notes)) => {
                if args.json {
                    report::json_line(&CompactJson::new(file, format, args.mode, &report, notes));
                } else {
                    for n in &notes {
                        report::note(file, n);
                    }
                    report::out(&report::compact_human(file, &report));
                }
                0
            }
            Err((e, stage)) => report::failure(file, &e, stage, args.json),
        };
        result.record(code);
    }
    result.code()
}

type Done = (&'static str, CompactReport, Vec<String>);

fn compact_one(
    file: &Path,
    args: &CompactArgs,
    registry: &Registry,
    parents: &ParentPolicy,
    cancel: &CancelToken,
) -> Result<Done, (Error, Stage)> {
    let untouched = |e: Error| (e, Stage::Untouched);
    if cancel.is_cancelled() {
        return Err(untouched(Error::new(
            ErrorKind::Cancelled,
            "cancelled before this file was started",
        )));
    }
    let opts = if args.dry_run {
        OpenOptions::read_only()
    } else {
        OpenOptions::read_write()
    }
    .with_parents(parents.clone());
    let mut image = registry.open_path(file, &opts).map_err(untouched)?;
    let format = image.format();
    let (mode, fallback) = effective_mode(args.mode);
    let bar = Bar::new(&report::shown(file), !args.json);
    if let Some(n) = fallback {
        vdisk_core::Progress::note(&bar, &n);
    }
    let compactor = GenericCompactor;
    let outcome = compactor
        .plan(&mut *image, &CompactOptions::new(mode), &bar, cancel)
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
    Ok((format, report, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_aware_modes_fall_back_and_say_so_the_others_run_as_asked() {
        assert_eq!(effective_mode(Mode::Full).0, Mode::Prezeroed);
        assert_eq!(effective_mode(Mode::Quick).0, Mode::Pretrimmed);
        assert!(effective_mode(Mode::Full).1.is_some());
        assert!(effective_mode(Mode::Quick).1.is_some());
        for m in [Mode::Prezeroed, Mode::Pretrimmed, Mode::Retrim] {
            assert_eq!(effective_mode(m), (m, None));
        }
    }
}
