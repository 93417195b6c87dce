//! `vdisk check`: structural validation; exit 0 only if the image is safe to compact.

use std::path::Path;

use vdisk_core::{
    Access, CheckReport, Error, ErrorKind, FormatDriver, OpenOptions, ParentPolicy, Problem,
    Registry, StdFile,
};

use crate::cli::CheckArgs;
use crate::exit::{self, FirstFailure};
use crate::report::{self, CheckJson, Stage};

/// Runs `vdisk check`.
pub fn run(args: &CheckArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    let mut result = FirstFailure::default();
    for file in &args.files {
        let code = match check_one(file, registry, parents) {
            Ok((format, check)) => {
                if args.json {
                    report::json_line(&CheckJson::new(file, format, &check));
                } else {
                    report::out(&report::check_human(file, format, &check));
                }
                if check.safe_to_compact() {
                    exit::OK
                } else {
                    exit::INVALID
                }
            }
            Err(e) => report::failure(file, &e, Stage::Untouched, args.json),
        };
        result.record(code);
    }
    result.code()
}

/// The format (if recognised) and the findings. A file no driver recognises is a report with
/// one error, not an `Err`: `check`'s answer for it is "not safe to compact".
fn check_one(
    file: &Path,
    registry: &Registry,
    parents: &ParentPolicy,
) -> Result<(Option<&'static str>, CheckReport), Error> {
    let host = StdFile::open(file, Access::ReadOnly)?;
    let driver: &dyn FormatDriver = match registry.detect(&host) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::InvalidImage => {
            let problems = vec![Problem::error(e.message(), e.offset())];
            return Ok((None, CheckReport { problems }));
        }
        Err(e) => return Err(e.with_path(file)),
    };
    let id = driver.id();
    let mut check = driver
        .check(Box::new(host))
        .map_err(|e| e.with_path(file))?;
    // A driver's check finds parents with the default policy only; a differencing image whose
    // parent the user named (--parent, --parent-dir) is judged by an open with that policy.
    if !check.safe_to_compact() && *parents != ParentPolicy::default() {
        let opts = OpenOptions::read_only().with_parents(parents.clone());
        if let Ok(image) = registry.open_path(file, &opts) {
            check = CheckReport {
                problems: image.check().map_err(|e| e.with_path(file))?,
            };
        }
    }
    Ok((Some(id), check))
}
