//! Process exit codes: the one place an [`ErrorKind`] becomes a number scripts branch on.

use vdisk_core::ErrorKind;

/// Success, including "nothing to reclaim".
pub const OK: u8 = 0;
/// Any error no other code describes (an i/o error of the host, and internal errors, which ask
/// to be reported).
pub const OTHER: u8 = 1;
/// Usage error (bad option or argument); also clap's own code.
pub const USAGE: u8 = 2;
/// Another program has the image open.
pub const IN_USE: u8 = 3;
/// The file is not a valid image, or it is corrupt, or it names a parent vdisk may not open
/// (outside the allowed folders, or not a regular file).
pub const INVALID: u8 = 4;
/// The image type or the mode is not supported for this operation.
pub const UNSUPPORTED: u8 = 5;
/// The file or its folder is read-only, or permission was denied.
pub const READ_ONLY: u8 = 6;
/// The host file system is full.
pub const NO_SPACE: u8 = 7;
/// Cancelled by Ctrl-C or SIGTERM.
pub const CANCELLED: u8 = 8;
/// A file that must exist does not: the image named, or the parent it names.
pub const NOT_FOUND: u8 = 9;
/// The file `create` was asked to make exists already (vdisk never overwrites one).
pub const EXISTS: u8 = 10;

/// The exit-code table shown by `vdisk --help` (and repeated in the README).
pub const HELP: &str = "\
Exit codes:
  0  success (also \"nothing to reclaim\")
  1  other error (an i/o error of the host, internal error)
  2  usage error
  3  image in use by another program
  4  invalid or corrupt image, not a disk image (a folder, device or pipe too), a file
     that reads as two formats (name one with --format), or its parent is refused
     (outside the child's folder: allow with --parent-dir DIR or --parent PATH)
  5  unsupported image type or mode
  6  read-only file or permission denied
  7  no space left on the host
  8  cancelled (Ctrl-C / SIGTERM); the image is still valid
  9  no such file (the image named, or the parent a differencing image names)
 10  the file to create exists already (vdisk never overwrites a file)
With several files, each is processed on its own and the exit code is the first failure's.
Many disks at once (compact with --recursive, --jobs, --min-savings, --skip-in-use or
--report): 0 if no file failed (in-use files with --skip-in-use, below-threshold and
nothing-to-reclaim are not failures), 8 if the run was cancelled, otherwise the code of the
first file, in walk order, that failed.";

/// The exit code for an error of `kind`.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InUse => IN_USE,
        // A read past the end of the file means the image is shorter than its tables say.
        ErrorKind::InvalidImage | ErrorKind::OutOfRange => INVALID,
        // What a differencing image names as its parent is its content, not the user's input.
        ErrorKind::Refused => INVALID,
        ErrorKind::WrongType | ErrorKind::Unsupported => UNSUPPORTED,
        ErrorKind::ReadOnly => READ_ONLY,
        ErrorKind::NoSpace => NO_SPACE,
        ErrorKind::Cancelled => CANCELLED,
        ErrorKind::InvalidInput => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists => EXISTS,
        ErrorKind::Io | ErrorKind::Internal => OTHER,
        _ => OTHER,
    }
}

/// Remembers the first failure of a multi-file run.
#[derive(Debug, Default, Clone, Copy)]
pub struct FirstFailure(Option<u8>);

impl FirstFailure {
    /// Records `code` unless it is success or a failure was already recorded.
    pub fn record(&mut self, code: u8) {
        if code != OK && self.0.is_none() {
            self.0 = Some(code);
        }
    }

    /// The code to exit with.
    pub fn code(self) -> u8 {
        self.0.unwrap_or(OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_documented_code() {
        assert_eq!(code_for(ErrorKind::InUse), 3);
        assert_eq!(code_for(ErrorKind::InvalidImage), 4);
        assert_eq!(code_for(ErrorKind::Refused), 4);
        assert_eq!(code_for(ErrorKind::WrongType), 5);
        assert_eq!(code_for(ErrorKind::Unsupported), 5);
        assert_eq!(code_for(ErrorKind::ReadOnly), 6);
        assert_eq!(code_for(ErrorKind::NoSpace), 7);
        assert_eq!(code_for(ErrorKind::Cancelled), 8);
        assert_eq!(code_for(ErrorKind::InvalidInput), 2);
        assert_eq!(code_for(ErrorKind::NotFound), 9);
        assert_eq!(code_for(ErrorKind::AlreadyExists), 10);
        assert_eq!(code_for(ErrorKind::Io), 1);
        assert_eq!(code_for(ErrorKind::Internal), 1);
    }

    #[test]
    fn the_first_failure_wins_and_success_is_zero() {
        let mut f = FirstFailure::default();
        assert_eq!(f.code(), 0);
        f.record(OK);
        f.record(IN_USE);
        f.record(INVALID);
        assert_eq!(f.code(), IN_USE);
    }
}
