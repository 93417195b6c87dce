//! Format drivers and the open registry: adding a format is one crate and one line in the CLI's
//! list, with no enum or `match` in core to edit.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::check::{CheckReport, Problem};
use crate::error::{Error, ErrorKind, Result};
use crate::host_file::{Access, HostFile, StdFile};
use crate::image::{DiskImage, ImageKind};
use crate::parent::{ChainContext, ParentPolicy};

/// How sure a driver is that a file is in its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// Not this format.
    No,
    /// Could be (e.g. a signature in a place other formats also use).
    Maybe,
    /// This format's signature is present.
    Yes,
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Open for writing. Read-only opens never change the file (a VHDX log is replayed in
    /// memory only).
    pub writable: bool,
    /// Which parent files a differencing image may open.
    pub parents: ParentPolicy,
    /// Where the image lives and which chain members are already open (set by
    /// [`Registry::open_path`]; drivers pass the [`crate::FoundParent::chain`] when opening a
    /// parent).
    pub chain: ChainContext,
}

impl OpenOptions {
    /// Read-only options.
    pub fn read_only() -> OpenOptions {
        OpenOptions {
            writable: false,
            ..OpenOptions::default()
        }
    }

    /// Read-write options.
    pub fn read_write() -> OpenOptions {
        OpenOptions {
            writable: true,
            ..OpenOptions::default()
        }
    }

    /// Sets the parent policy.
    #[must_use]
    pub fn with_parents(mut self, parents: ParentPolicy) -> OpenOptions {
        self.parents = parents;
        self
    }

    /// The options to open a parent found at `chain`: read-only, same policy.
    pub fn for_parent(&self, chain: ChainContext) -> OpenOptions {
        OpenOptions {
            writable: false,
            parents: self.parents.clone(),
            chain,
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreateSpec {
    /// Fixed or dynamic.
    pub kind: ImageKind,
    /// Virtual size in bytes.
    pub size: u64,
    /// Block size in bytes; `None` for the format's default.
    pub block_size: Option<u64>,
    /// Logical sector size; `None` for 512.
    pub logical_sector_size: Option<u32>,
    /// For [`ImageKind::Differencing`]: the parent image (size, sector size and linkage come
    /// from it; locators are written relative to [`CreateSpec::path`] and absolute).
    pub parent: Option<PathBuf>,
    /// Where the new image is being created (needed for relative parent locators).
    pub path: Option<PathBuf>,
    /// Folders from which the parent's own parents may be opened, besides each image's own
    /// folder (as [`ParentPolicy::allowed_dirs`] for an open).
    pub parent_dirs: Vec<PathBuf>,
}

impl CreateSpec {
    /// A spec with format defaults for block and sector size.
    pub fn new(kind: ImageKind, size: u64) -> CreateSpec {
        CreateSpec {
            kind,
            size,
            block_size: None,
            logical_sector_size: None,
            parent: None,
            path: None,
            parent_dirs: Vec::new(),
        }
    }

    /// A differencing spec over `parent`, for a new image at `path`. The size is taken from
    /// the parent at create time.
    pub fn differencing(parent: impl Into<PathBuf>, path: impl Into<PathBuf>) -> CreateSpec {
        CreateSpec {
            parent: Some(parent.into()),
            path: Some(path.into()),
            ..CreateSpec::new(ImageKind::Differencing, 0)
        }
    }

    /// Sets the block size.
    #[must_use]
    pub fn block_size(mut self, block_size: u64) -> CreateSpec {
        self.block_size = Some(block_size);
        self
    }

    /// Sets the folders the parent's own parents may be opened from.
    #[must_use]
    pub fn parent_dirs(mut self, dirs: Vec<PathBuf>) -> CreateSpec {
        self.parent_dirs = dirs;
        self
    }

    /// Sets the logical sector size.
    #[must_use]
    pub fn logical_sector_size(mut self, size: u32) -> CreateSpec {
        self.logical_sector_size = Some(size);
        self
    }
}

/// One image format.
pub trait FormatDriver: Send + Sync + fmt::Debug + 'static {
    /// Short id used on the command line and in reports, e.g. `"vhd"`.
    fn id(&self) -> &'static str;

    /// File name extensions, lowercase without the dot.
    fn extensions(&self) -> &'static [&'static str];

    /// Cheap signature check on the first and last 64 KiB at most; never follows references.
    fn probe(&self, file: &dyn HostFile) -> Result<Confidence>;

    /// Opens and validates an image. Errors say what is wrong and never change the file.
    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>>;

    /// Creates a new image in an empty file.
    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        let _ = (file, spec);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("creating {} images is not supported", self.id()),
        ))
    }

    /// Checks an image, collecting every structural problem found. The default opens it
    /// read-only and reports the open error, or the image's own deep checks.
    fn check(&self, file: Box<dyn HostFile>) -> Result<CheckReport> {
        let problems = match self.open(file, &OpenOptions::read_only()) {
            Ok(image) => image.check()?,
            Err(e) if e.kind() == ErrorKind::InvalidImage => {
                vec![Problem::error(e.message(), e.offset())]
            }
            Err(e) => return Err(e),
        };
        Ok(CheckReport { problems })
    }
}

/// The formats a program knows, in priority order.
#[derive(Debug, Clone)]
pub struct Registry {
    drivers: Vec<&'static dyn FormatDriver>,
}

impl Registry {
    /// A registry of `drivers`; earlier ones win ties.
    pub fn new(drivers: &[&'static dyn FormatDriver]) -> Registry {
        Registry {
            drivers: drivers.to_vec(),
        }
    }

    /// All registered drivers.
    pub fn drivers(&self) -> &[&'static dyn FormatDriver] {
        &self.drivers
    }

    /// The driver with id `id`.
    pub fn by_id(&self, id: &str) -> Option<&'static dyn FormatDriver> {
        self.drivers.iter().copied().find(|d| d.id() == id)
    }

    /// The driver for a file name's extension.
    pub fn by_extension(&self, path: &Path) -> Option<&'static dyn FormatDriver> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        self.drivers
            .iter()
            .copied()
            .find(|d| d.extensions().contains(&ext.as_str()))
    }

    /// The driver most confident about `file`. [`ErrorKind::InvalidImage`] if none claims it.
    pub fn detect(&self, file: &dyn HostFile) -> Result<&'static dyn FormatDriver> {
        let mut best: Option<(Confidence, &'static dyn FormatDriver)> = None;
        for &driver in &self.drivers {
            let confidence = driver.probe(file)?;
            if confidence > Confidence::No && best.is_none_or(|(c, _)| confidence > c) {
                best = Some((confidence, driver));
            }
        }
        best.map(|(_, d)| d).ok_or_else(|| {
            let ids: Vec<_> = self.drivers.iter().map(|d| d.id()).collect();
            Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "not a disk image this tool knows (tried {})",
                    ids.join(", ")
                ),
            )
        })
    }

    /// Opens the image at `path`: locks the file (shared, or exclusive when writable), detects
    /// the format and opens it. Errors carry the path.
    pub fn open_path(&self, path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        let access = if opts.writable {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let file = StdFile::open(path, access)?;
        let driver = self.detect(&file).map_err(|e| e.with_path(path))?;
        let mut opts = opts.clone();
        if opts.chain.path.is_none() {
            opts.chain = ChainContext::root(path);
        }
        driver
            .open(Box::new(file), &opts)
            .map_err(|e| e.with_path(path))
    }
}
