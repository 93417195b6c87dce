//! `vdisk check`: structural validation; lists every problem found and says whether the image
//! is safe to compact, and why. Exit 0 only if it is; 4 for structural errors; 5 for a sound
//! image that must not be compacted (e.g. a VHD saved with its VM).

use std::path::Path;

use vdisk_core::{
    Access, CheckReport, Error, ErrorKind, FormatDriver, ImageKind, OpenOptions, ParentPolicy,
    Problem, Registry, Severity, StdFile,
};

use crate::cli::CheckArgs;
use crate::exit::{self, FirstFailure};
use crate::report::{self, CheckJson, Stage};

/// Runs `vdisk check`.
pub fn run(args: &CheckArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    let mut result = FirstFailure::default();
    for file in &args.files {
        let code = match check_one(file, args.format.as_deref(), registry, parents) {
            Ok((format, check, verdict)) => {
                if args.json {
                    report::json_line(&CheckJson::new(file, format, &check, &verdict));
                } else {
                    report::out(&report::check_human(file, format, &check, &verdict));
                }
                if verdict.safe {
                    exit::OK
                } else if !check.safe_to_compact() || format.is_none() {
                    exit::INVALID
                } else {
                    exit::UNSUPPORTED
                }
            }
            Err(e) => report::failure(file, &e, Stage::Untouched, args.json),
        };
        result.record(code);
    }
    result.code()
}

/// Whether an image may be compacted, and why (or why not), in the user's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True if `vdisk compact` may run on the image.
    pub safe: bool,
    /// The reason, lowercase, e.g. "no problems found" or "2 structural errors; ...".
    pub why: String,
}

type Checked = (Option<&'static str>, CheckReport, Verdict);

/// The format (if recognised), the findings and the verdict. A file no driver recognises is a
/// report with one error, not an `Err`: `check`'s answer for it is "not safe to compact".
fn check_one(
    file: &Path,
    format: Option<&str>,
    registry: &Registry,
    parents: &ParentPolicy,
) -> Result<Checked, Error> {
    let host = StdFile::open(file, Access::ReadOnly)?;
    let driver: &dyn FormatDriver = match registry.driver_for(&host, format) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::InvalidImage => {
            let problems = vec![Problem::error(e.message(), e.offset())];
            let verdict = Verdict {
                safe: false,
                why: if e.message().contains("--format") {
                    "the format is ambiguous (see above)".into()
                } else {
                    "not a disk image this tool knows".into()
                },
            };
            return Ok((None, CheckReport { problems }, verdict));
        }
        Err(e) => return Err(e.with_path(file)),
    };
    let opts = OpenOptions::read_only()
        .with_parents(parents.clone())
        .with_format(Some(driver.id().to_string()));
    // A parent named for an image that has none is a usage error, not something to ignore.
    if parents.explicit.is_some()
        && let Err(e) = registry.open_path(file, &opts)
        && e.kind() == ErrorKind::InvalidInput
    {
        return Err(e);
    }
    let id = driver.id();
    let mut check = driver
        .check_with(
            Box::new(host),
            &opts.clone().with_registry(registry.clone()),
        )
        .map_err(|e| e.with_path(file))?;
    // A driver's check finds parents with the default policy only; a differencing image whose
    // parent the user named (--parent, --parent-dir) is judged by an open with that policy.
    if !check.safe_to_compact()
        && *parents != ParentPolicy::default()
        && let Ok(image) = registry.open_path(file, &opts)
    {
        check = CheckReport {
            problems: image.check().map_err(|e| e.with_path(file))?,
        };
    }
    let verdict = verdict(file, driver, &check, parents)?;
    Ok((Some(id), check, verdict))
}

/// Structural errors say no; otherwise the image's own compaction preconditions decide
/// (asked on a read-only open, which changes nothing).
fn verdict(
    file: &Path,
    driver: &dyn FormatDriver,
    check: &CheckReport,
    parents: &ParentPolicy,
) -> Result<Verdict, Error> {
    let count = |s: Severity| check.problems.iter().filter(|p| p.severity == s).count();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let errors = count(Severity::Error);
    if errors > 0 {
        return Ok(Verdict {
            safe: false,
            why: format!(
                "{} (listed below); compaction refuses a damaged image",
                plural(errors, "structural error")
            ),
        });
    }
    let host = StdFile::open(file, Access::ReadOnly)?;
    let mut image = driver
        .open(Box::new(host), &{
            let mut opts = OpenOptions::read_only().with_parents(parents.clone());
            opts.chain = vdisk_core::ChainContext::root(file);
            opts
        })
        .map_err(|e| e.with_path(file))?;
    if let Err(e) = image.compaction_allowed() {
        return Ok(Verdict {
            safe: false,
            why: e.message().to_string(),
        });
    }
    let kind = image.kind();
    let why = match image.as_compactable() {
        Err(e) if kind == ImageKind::Fixed => {
            format!("fixed disk: only --mode retrim applies ({})", e.message())
        }
        Err(e) if matches!(e.kind(), ErrorKind::WrongType | ErrorKind::Unsupported) => {
            return Ok(Verdict {
                safe: false,
                why: e.message().to_string(),
            });
        }
        _ => match count(Severity::Warning) {
            0 => "no problems found".into(),
            n => format!("{}, none prevents compaction", plural(n, "warning")),
        },
    };
    Ok(Verdict { safe: true, why })
}
