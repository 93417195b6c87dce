//! The parent gate: the one way a driver opens the backing image its differencing image names.
//!
//! ```text
//!   child driver ── ParentReference (locators and/or identity) + OpenOptions ──► open_backing
//!     policy:  find_parent (locators) or find_parent_by_id (identity)   [folders, links,
//!              cycles, depth, --parent: the rules of the module above]
//!     format:  the registry of the top-level open detects the candidate (Likely or better)
//!     open:    that driver, read-only, with the same policy and registry (its own parents
//!              come through this gate too)
//!   ◄── Backing { image: Box<dyn DiskImage>, path }
//!   child driver: checks the linkage through DiskImage::identity, accepts or refuses the
//!                 parent's format (its decision; core names no format)
//! ```

use std::path::{Path, PathBuf};

use super::{ChainContext, find_parent, find_parent_by_id};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Confidence, CreateSpec, FormatDriver, OpenOptions, ParentReference, Registry};
use crate::host_file::{Access, HostFile, StdFile};
use crate::image::DiskImage;

/// What a differencing child may record about its parent to know it again, as the parent's
/// format stores it ([`DiskImage::identity`]). Which field a child compares, and whether a
/// difference refuses the open or only warns, is the child driver's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// An identifier the image keeps for its whole life, compaction included (VHD: the
    /// footer's unique id; VDI: the image UUID). `None` if the format has none.
    pub id: Option<Vec<u8>>,
    /// A value the format changes when what the image reads may have changed, or stamps it
    /// with (VHDX: the DataWriteGuid; VDI: the modification UUID; VHD: the footer time stamp,
    /// big-endian). Moving blocks never changes it. `None` if the format has none.
    pub version: Option<Vec<u8>>,
}

impl Identity {
    /// An identity of `id` and `version` (see the fields).
    pub fn new(id: Option<Vec<u8>>, version: Option<Vec<u8>>) -> Identity {
        Identity { id, version }
    }
}

/// A backing image opened through the gate.
#[derive(Debug)]
pub struct Backing {
    /// The parent, opened read-only with its own parents, by whichever registered driver
    /// recognised it.
    pub image: Box<dyn DiskImage>,
    /// The canonical path it was opened at.
    pub path: PathBuf,
}

/// Opens the backing image that a differencing image names in `reference`, under the user's
/// policy in `opts`. `child` is the path of the child's file (used to start a chain when
/// `opts.chain` has none); `asking` is the driver of the child, the only format known when
/// `opts.registry` is `None` (a library caller opening with one driver directly).
///
/// The candidate is found by [`find_parent`] from the reference's locators or, when it has
/// none and names an identity, by [`find_parent_by_id`] among the files with an extension of
/// a registered format, the one whose driver reads that identity from it
/// ([`FormatDriver::image_id`]); every rule of those searches holds (allowed folders, links,
/// two matches refused, cycles, depth, `--parent`). Its format is then detected with the
/// registry: only a claim of [`Confidence::Likely`] or better opens it (a parent is
/// recognised from bytes its format owns, never from a structure a guest could have written
/// or a damaged one). It is opened read-only, with the same policy and registry, so its own
/// parents pass this gate too.
///
/// What the gate does not decide: whether the parent is the image the child was made from
/// (identity, time stamps, sizes) and whether a parent of another format is acceptable. The
/// child driver checks both on the returned image, through [`DiskImage::identity`] and
/// [`DiskImage::format`].
///
/// Errors: as [`find_parent`] and [`find_parent_by_id`]; [`ErrorKind::InvalidImage`] naming
/// the path for a candidate no registered driver recognises (or only as a damaged image);
/// the parent driver's own open errors, with the path. Never writes to any file.
pub fn open_backing(
    opts: &OpenOptions,
    child: Option<&Path>,
    reference: &ParentReference,
    asking: &'static dyn FormatDriver,
) -> Result<Backing> {
    let chain = match (&opts.chain.path, child) {
        (None, Some(path)) => ChainContext::root(path),
        _ => opts.chain.clone(),
    };
    let registry = opts
        .registry
        .clone()
        .unwrap_or_else(|| Registry::new(&[asking]));
    let found = match (&reference.id, reference.locators.is_empty()) {
        (Some(id), true) => {
            let mut extensions: Vec<&str> = Vec::new();
            for ext in registry.drivers().iter().flat_map(|d| d.extensions()) {
                if !extensions.contains(ext) {
                    extensions.push(ext);
                }
            }
            let is_parent = |file: &crate::host_file::StdFile| has_id(&registry, file, id);
            find_parent_by_id(&chain, &opts.parents, &extensions, &is_parent)?
        }
        _ => find_parent(&chain, &opts.parents, &reference.locators)?,
    };
    let path = found.path;
    let driver = recognise(&registry, &found.file).map_err(|e| e.with_path(&path))?;
    let image = driver
        .open(Box::new(found.file), &opts.for_parent(found.chain))
        .map_err(|e| e.with_path(&path))?;
    Ok(Backing { image, path })
}

/// Opens the image the user named as the parent of a new differencing image
/// ([`CreateSpec::parent`]), read-only, by whichever driver of [`CreateSpec::registry`]
/// recognises it (`asking` alone when it is `None`), from bytes its format owns
/// ([`Confidence::Likely`] or better, as [`open_backing`]). Its own parents are opened through
/// the gate, from their children's folders and [`CreateSpec::parent_dirs`], with the same
/// registry. The caller decides whether it accepts a parent of that [`DiskImage::format`].
///
/// Errors: [`ErrorKind::InvalidInput`] when the spec names no parent; the file's open error;
/// [`ErrorKind::InvalidImage`] naming the path for a file no registered driver recognises;
/// the parent driver's own open errors, with the path. Never writes to any file.
pub fn open_named_parent(spec: &CreateSpec, asking: &'static dyn FormatDriver) -> Result<Backing> {
    let path = spec.parent.as_deref().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "a differencing image needs its parent image to be named",
        )
    })?;
    let file = StdFile::open(path, Access::ReadOnly)?;
    let registry = spec
        .registry
        .clone()
        .unwrap_or_else(|| Registry::new(&[asking]));
    let driver = recognise(&registry, &file).map_err(|e| e.with_path(path))?;
    let mut opts = OpenOptions::read_only().with_registry(registry);
    opts.parents.allowed_dirs.clone_from(&spec.parent_dirs);
    let image = driver
        .open(Box::new(file), &opts.for_parent(ChainContext::root(path)))
        .map_err(|e| e.with_path(path))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Backing { image, path })
}

/// For a child driver whose format links a child only to a parent of its own format (the
/// decision is the driver's; it calls this with its own id): `Ok` if `parent` is an `own`
/// image, else [`ErrorKind::InvalidImage`] naming both formats and `link`, the fields by which
/// the child names its parent. `shown` is the parent as messages name it.
pub fn own_format_only(parent: &dyn DiskImage, shown: &str, own: &str, link: &str) -> Result<()> {
    if parent.format() == own {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidImage,
        format!(
            "parent {shown} is a {} image, but a differencing {own} can only be based on a {own} \
             image (it names its parent by {link}); nothing was changed",
            parent.format()
        ),
    ))
}

/// The driver that recognises the parent in `file` from bytes its format owns.
fn recognise(registry: &Registry, file: &dyn HostFile) -> Result<&'static dyn FormatDriver> {
    let (driver, confidence) = registry.detect_with_confidence(file).map_err(|e| {
        Error::new(
            e.kind(),
            format!("the parent image is not usable: {}", e.message()),
        )
    })?;
    if confidence < Confidence::Likely {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!(
                "the parent image is not recognisably one this tool can open: at best a damaged \
                 or unsupported {} image (no signature and structure of it that hold up), so it \
                 was not opened",
                driver.id()
            ),
        ));
    }
    Ok(driver)
}

/// Whether `file` is an image, recognised from bytes its format owns, whose identity is `id`.
fn has_id(registry: &Registry, file: &dyn HostFile, id: &[u8]) -> Result<bool> {
    let driver = match registry.detect_with_confidence(file) {
        Ok((driver, confidence)) if confidence >= Confidence::Likely => driver,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == ErrorKind::InvalidImage => return Ok(false),
        Err(e) => return Err(e),
    };
    match driver.image_id(file) {
        Ok(found) => Ok(found.as_deref() == Some(id)),
        Err(e) if e.kind() == ErrorKind::InvalidImage => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
