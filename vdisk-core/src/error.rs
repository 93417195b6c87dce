//! One error type for the whole toolkit: a small stable [`ErrorKind`] plus context.
//!
//! Modelled on cloud-hypervisor's block error: the kind is what callers branch on (the CLI maps it
//! to an exit code), the message says what is wrong in the user's terms, path and offset say
//! where, and the underlying cause is only reachable through [`std::error::Error::source`], so it
//! is never printed twice.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, in the few categories a caller acts on. Stable: new variants may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O error from the host that fits no other kind.
    Io,
    /// Another program has the image open (it holds a conflicting lock).
    InUse,
    /// The file, its folder or its file system cannot be written, or permission was denied.
    ReadOnly,
    /// The image is valid but of a type the operation does not apply to (a fixed disk given to
    /// a block-moving compaction, a saved-state VHD, ...).
    WrongType,
    /// The file is not a valid image: bad signature, checksum, size, or inconsistent tables.
    InvalidImage,
    /// The image or request uses a feature this version does not support.
    Unsupported,
    /// The host file system is full (or a quota or file-size limit was hit).
    NoSpace,
    /// The operation was cancelled through a [`crate::CancelToken`].
    Cancelled,
    /// A read or write outside the device or file.
    OutOfRange,
    /// A caller passed an argument that can never work (zero size, bad block size, ...).
    InvalidInput,
    /// A named file does not exist.
    NotFound,
    /// A file to be created exists already (the toolkit never overwrites one).
    AlreadyExists,
    /// A bug: the toolkit's own parts disagree (a compaction plan that no longer matches the
    /// image, overlapping internal copies). Nothing the user passed or the file holds; the
    /// operation stops before the step that found it.
    Internal,
    /// A file the image's own content names (a parent locator), or one a scan found, is one
    /// the open policy does not allow: outside the folders the caller allowed, reached through
    /// a symbolic link that changed after the path was checked, or not a regular file. It was
    /// not read, and the image was not changed.
    Refused,
}

impl ErrorKind {
    /// A short lowercase name, stable for JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::InUse => "in-use",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::WrongType => "wrong-type",
            ErrorKind::InvalidImage => "invalid-image",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::OutOfRange => "out-of-range",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::Internal => "internal",
            ErrorKind::Refused => "refused",
        }
    }

    /// The kind an `io::Error` belongs to.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        use io::ErrorKind as K;
        if crate::sys::is_in_use(err) {
            return ErrorKind::InUse;
        }
        match err.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::ReadOnly,
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => ErrorKind::NoSpace,
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The toolkit's error: kind, message, optional path and offset, optional cause.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    offset: Option<u64>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a lowercase message that says what is wrong.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                path: None,
                offset: None,
                source: None,
            }),
        }
    }

    /// An [`ErrorKind::InvalidImage`] error at host offset `offset`.
    pub fn invalid(message: impl Into<String>, offset: u64) -> Self {
        Error::new(ErrorKind::InvalidImage, message).with_offset(offset)
    }

    /// An I/O error while doing `what` (e.g. "reading the BAT"); the kind follows the cause.
    /// A write refused by the process's file-size limit (`EFBIG`: `ulimit -f`, `prlimit
    /// --fsize`) is [`ErrorKind::NoSpace`] and says so, since the OS's own words ("file too
    /// large") do not name the limit.
    pub fn io(err: io::Error, what: impl Into<String>) -> Self {
        let mut what = what.into();
        if err.kind() == io::ErrorKind::FileTooLarge {
            what.push_str(" (the file-size limit of this process was hit: ulimit -f)");
        }
        Error::new(ErrorKind::of_io(&err), what).with_source(err)
    }

    /// Attaches the file the error is about (kept if one is already set).
    #[must_use]
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.inner.path.is_none() {
            self.inner.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attaches the host-file or device offset the error is about (kept if already set).
    #[must_use]
    pub fn with_offset(mut self, offset: u64) -> Self {
        if self.inner.offset.is_none() {
            self.inner.offset = Some(offset);
        }
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message without path, offset or cause.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The file the error is about, if known.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The offset the error is about, if known.
    pub fn offset(&self) -> Option<u64> {
        self.inner.offset
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.inner.path {
            write!(f, "{}: ", path.display())?;
        }
        f.write_str(&self.inner.message)?;
        if let Some(offset) = self.inner.offset {
            write!(f, " (at offset {offset:#x})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(path) = &self.inner.path {
            d.field("path", path);
        }
        if let Some(offset) = self.inner.offset {
            d.field("offset", &format_args!("{offset:#x}"));
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::io(err, "i/o error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_path_message_offset_but_not_the_cause() {
        let err = Error::io(io::Error::other("disk on fire"), "reading the bat")
            .with_path("/x/a.vhd")
            .with_offset(0x600);
        assert_eq!(
            err.to_string(),
            "/x/a.vhd: reading the bat (at offset 0x600)"
        );
        assert_eq!(err.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn io_kinds_map_to_actionable_kinds() {
        let e = |k| ErrorKind::of_io(&io::Error::from(k));
        assert_eq!(e(io::ErrorKind::PermissionDenied), ErrorKind::ReadOnly);
        assert_eq!(e(io::ErrorKind::StorageFull), ErrorKind::NoSpace);
        assert_eq!(e(io::ErrorKind::NotFound), ErrorKind::NotFound);
        assert_eq!(e(io::ErrorKind::AlreadyExists), ErrorKind::AlreadyExists);
        assert_eq!(e(io::ErrorKind::Interrupted), ErrorKind::Io);
        assert_eq!(e(io::ErrorKind::FileTooLarge), ErrorKind::NoSpace);
    }

    #[test]
    #[cfg(unix)]
    fn a_file_size_limit_is_no_space_and_the_message_names_the_limit() {
        let efbig = io::Error::from_raw_os_error(27);
        let err = Error::io(efbig, "cannot write");
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert!(err.message().contains("file-size limit"), "{err}");
    }

    #[test]
    fn first_context_wins() {
        let err = Error::invalid("bad", 1)
            .with_offset(2)
            .with_path("a")
            .with_path("b");
        assert_eq!(err.offset(), Some(1));
        assert_eq!(err.path(), Some(Path::new("a")));
    }
}
