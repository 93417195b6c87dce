//! Differencing images: a VDI child records its parent's UUID (`uuidLinkage`) and the
//! parent's modification UUID at the time (`uuidParentModify`), and no path. The parent is
//! found by core's identity search ([`find_parent_by_id`]): the one `.vdi` file in the child's
//! folder (or a folder the user allows) whose own UUID is the child's link, opened following
//! no link; `--parent` names it outright. A modification UUID that differs is a warning (the
//! parent was written since), as VirtualBox treats it.

use std::path::{Path, PathBuf};

use vdisk_core::parent::find_parent_by_id;
use vdisk_core::{
    Access, BlockDevice, ChainContext, Confidence, Error, ErrorKind, HostFile, OpenOptions,
    ParentReference, Problem, Result, StdFile,
};

use crate::format::show_uuid;
use crate::header::{inspect, probe};
use crate::image::VdiImage;

impl VdiImage {
    /// Opens and validates the image in `file` as `opts` says; a differencing image's parent
    /// is found by UUID under `opts.parents` and opened read-only with its own parents. Never
    /// writes.
    pub fn open_with(file: Box<dyn HostFile>, opts: &OpenOptions) -> Result<VdiImage> {
        let chain = match (&opts.chain.path, file.path()) {
            (None, Some(p)) => ChainContext::root(p),
            _ => opts.chain.clone(),
        };
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
        let found = find_parent_by_id(&chain, &opts.parents, &["vdi"], &|f| is_image(f, &link))?;
        let path = found.path.clone();
        let parent = open_parent(found.file, &opts.for_parent(found.chain))
            .map_err(|e| e.with_path(&path))?;
        image.attach_parent(parent, Some(path))?;
        Ok(image)
    }

    /// Whom the image in `file` names as its parent, read from `file` alone.
    pub(crate) fn reference(file: &dyn HostFile) -> Result<Option<ParentReference>> {
        let (header, layout) = inspect(file)?;
        Ok((layout.kind == vdisk_core::ImageKind::Differencing)
            .then(|| ParentReference::by_id(header.uuid_link.to_vec())))
    }

    /// Makes `parent` this differencing image's parent after checking that it is the image
    /// the child was made from (its UUID); a changed modification UUID becomes a warning.
    pub(crate) fn attach_parent(&mut self, parent: VdiImage, path: Option<PathBuf>) -> Result<()> {
        let shown = path
            .as_ref()
            .map_or_else(|| "the parent".to_string(), |p| p.display().to_string());
        if self.layout.kind != vdisk_core::ImageKind::Differencing {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "only differencing images have a parent",
            ));
        }
        let h = &self.header;
        if parent.header.uuid_image != h.uuid_link {
            return Err(Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "parent {shown} is not the image this differencing image was made from: its \
                     uuid is {}, the child expects {}",
                    show_uuid(&parent.header.uuid_image),
                    show_uuid(&h.uuid_link)
                ),
            ));
        }
        if parent.header.uuid_modify != h.uuid_parent_modify {
            self.notes.push(Problem::warning(
                format!(
                    "parent {shown} has modification uuid {}, but the child recorded {}: the \
                     parent was written since the child was made",
                    show_uuid(&parent.header.uuid_modify),
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
        self.parent = Some(Box::new(parent));
        self.parent_path = path;
        Ok(())
    }
}

/// Whether `file` is a VDI whose UUID is `uuid`: recognised from bytes the format owns only.
fn is_image(file: &dyn HostFile, uuid: &[u8; 16]) -> Result<bool> {
    if probe(file)? != Confidence::Yes {
        return Ok(false);
    }
    match inspect(file) {
        Ok((header, _)) => Ok(header.uuid_image == *uuid),
        Err(e) if e.kind() == ErrorKind::InvalidImage => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens a found parent as a VDI (recognised by its own signature at offset 0).
fn open_parent(file: StdFile, opts: &OpenOptions) -> Result<VdiImage> {
    if probe(&file)? != Confidence::Yes {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            "the parent of a differencing vdi must be a vdi image, and this file is not one",
        ));
    }
    VdiImage::open_with(Box::new(file), opts)
}

/// Opens the parent named by `path` for creating a child over it; its own parents may come
/// from `parent_dirs` besides their children's folders.
pub(crate) fn open_for_create(path: &Path, parent_dirs: &[PathBuf]) -> Result<VdiImage> {
    let file = StdFile::open(path, Access::ReadOnly)?;
    let opts = OpenOptions::read_only().with_parents(vdisk_core::ParentPolicy {
        explicit: None,
        allowed_dirs: parent_dirs.to_vec(),
    });
    open_parent(file, &opts.for_parent(ChainContext::root(path))).map_err(|e| e.with_path(path))
}
