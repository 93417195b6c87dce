//! Which differencing images read through an image: its children. Compacting a parent must
//! never change what its children read (DESIGN.md section 3), so file-system-aware reclaim,
//! which may change reads, asks here first ([`crate::compact_path`] does).
//!
//! Where children are looked for: the folder the image was named in and the folder it really
//! lives in (after symbolic links), nowhere else. What is looked at, and how:
//! - Regular files only (`lstat`). Each is opened read-only, never through a symbolic link,
//!   never blocking, and its shared lock is tried once: nothing waits
//!   ([`StdFile::open_regular_no_wait`]). Only its own header is read (format detection, then
//!   [`FormatDriver::parent_reference`]). Its parent locators become host paths
//!   ([`host_candidates`]), which are compared with the image by device and inode (`stat`):
//!   the files they name are never opened, and the candidate's own chain is never followed.
//!   A parent named by identity ([`ParentReference::id`], VDI's UUID) is compared with the
//!   image's own identity ([`ChildIndex::children_of_id`]); where that is not known, such a
//!   file counts as "could not tell".
//! - FIFOs, devices, sockets and folders are never opened.
//! - Symbolic links are never followed to open anything. A link to a regular file in the same
//!   folder is that file, looked at under its own name. A link to a regular file elsewhere
//!   might be a child reached through the link (its relative locators then resolve from this
//!   folder); looking would mean leaving the folder, so it counts as "could not tell". Links
//!   to anything else (folders, devices, nothing) are passed over: vdisk opens no image there.
//! - A file that cannot be read (in use by a writer, permission denied, a damaged image, a
//!   format whose parent reference this build cannot read) counts as "could not tell".
//!
//! Callers must treat "could not tell" like a child: it might be one.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};
use crate::format::{ParentReference, Registry};
use crate::host_file::StdFile;
use crate::parent::host_candidates;

/// The result of [`ChildIndex::children_of`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Children {
    /// Differencing images whose parent locators name the image, sorted.
    pub children: Vec<PathBuf>,
    /// Files that might be children but could not be looked at, sorted by path.
    pub undetermined: Vec<Undetermined>,
}

impl Children {
    /// True if no file is, or might be, a child.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.undetermined.is_empty()
    }
}

/// A file that might read through the image, and why it could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undetermined {
    /// The file, as found in the folder.
    pub path: PathBuf,
    /// Why it could not be told, lowercase ("in use by another program").
    pub reason: String,
}

/// Remembers what each file in the folders looked at said about its parent, so compacting
/// many images in one folder reads each neighbour's header once per change, not once per
/// image compacted. An entry is reused only while the file's device, inode, size, change and
/// modification times are the same; files that could not be told are looked at again.
///
/// It also knows the images this program is compacting right now ([`ChildIndex::begin_own`]):
/// their exclusive lock keeps every other open out, this program's own looks included, so
/// without this a batch compacting two images of one folder at once could not tell whether
/// either reads through the other and would withhold file-system free space from both (and a
/// second run would reclaim it). What an image says about its parent is read before its
/// compaction locks it, and compaction never changes it.
#[derive(Debug, Default)]
pub struct ChildIndex {
    seen: HashMap<PathBuf, (Stamp, Option<ParentReference>)>,
    /// Images being compacted by this program: how many compactions, and what each says about
    /// its parent (`None`: it has none).
    own: HashMap<FileId, (usize, Option<ParentReference>)>,
}

/// An image this program is compacting, from [`ChildIndex::begin_own`] until
/// [`ChildIndex::end_own`].
#[derive(Debug)]
pub struct OwnCompaction(FileId);

/// Identity of a file on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg(not(unix))]
    Path(PathBuf),
}

#[cfg(unix)]
fn file_id(meta: &Metadata, _path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId::Inode(meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &Metadata, path: &Path) -> Option<FileId> {
    path.canonicalize().ok().map(FileId::Path)
}

/// What must stay the same for a remembered answer to stand.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    id: Option<FileId>,
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: i128,
}

fn stamp(meta: &Metadata, path: &Path) -> Stamp {
    #[cfg(unix)]
    let changed = {
        use std::os::unix::fs::MetadataExt;
        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let changed = 0;
    Stamp {
        id: file_id(meta, path),
        len: meta.len(),
        modified: meta.modified().ok(),
        changed,
    }
}

/// What one regular file says about its parent.
enum Look {
    /// Not a differencing image (not an image, or one without a parent).
    Parentless,
    /// A differencing image naming its parent so.
    Child(ParentReference),
    /// Could not be told.
    Unknown(String),
}

impl ChildIndex {
    /// Before this program opens `image` for compaction: reads (shared lock, no waiting) what
    /// it says about its parent and remembers it for the neighbours' checks until
    /// [`ChildIndex::end_own`]. `None` if it cannot be read now (the compaction's own open
    /// then says why, or finds it in use); its neighbours then cannot tell, as before.
    pub fn begin_own(&mut self, image: &Path, registry: &Registry) -> Option<OwnCompaction> {
        let id = std::fs::symlink_metadata(image)
            .ok()
            .filter(Metadata::is_file)
            .and_then(|m| file_id(&m, image))?;
        let reference = match look(image, registry) {
            Look::Parentless => None,
            Look::Child(reference) => Some(reference),
            Look::Unknown(_) => return None,
        };
        self.own.entry(id.clone()).or_insert((0, reference)).0 += 1;
        Some(OwnCompaction(id))
    }

    /// After the compaction `own` is done (the image closed).
    pub fn end_own(&mut self, own: OwnCompaction) {
        if let Some(entry) = self.own.get_mut(&own.0) {
            entry.0 -= 1;
            if entry.0 == 0 {
                self.own.remove(&own.0);
            }
        }
    }

    /// The images that read through `image` (see the module documentation for where and how
    /// they are looked for), and the files that might but could not be told. Empty if `image`
    /// does not exist. Never opens `image` itself, so it may be called while `image` is open
    /// for writing.
    pub fn children_of(&mut self, image: &Path, registry: &Registry) -> Children {
        self.children_of_id(image, None, registry)
    }

    /// [`ChildIndex::children_of`] for an image whose identity (`id`,
    /// [`crate::DiskImage::image_id`]) is known: a neighbour that names its parent by identity
    /// is a child if the identities are equal. With `id` unknown, such a neighbour counts as
    /// "could not tell".
    pub fn children_of_id(
        &mut self,
        image: &Path,
        id: Option<&[u8]>,
        registry: &Registry,
    ) -> Children {
        let mut out = Children::default();
        let Some(target) = std::fs::metadata(image)
            .ok()
            .and_then(|m| file_id(&m, image))
        else {
            return out;
        };
        let named = match image.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs = vec![named];
        if let Some(real) = image
            .canonicalize()
            .ok()
            .and_then(|c| c.parent().map(Path::to_path_buf))
        {
            dirs.push(real);
        }
        let mut dir_ids: Vec<FileId> = Vec::new();
        dirs.retain(|d| {
            let id = std::fs::metadata(d).ok().and_then(|m| file_id(&m, d));
            match id {
                Some(id) if dir_ids.contains(&id) => false,
                Some(id) => {
                    dir_ids.push(id);
                    true
                }
                None => true,
            }
        });
        let mut found: Vec<FileId> = Vec::new();
        for dir in &dirs {
            let target = (&target, id);
            self.look_in(dir, target, &dir_ids, registry, &mut found, &mut out);
        }
        out.children.sort();
        out.undetermined.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn look_in(
        &mut self,
        dir: &Path,
        (target, target_id): (&FileId, Option<&[u8]>),
        dir_ids: &[FileId],
        registry: &Registry,
        found: &mut Vec<FileId>,
        out: &mut Children,
    ) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                out.undetermined.push(Undetermined {
                    path: dir.to_path_buf(),
                    reason: format!("cannot list the folder: {e}"),
                });
                return;
            }
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                if let Some(reason) = link_leaves_folder(&path, target, dir_ids) {
                    out.undetermined.push(Undetermined { path, reason });
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let id = file_id(&meta, &path);
            if id.as_ref() == Some(target) || id.as_ref().is_some_and(|i| found.contains(i)) {
                continue;
            }
            let stamp = stamp(&meta, &path);
            let own = id.as_ref().and_then(|i| self.own.get(i)).map(|(_, r)| r);
            let cached = self
                .seen
                .get(&path)
                .filter(|(s, _)| *s == stamp)
                .map(|(_, r)| r);
            let reference = match own.or(cached) {
                Some(Some(reference)) => reference.clone(),
                Some(None) => continue,
                None => match look(&path, registry) {
                    Look::Parentless => {
                        self.seen.insert(path, (stamp, None));
                        continue;
                    }
                    Look::Child(reference) => {
                        self.seen
                            .insert(path.clone(), (stamp, Some(reference.clone())));
                        reference
                    }
                    Look::Unknown(reason) => {
                        out.undetermined.push(Undetermined { path, reason });
                        continue;
                    }
                },
            };
            let names_id = match (&reference.id, target_id) {
                (Some(theirs), Some(ours)) => theirs.as_slice() == ours,
                (Some(_), None) => {
                    out.undetermined.push(Undetermined {
                        path,
                        reason: "names its parent by an identity this image's format does not \
                                 record, so it cannot be told"
                            .to_string(),
                    });
                    continue;
                }
                (None, _) => false,
            };
            let names_target = names_id
                || reference.locators.iter().any(|l| {
                    host_candidates(l, dir).iter().any(|c| {
                        std::fs::metadata(c)
                            .ok()
                            .and_then(|m| file_id(&m, c))
                            .is_some_and(|c| c == *target)
                    })
                });
            if names_target {
                found.extend(id);
                out.children.push(path);
            }
        }
    }
}

/// For a symbolic link in a folder looked at: `Some(reason)` if it names a regular file in
/// another folder (it might be a child reached through the link, and is not followed).
fn link_leaves_folder(link: &Path, target: &FileId, dir_ids: &[FileId]) -> Option<String> {
    let meta = std::fs::metadata(link).ok().filter(Metadata::is_file)?;
    if file_id(&meta, link).as_ref() == Some(target) {
        return None;
    }
    let real_dir = link.canonicalize().ok()?.parent()?.to_path_buf();
    let same_folder = std::fs::metadata(&real_dir)
        .ok()
        .and_then(|m| file_id(&m, &real_dir))
        .is_some_and(|id| dir_ids.contains(&id));
    (!same_folder).then(|| {
        "a symbolic link to a file in another folder (not followed, so not looked at)".to_string()
    })
}

/// Reads what the regular file at `path` says about its parent, without waiting or opening
/// anything else.
fn look(path: &Path, registry: &Registry) -> Look {
    let file = match StdFile::open_regular_no_wait(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::InUse => {
            return Look::Unknown("in use by another program, so not read".to_string());
        }
        Err(e) => return Look::Unknown(describe(&e)),
    };
    let driver = match registry.detect(&file) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::InvalidImage => return Look::Parentless,
        Err(e) => return Look::Unknown(describe(&e)),
    };
    match driver.parent_reference(Box::new(file)) {
        Ok(None) => Look::Parentless,
        Ok(Some(r)) => Look::Child(r),
        Err(e) => Look::Unknown(format!("{} image: {}", driver.id(), describe(&e))),
    }
}

/// The message of `e` and its first cause, without the path.
fn describe(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{}: {cause}", e.message()),
        None => e.message().to_string(),
    }
}
