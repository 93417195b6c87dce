//! Findings of `vdisk check`.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; the image is still safe to read and compact.
    Warning,
    /// The image is damaged: compaction is refused until it is repaired.
    Error,
}

/// One structural problem in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// Host-file offset of the structure at fault, if there is one.
    pub offset: Option<u64>,
    /// What is wrong, lowercase, in the user's terms.
    pub message: String,
}

impl Problem {
    /// An error-level problem.
    pub fn error(message: impl Into<String>, offset: Option<u64>) -> Problem {
        Problem {
            severity: Severity::Error,
            offset,
            message: message.into(),
        }
    }

    /// A warning.
    pub fn warning(message: impl Into<String>, offset: Option<u64>) -> Problem {
        Problem {
            severity: Severity::Warning,
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: {}", self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at offset {offset:#x})")?;
        }
        Ok(())
    }
}

/// The outcome of checking one image.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Every problem found, in file order where possible.
    pub problems: Vec<Problem>,
}

/// The first error-level problem as the error an open returns ([`ErrorKind::InvalidImage`],
/// with its offset), saying how many more there are; `None` if there are only warnings.
pub fn first_error(problems: &[Problem]) -> Option<Error> {
    let mut errors = problems.iter().filter(|p| p.severity == Severity::Error);
    let p = errors.next()?;
    let more = match errors.count() {
        0 => String::new(),
        n => format!(
            " (and {n} more problem{}; `vdisk check` lists them)",
            if n == 1 { "" } else { "s" }
        ),
    };
    let err = Error::new(ErrorKind::InvalidImage, format!("{}{more}", p.message));
    Some(match p.offset {
        Some(o) => err.with_offset(o),
        None => err,
    })
}

impl CheckReport {
    /// True if no error-level problem was found: the image may be compacted.
    pub fn safe_to_compact(&self) -> bool {
        self.problems.iter().all(|p| p.severity < Severity::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_skips_warnings_and_counts_the_rest() {
        assert!(first_error(&[Problem::warning("w", None)]).is_none());
        let e = first_error(&[
            Problem::warning("w", None),
            Problem::error("bad bat", Some(0x600)),
            Problem::error("bad block", None),
        ])
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidImage);
        assert_eq!(e.offset(), Some(0x600));
        assert_eq!(
            e.message(),
            "bad bat (and 1 more problem; `vdisk check` lists them)"
        );
    }
}
