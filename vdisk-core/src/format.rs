//! Format drivers and the open registry: adding a format is one crate and one line in the CLI's
//! list, with no enum or `match` in core to edit.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::check::{CheckReport, Problem};
use crate::error::{Error, ErrorKind, Result};
use crate::host_file::{Access, HostFile, StdFile};
use crate::image::{DiskImage, ImageKind};
use crate::parent::{ChainContext, Locator, ParentPolicy};

/// How sure a driver is that a file is in its format, and from which bytes.
///
/// The rule every probe follows: **a format is recognised only from bytes the format owns and
/// no guest can write.** Which bytes those are depends on what the file turns out to be: the
/// first bytes of a VHDX are its own, but the first bytes of a fixed VHD are guest data, and the
/// last bytes of a VHDX (or of most formats) are guest data, while those of a VHD are its
/// footer. A probe therefore says how far its evidence can be trusted, and
/// [`Registry::detect`] weighs the claims: the ordering below is that trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// Not this format.
    No,
    /// A signature whose surrounding structure does not hold up (a damaged image), or a bare
    /// magic number the driver does not validate further (formats only recognised). Chosen
    /// only when no driver claims more, so that a damaged image still gets its own driver's
    /// precise error; ties go to the earlier driver.
    Maybe,
    /// A complete, self-consistent structure of this format (checksum, sizes matching the file
    /// length) that lies in bytes a guest of *another* format could have written: a fixed
    /// VHD's footer at the end of the file. Chosen over [`Confidence::Maybe`]; next to another
    /// driver's [`Confidence::Likely`] or [`Confidence::Yes`] the file is ambiguous and is
    /// refused until the caller names the format ([`OpenOptions::format`]).
    Likely,
    /// This format's signature at the start of the file, where every format but a fixed VHD
    /// keeps its own header (VHDX "vhdxfile", the footer copy of a dynamic VHD). Wins over
    /// [`Confidence::Maybe`]; two such claims, or one next to a [`Confidence::Likely`], make
    /// the file ambiguous.
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
    /// [`Registry::open_path`], and by the parent gate for each parent it opens; drivers pass
    /// `opts` to [`crate::parent::open_backing`] unchanged).
    pub chain: ChainContext,
    /// The format to open the image as (a driver id such as `"vhd"`), instead of detecting
    /// it: how a caller resolves a file that [`Registry::detect`] calls ambiguous. A forced
    /// format that does not open is an error, never a fallback to detection. Applies to the
    /// image named only, not to its parents.
    pub format: Option<String>,
    /// The formats a backing image found inside this one may be in: the registry the
    /// top-level open came from (set by [`Registry::open_path`] when unset, and handed down
    /// the chain by [`OpenOptions::for_parent`]). The parent gate
    /// ([`crate::parent::open_backing`]) detects each parent's format with it, so a chain may
    /// mix formats. `None` (a library caller opening with one driver directly): the gate
    /// knows only the driver asking.
    pub registry: Option<Registry>,
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

    /// Sets the format to open the image as ([`OpenOptions::format`]); `None` detects it.
    #[must_use]
    pub fn with_format(mut self, format: Option<String>) -> OpenOptions {
        self.format = format;
        self
    }

    /// Sets the registry parents are detected with ([`OpenOptions::registry`]).
    #[must_use]
    pub fn with_registry(mut self, registry: Registry) -> OpenOptions {
        self.registry = Some(registry);
        self
    }

    /// The options to open a parent found at `chain`: read-only, same policy and registry,
    /// format detected.
    pub fn for_parent(&self, chain: ChainContext) -> OpenOptions {
        OpenOptions {
            writable: false,
            parents: self.parents.clone(),
            chain,
            format: None,
            registry: self.registry.clone(),
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
    /// The formats the parent may be in, as [`OpenOptions::registry`] for an open: a driver
    /// whose children may have a parent of another format opens it through
    /// [`crate::parent::open_named_parent`], which detects it with these. `None`: the
    /// creating driver's own format only.
    pub registry: Option<Registry>,
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
            registry: None,
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

    /// Sets the registry a parent's format is detected with ([`CreateSpec::registry`]).
    #[must_use]
    pub fn with_registry(mut self, registry: Registry) -> CreateSpec {
        self.registry = Some(registry);
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

    /// Cheap signature check on the first and last 64 KiB at most (plus, at most, one
    /// structure those point at); never follows references to other files.
    ///
    /// Contract: a driver may claim only bytes its format owns, and says how far a guest could
    /// have written them ([`Confidence`]): its signature at offset 0 is [`Confidence::Yes`]; a
    /// structure in bytes that are guest data in other formats (the end of the file, in
    /// particular) is at most [`Confidence::Likely`], and only when it is complete and agrees
    /// with the file (checksum, length); anything less is [`Confidence::Maybe`]. A probe never
    /// says more because it failed to find another format's signature.
    fn probe(&self, file: &dyn HostFile) -> Result<Confidence>;

    /// Checks a [`CreateSpec`] without touching any file, so a caller can refuse bad
    /// arguments before it creates anything. [`FormatDriver::create`] checks again. The
    /// default accepts everything.
    fn check_spec(&self, spec: &CreateSpec) -> Result<()> {
        let _ = spec;
        Ok(())
    }

    /// Opens and validates an image. Errors say what is wrong and never change the file.
    ///
    /// A differencing image opens its parent through core's gate, never by itself: it hands
    /// what it found inside the file ([`ParentReference`]) and `opts` unchanged to
    /// [`crate::parent::open_backing`], which applies the user's policy and opens the parent
    /// read-only with whichever driver of [`OpenOptions::registry`] recognises it. The driver
    /// then checks that the parent is the image the child was made from, through
    /// [`DiskImage::identity`], and decides whether it accepts a parent of that
    /// [`DiskImage::format`]; a refusal names both formats and, like every open error,
    /// changes nothing.
    fn open(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Box<dyn DiskImage>>;

    /// Creates a new image in an empty file.
    fn create(&self, file: Box<dyn HostFile>, spec: &CreateSpec) -> Result<Box<dyn DiskImage>> {
        let _ = (file, spec);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("creating {} images is not supported", self.id()),
        ))
    }

    /// Checks an image, collecting every structural problem found: [`FormatDriver::check_with`]
    /// with read-only default options (no registry: a parent is detected with this driver
    /// alone).
    fn check(&self, file: Box<dyn HostFile>) -> Result<CheckReport> {
        self.check_with(file, &OpenOptions::read_only())
    }

    /// Checks an image, collecting every structural problem found; a differencing image's
    /// parent is looked for under `opts` (its policy and registry, as an open; `writable` is
    /// ignored: a check never writes). Drivers override this, not [`FormatDriver::check`].
    /// The default opens it read-only and reports the open error, or the image's own deep
    /// checks.
    fn check_with(&self, file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<CheckReport> {
        let mut opts = opts.clone();
        opts.writable = false;
        let problems = match self.open(file, &opts) {
            Ok(image) => image.check()?,
            Err(e) if e.kind() == ErrorKind::InvalidImage => {
                vec![Problem::error(e.message(), e.offset())]
            }
            Err(e) => return Err(e),
        };
        Ok(CheckReport { problems })
    }

    /// The identity [`DiskImage::image_id`] gives for the image in `file`, read from `file`
    /// alone (never opens another file, never writes): how the parent gate finds, among the
    /// files of a folder, the parent a child names by identity ([`ParentReference::id`])
    /// without opening every candidate's own chain. `Ok(None)`, the default, for formats
    /// whose children name a path; errors as [`FormatDriver::open`] for a damaged file.
    fn image_id(&self, file: &dyn HostFile) -> Result<Option<Vec<u8>>> {
        let _ = file;
        Ok(None)
    }

    /// The parent the image in `file` names, read from `file` alone: never opens, locks or
    /// looks up another file (the caller resolves the locators, if it wants to, without
    /// opening what they name). `Ok(None)` for an image that has no parent. This is how
    /// [`crate::ChildIndex`] tells whether a neighbour of an image reads through it. Errors
    /// as [`FormatDriver::open`] for a damaged file. The default answers
    /// [`ErrorKind::Unsupported`]: the caller then cannot tell, and must act as if the file
    /// might be a child.
    fn parent_reference(&self, file: Box<dyn HostFile>) -> Result<Option<ParentReference>> {
        let _ = file;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "this version cannot read which image a {} image is based on",
                self.id()
            ),
        ))
    }
}

/// What a differencing image stores about its parent, as [`FormatDriver::parent_reference`]
/// reads it, and what a driver hands to the parent gate ([`crate::parent::open_backing`]) to
/// open it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParentReference {
    /// The parent locators, in the order the format tries them (host paths come from
    /// [`crate::parent::host_candidates`]).
    pub locators: Vec<Locator>,
    /// The parent's identity, for formats that name their parent by it rather than (or as
    /// well as) by a path (VDI: the parent's UUID): the parent is the image whose
    /// [`DiskImage::image_id`] equals it.
    pub id: Option<Vec<u8>>,
}

impl ParentReference {
    /// A reference made of `locators`.
    pub fn new(locators: Vec<Locator>) -> ParentReference {
        ParentReference { locators, id: None }
    }

    /// A reference by the parent's identity alone ([`ParentReference::id`]).
    pub fn by_id(id: Vec<u8>) -> ParentReference {
        ParentReference {
            locators: Vec::new(),
            id: Some(id),
        }
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

    /// The driver whose format `file` is in, by the probes' [`Confidence`]: one
    /// [`Confidence::Yes`] wins over weaker claims, else one [`Confidence::Likely`], else the
    /// first [`Confidence::Maybe`]. Several claims at the top level, or a `Yes` next to a
    /// `Likely`, make the file ambiguous: guest data could be posing as either format, so it is
    /// refused ([`ErrorKind::InvalidImage`]) with both readings named, until the caller names
    /// the format. [`ErrorKind::InvalidImage`] too if no driver claims it.
    pub fn detect(&self, file: &dyn HostFile) -> Result<&'static dyn FormatDriver> {
        self.detect_with_confidence(file).map(|(driver, _)| driver)
    }

    /// [`Registry::detect`], with how sure the winning driver is: the parent gate opens a
    /// backing image only on a [`Confidence::Likely`] claim or better.
    pub fn detect_with_confidence(
        &self,
        file: &dyn HostFile,
    ) -> Result<(&'static dyn FormatDriver, Confidence)> {
        let mut claims: Vec<(Confidence, &'static dyn FormatDriver)> = Vec::new();
        for &driver in &self.drivers {
            let confidence = driver.probe(file)?;
            if confidence > Confidence::No {
                claims.push((confidence, driver));
            }
        }
        let Some(top) = claims.iter().map(|&(c, _)| c).max() else {
            let ids: Vec<_> = self.drivers.iter().map(|d| d.id()).collect();
            return Err(Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "not a disk image this tool knows (tried {})",
                    ids.join(", ")
                ),
            ));
        };
        if top == Confidence::Maybe {
            return Ok((claims[0].1, top));
        }
        let strong: Vec<_> = claims
            .into_iter()
            .filter(|&(c, _)| c >= Confidence::Likely)
            .collect();
        match strong.as_slice() {
            [(confidence, driver)] => Ok((*driver, *confidence)),
            _ => Err(ambiguous(&strong)),
        }
    }

    /// The driver to open `file` with: the one named by `format` (a driver id; no probing, so
    /// no fallback), or the detected one.
    pub fn driver_for(
        &self,
        file: &dyn HostFile,
        format: Option<&str>,
    ) -> Result<&'static dyn FormatDriver> {
        let Some(id) = format else {
            return self.detect(file);
        };
        self.by_id(&id.to_ascii_lowercase()).ok_or_else(|| {
            let ids: Vec<_> = self.drivers.iter().map(|d| d.id()).collect();
            Error::new(
                ErrorKind::InvalidInput,
                format!("unknown format {id:?} (formats: {})", ids.join(", ")),
            )
        })
    }

    /// Opens the image at `path`: locks the file (shared, or exclusive when writable), detects
    /// the format (or takes [`OpenOptions::format`]) and opens it. Errors carry the path.
    ///
    /// A parent named in [`ParentPolicy::explicit`] for an image that is not differencing is
    /// refused ([`ErrorKind::InvalidInput`]): it would otherwise be silently ignored.
    pub fn open_path(&self, path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        let access = if opts.writable {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let file = StdFile::open(path, access)?;
        let driver = self
            .driver_for(&file, opts.format.as_deref())
            .map_err(|e| e.with_path(path))?;
        let mut opts = opts.clone();
        if opts.registry.is_none() {
            opts.registry = Some(self.clone());
        }
        let named_by_caller = opts.chain.path.is_none();
        if named_by_caller {
            opts.chain = ChainContext::root(path);
        }
        let image = driver
            .open(Box::new(file), &opts)
            .map_err(|e| e.with_path(path))?;
        if named_by_caller
            && opts.parents.explicit.is_some()
            && image.kind() != ImageKind::Differencing
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a parent was named, but this is a {} {} image, which has no parent (only \
                     differencing images do)",
                    image.kind().as_str(),
                    image.format()
                ),
            )
            .with_path(path));
        }
        Ok(image)
    }
}

/// The error for a file several drivers claim with no winner: each reading, and how to choose.
fn ambiguous(claims: &[(Confidence, &'static dyn FormatDriver)]) -> Error {
    let readings: Vec<String> = claims
        .iter()
        .map(|&(c, d)| {
            let evidence = if c == Confidence::Yes {
                "its signature at the start of the file"
            } else {
                "a complete structure at the end of the file, where another format keeps guest data"
            };
            format!("as {} ({evidence})", d.id())
        })
        .collect();
    let choices: Vec<String> = claims
        .iter()
        .map(|&(_, d)| format!("--format {}", d.id()))
        .collect();
    Error::new(
        ErrorKind::InvalidImage,
        format!(
            "the file reads two ways, {}; either could be data a virtual machine wrote, so vdisk \
             will not guess (nothing was changed); name the format with {}",
            readings.join(" and "),
            choices.join(" or ")
        ),
    )
}
