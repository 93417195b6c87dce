//! Backing files: a qcow2 names its backing file by path (relative to its own folder, or
//! absolute) and optionally its format (the backing-format extension). The path goes to
//! core's parent gate ([`open_backing`]), which applies the user's policy and opens it with
//! whichever registered driver recognises it: a qcow2 may sit on a VHD, VHDX, VDI or qcow2.
//! qcow2 records no identity of its backing image, so only the format named (when named) and
//! the sizes are checked.

use std::path::Path;

use vdisk_core::parent::open_backing;
use vdisk_core::{
    Error, ErrorKind, HostFile, Locator, LocatorKind, OpenOptions, ParentReference, Problem, Result,
};

use crate::header::inspect;
use crate::image::Qcow2Image;

/// The reference a backing file name makes: one host path, relative to the image's folder or
/// absolute (a POSIX path, which core's `Mac` locator kind resolves: relative from the child's
/// folder; absolute as a sibling of the child, then as written).
pub(crate) fn reference(name: &str) -> ParentReference {
    ParentReference::new(vec![Locator {
        kind: LocatorKind::Mac,
        label: "backing file",
        path: name.to_string(),
    }])
}

/// The backing formats (qemu's names) vdisk reads, and so the ones a child vdisk creates may
/// name.
pub(crate) const BACKING_FORMATS: &[&str] = &["qcow2", "vpc", "vhdx", "vdi"];

/// qemu's name of a vdisk format id, as the backing-format extension writes it.
pub(crate) fn qemu_format_name(id: &str) -> &str {
    match id {
        "vhd" => "vpc",
        other => other,
    }
}

impl Qcow2Image {
    /// Opens the image and, if it names one, its backing file through core's gate.
    pub fn open_with(file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<Qcow2Image> {
        let child = file.path().map(Path::to_path_buf);
        let mut image = Self::open_unlinked(file, opts.writable)?;
        let Some(name) = image.layout.backing.clone() else {
            return Ok(image);
        };
        // "json:{...}", "nbd://..." are qemu protocol strings, not paths.
        if name.starts_with("json:") || name.contains("://") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the backing file {name:?} is a qemu protocol name, not a file path"),
            ));
        }
        if let Some(fmt) = image.layout.backing_format()
            && !BACKING_FORMATS.contains(&fmt.as_str())
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the backing file {name:?} is a {fmt} image, a format vdisk does not read \
                     (qcow2, vpc, vhdx and vdi backing files are supported)"
                ),
            ));
        }
        let backing = open_backing(opts, child.as_deref(), &reference(&name), &crate::DRIVER)?;
        let shown = backing.path.display().to_string();
        if let Some(fmt) = image.layout.backing_format() {
            let actual = qemu_format_name(backing.image.format());
            if fmt != actual {
                return Err(Error::new(
                    ErrorKind::InvalidImage,
                    format!(
                        "the image says its backing file {shown} is {fmt}, but it is a {} image; \
                         nothing was changed",
                        backing.image.format()
                    ),
                ));
            }
        }
        if backing.image.size() < image.layout.size {
            image.notes.push(Problem::warning(
                format!(
                    "backing file {shown} is {} bytes, smaller than the image's {}; the rest \
                     reads as zeros",
                    backing.image.size(),
                    image.layout.size
                ),
                None,
            ));
        }
        image.parent = Some(backing.image);
        image.parent_path = Some(backing.path);
        Ok(image)
    }
}

/// The backing file the image in `file` names, read from `file` alone.
pub(crate) fn parent_reference(file: &dyn HostFile) -> Result<Option<ParentReference>> {
    let (_, layout) = inspect(file)?;
    Ok(layout.backing.as_deref().map(reference))
}
