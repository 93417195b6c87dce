//! `vdisk check`: structural validation; exit 0 only if the image is safe to compact.

use std::path::Path;

use vdisk_core::{Access, CheckReport, Error, ErrorKind, FormatDriver, Problem, Registry, StdFile};

use crate::cli::CheckArgs;
use crate::exit::{self, FirstFailure};
use crate::report::{self, CheckJson, Stage};

/// Runs `vdisk check`.
pub fn run(args: &CheckArgs, registry: &Registry) -> u8 {
    let mut result = FirstFailure::default();
    for file in &args.files {
        let code = match check_one(file, registry) {
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
    let check = driver
        .check(Box::new(host))
        .map_err(|e| e.with_path(file))?;
    Ok((Some(id), check))
}
