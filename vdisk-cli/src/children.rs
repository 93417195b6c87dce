//! Which differencing images sit on an image: the images in its folder whose parent resolves
//! to it. Compacting a parent must never change what its children read (DESIGN.md section 3),
//! so file-system-aware reclaim, which may change reads, asks here first.

use std::path::{Path, PathBuf};

use vdisk_core::{OpenOptions, Registry};

/// The images in `image_path`'s folder whose parent, found the way `vdisk info` finds it,
/// is `image_path` (compared after resolving symbolic links). Each candidate is opened
/// read-only with its parent chain; files that fail to open (not images, damaged, locked, or
/// with a missing parent) are ignored. Sorted by path.
///
/// Call it before opening `image_path` for writing: a child's open takes a shared lock on its
/// parent, which an exclusive writer (the compaction itself) would refuse, and such a child
/// would be missed.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "compact wires it in with file-system-aware reclaim (refuse a parent with children unless --force)"
    )
)]
pub fn children_of(image_path: &Path, registry: &Registry) -> Vec<PathBuf> {
    let Ok(target) = image_path.canonicalize() else {
        return Vec::new();
    };
    let Some(dir) = target.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.path())
        .filter(|p| p.canonicalize().is_ok_and(|c| c != target))
        .filter(|p| {
            registry
                .open_path(p, &OpenOptions::read_only())
                .ok()
                .and_then(|img| img.parent_path().and_then(|pp| pp.canonicalize().ok()))
                .is_some_and(|pp| pp == target)
        })
        .collect();
    out.sort();
    out
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
