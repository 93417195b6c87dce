//! Which differencing images sit on an image: the images in its folder whose parent resolves
//! to it. Compacting a parent must never change what its children read (DESIGN.md section 3),
//! so file-system-aware reclaim, which may change reads, asks here first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vdisk_core::{OpenOptions, Registry};

/// The parent links of the images in each folder looked at, so compacting many images in one
/// folder opens each image there once per run, not once per image compacted.
#[derive(Debug, Default)]
pub struct ChildIndex {
    /// Folder (canonical) → (child path, its parent's canonical path).
    folders: HashMap<PathBuf, Vec<(PathBuf, PathBuf)>>,
}

impl ChildIndex {
    /// The images in `image_path`'s folder whose parent, found the way `vdisk info` finds it,
    /// is `image_path` (compared after resolving symbolic links). Each candidate is opened
    /// read-only with its parent chain; files that fail to open (not images, damaged, locked,
    /// or with a missing parent) are ignored. Sorted by path.
    ///
    /// Call it before opening `image_path` for writing: a child's open takes a shared lock on
    /// its parent, which an exclusive writer (the compaction itself) would refuse, and such a
    /// child would be missed.
    pub fn children_of(&mut self, image_path: &Path, registry: &Registry) -> Vec<PathBuf> {
        let Ok(target) = image_path.canonicalize() else {
            return Vec::new();
        };
        let Some(dir) = target.parent() else {
            return Vec::new();
        };
        let links = self
            .folders
            .entry(dir.to_path_buf())
            .or_insert_with(|| parent_links(dir, registry));
        let mut out: Vec<PathBuf> = links
            .iter()
            .filter(|(child, parent)| {
                *parent == target && child.canonicalize().ok() != Some(target.clone())
            })
            .map(|(child, _)| child.clone())
            .collect();
        out.sort();
        out
    }
}

/// (image, canonical parent path) for every differencing image in `dir` that opens.
fn parent_links(dir: &Path, registry: &Registry) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.path())
        .filter_map(|p| {
            let parent = registry
                .open_path(&p, &OpenOptions::read_only())
                .ok()?
                .parent_path()?
                .canonicalize()
                .ok()?;
            Some((p, parent))
        })
        .collect()
}

/// [`ChildIndex::children_of`] without a cache, for one image.
#[cfg(test)]
pub fn children_of(image_path: &Path, registry: &Registry) -> Vec<PathBuf> {
    ChildIndex::default().children_of(image_path, registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::{CreateSpec, FormatDriver, ImageKind, StdFile};

    fn create(path: &Path, spec: &CreateSpec) {
        let file = StdFile::create_new(path).unwrap();
        vdisk_vhd::DRIVER.create(Box::new(file), spec).unwrap();
    }

    #[test]
    fn children_are_the_images_whose_parent_resolves_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = d.join("base.vhd");
        create(&base, &CreateSpec::new(ImageKind::Dynamic, 1 << 20));
        let other = d.join("other.vhd");
        create(&other, &CreateSpec::new(ImageKind::Dynamic, 1 << 20));
        let (c1, c2, g) = (d.join("c1.vhd"), d.join("c2.vhd"), d.join("g.vhd"));
        create(&c1, &CreateSpec::differencing(&base, &c1));
        create(&c2, &CreateSpec::differencing(&base, &c2));
        create(&g, &CreateSpec::differencing(&c1, &g));
        std::fs::write(d.join("notes.txt"), b"not an image").unwrap();
        let registry = crate::registry::registry();
        assert_eq!(children_of(&base, &registry), vec![c1.clone(), c2]);
        assert_eq!(children_of(&c1, &registry), vec![g.clone()]);
        assert!(children_of(&other, &registry).is_empty());
        assert!(children_of(&g, &registry).is_empty());
        assert!(children_of(&d.join("missing.vhd"), &registry).is_empty());
    }
}
