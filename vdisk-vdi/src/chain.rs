//! Differencing images: a VDI child records its parent's UUID (`uuidLinkage`) and the
//! parent's modification UUID at the time (`uuidParentModify`), and no path. The child hands
//! the UUID to core's parent gate ([`open_backing`]), which finds the one image in the child's
//! folder (or a folder the user allows) whose own UUID it is, opened following no link, and
//! opens it with whichever registered driver recognises it; `--parent` names it outright. A
//! modification UUID that differs is a warning (the parent was written since), as VirtualBox
//! treats it.

use std::path::{Path, PathBuf};

use vdisk_core::parent::{open_backing, own_format_only};
use vdisk_core::{
    Access, ChainContext, Confidence, DiskImage, Error, ErrorKind, FormatDriver, HostFile,
    OpenOptions, ParentReference, Problem, Result, StdFile,
};

use crate::format::show_uuid;
use crate::header::{inspect, probe};
use crate::image::VdiImage;

impl VdiImage {
    /// Opens and validates the image in `file` as `opts` says; a differencing image's parent
    /// is found by UUID through core's gate under `opts.parents` and opened read-only with its
    /// own parents, then checked ([`VdiImage::attach_parent`]). Never writes.
    pub fn open_with(file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<VdiImage> {
        let child = file.path().map(Path::to_path_buf);
        let mut image = Self::open_unlinked(file, opts.writable)?;
        if image.layout.kind != vdisk_core::ImageKind::Differencing {
            return Ok(image);
        }
        let link = image.header.uuid_link;
        if link == image.header.uuid_image {
            return Err(Error::invalid(
                "the image names itself as its parent",
                0x1a8,
            ));
        }
        let reference = ParentReference::by_id(link.to_vec());
        let parent = open_backing(opts, child.as_deref(), &reference, &crate::DRIVER)?;
        image.attach_parent(parent.image, Some(parent.path))?;
        Ok(image)
    }

    /// Whom the image in `file` names as its parent, read from `file` alone.
    pub(crate) fn reference(file: &dyn HostFile) -> Result<Option<ParentReference>> {
        let (header, layout) = inspect(file)?;
        Ok((layout.kind == vdisk_core::ImageKind::Differencing)
            .then(|| ParentReference::by_id(header.uuid_link.to_vec())))
    }

    /// Makes `parent` this differencing image's parent after checking that it is the image
    /// the child was made from (its UUID, [`DiskImage::identity`]); a changed modification
    /// UUID becomes a warning.
    ///
    /// A parent of another format is refused, naming both formats: VirtualBox links a VDI
    /// child to its parent by the parent's VDI header UUIDs and bases a differencing VDI only
    /// on another VDI; another format's identifiers happening to match would not make the
    /// chain one VirtualBox can read.
    pub(crate) fn attach_parent(
        &mut self,
        parent: Box<dyn DiskImage>,
        path: Option<PathBuf>,
    ) -> Result<()> {
        let shown = path
            .as_ref()
            .map_or_else(|| "the parent".to_string(), |p| p.display().to_string());
        if self.layout.kind != vdisk_core::ImageKind::Differencing {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "only differencing images have a parent",
            ));
        }
        own_format_only(&*parent, &shown, crate::DRIVER.id(), "vdi header uuids")?;
        let h = &self.header;
        let identity = parent.identity();
        let uuid = uuid_of(identity.id.as_deref());
        if uuid != h.uuid_link {
            return Err(Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "parent {shown} is not the image this differencing image was made from: its \
                     uuid is {}, the child expects {}",
                    show_uuid(&uuid),
                    show_uuid(&h.uuid_link)
                ),
            ));
        }
        let modify = uuid_of(identity.version.as_deref());
        if modify != h.uuid_parent_modify {
            self.notes.push(Problem::warning(
                format!(
                    "parent {shown} has modification uuid {}, but the child recorded {}: the \
                     parent was written since the child was made",
                    show_uuid(&modify),
                    show_uuid(&h.uuid_parent_modify)
                ),
                Some(0x1b8),
            ));
        }
        if parent.size() < self.layout.disk_size {
            self.notes.push(Problem::warning(
                format!(
                    "parent {shown} is {} bytes, smaller than the child's {}; the rest reads as \
                     zeros",
                    parent.size(),
                    self.layout.disk_size
                ),
                None,
            ));
        }
        self.parent = Some(parent);
        self.parent_path = path;
        Ok(())
    }
}

/// A UUID as an identity holds it; all zeros (never a VDI's) when absent or not 16 bytes.
fn uuid_of(bytes: Option<&[u8]>) -> [u8; 16] {
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .unwrap_or_default()
}

/// The UUID of the VDI in `file`, read from it alone; `None` unless it is recognised from
/// bytes the format owns (its signature at offset 0).
pub(crate) fn image_id(file: &dyn HostFile) -> Result<Option<Vec<u8>>> {
    if probe(file)? != Confidence::Yes {
        return Ok(None);
    }
    Ok(Some(inspect(file)?.0.uuid_image.to_vec()))
}

/// Opens the parent named by `path` for creating a child over it; its own parents may come
/// from `parent_dirs` besides their children's folders.
pub(crate) fn open_for_create(path: &Path, parent_dirs: &[PathBuf]) -> Result<VdiImage> {
    let file = StdFile::open(path, Access::ReadOnly)?;
    let opts = OpenOptions::read_only().with_parents(vdisk_core::ParentPolicy {
        explicit: None,
        allowed_dirs: parent_dirs.to_vec(),
    });
    if probe(&file)? != Confidence::Yes {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            "the parent of a differencing vdi must be a vdi image, and this file is not one",
        )
        .with_path(path));
    }
    VdiImage::open_with(Box::new(file), &opts.for_parent(ChainContext::root(path)))
        .map_err(|e| e.with_path(path))
}
