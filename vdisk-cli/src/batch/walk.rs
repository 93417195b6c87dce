//! Which files a batch compacts: the files named, and with `--recursive` the images below the
//! folders named, chosen by `--include`/`--exclude` globs (`globset`, the matcher ripgrep
//! uses). Symbolic links below a folder are never followed, to files or to folders: a link
//! could lead out of the tree, or back into it so that a file is compacted twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The default `--include`: the file extensions of every format this build supports
/// ([`crate::registry::supported`]), matched case-insensitively as on Windows shares. A format
/// added to the registry is picked up here with no other change.
pub fn default_include() -> Vec<String> {
    let registry = crate::registry::supported();
    let mut globs: Vec<String> = registry
        .drivers()
        .iter()
        .flat_map(|d| d.extensions().iter().map(|e| format!("*.{e}")))
        .collect();
    globs.dedup();
    globs
}

/// The globs that choose files.
#[derive(Debug)]
pub struct Selection {
    include: Matcher,
    exclude: Matcher,
}

/// Globs split by what they are matched against.
#[derive(Debug)]
struct Matcher {
    /// Globs without "/": matched against the file (or folder) name.
    names: GlobSet,
    /// Globs with "/": matched against the path below the folder named.
    paths: GlobSet,
}

impl Matcher {
    fn new(globs: &[String]) -> Result<Matcher, String> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for g in globs {
            let glob = glob(g)?;
            if g.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("bad glob: {e}"));
        Ok(Matcher {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    fn matches(&self, name: &Path, below: &Path) -> bool {
        self.names.is_match(name) || self.paths.is_match(below)
    }
}

/// One glob, case-insensitive, `*` not crossing "/".
fn glob(text: &str) -> Result<Glob, String> {
    GlobBuilder::new(text.trim_start_matches("./"))
        .case_insensitive(true)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("--include/--exclude {text:?}: {e}"))
}

impl Selection {
    /// The selection of `include` (the default if empty) minus `exclude`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection, String> {
        let include = if include.is_empty() {
            default_include()
        } else {
            include.to_vec()
        };
        Ok(Selection {
            include: Matcher::new(&include)?,
            exclude: Matcher::new(exclude)?,
        })
    }
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files to compact, in walk order (each folder's entries sorted by name), each once.
    pub files: Vec<PathBuf>,
    /// Paths that could not be walked (a folder named that does not exist, one that cannot
    /// be read), with the reason and the exit code of its kind: reported as failed.
    pub errors: Vec<(PathBuf, String, u8)>,
    /// Symbolic links that matched the selection and were not followed.
    pub links_skipped: Vec<PathBuf>,
}

/// Walks `roots`. Without `recursive`, each root is taken as a file (as plain `compact`
/// does). With it, a root that is a folder is walked (it is used even if it is itself a link:
/// it was named on purpose) and a root that is anything else is taken as a file.
pub fn walk(roots: &[PathBuf], recursive: bool, selection: &Selection) -> Walk {
    let mut w = Walk::default();
    let mut seen = Seen::default();
    for root in roots {
        if recursive && root.is_dir() {
            walk_dir(root, root, selection, &mut seen, &mut w);
        } else if seen.first_time(root) {
            w.files.push(root.clone());
        }
    }
    w
}

fn walk_dir(root: &Path, dir: &Path, selection: &Selection, seen: &mut Seen, w: &mut Walk) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let code = crate::exit::code_for(vdisk_core::ErrorKind::of_io(&e));
            w.errors.push((
                dir.to_path_buf(),
                format!("cannot read the folder: {e}"),
                code,
            ));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = Path::new(entry.file_name().as_os_str()).to_path_buf();
        let below = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if selection.exclude.matches(&name, &below) {
            continue;
        }
        // The entry itself, not what a link points to.
        let Ok(kind) = entry.file_type() else {
            w.errors.push((
                path,
                "cannot tell what this entry is".to_string(),
                crate::exit::OTHER,
            ));
            continue;
        };
        if kind.is_symlink() {
            if selection.include.matches(&name, &below) {
                w.links_skipped.push(path);
            }
        } else if kind.is_dir() {
            walk_dir(root, &path, selection, seen, w);
        } else if kind.is_file()
            && selection.include.matches(&name, &below)
            && seen.first_time(&path)
        {
            w.files.push(path);
        }
    }
}

/// Files already listed (Unix: by device and inode; elsewhere: by the path the host resolves
/// them to, so overlapping roots and names spelt in another case count once, hard links
/// twice): two jobs would otherwise fight over one file.
#[derive(Debug, Default)]
struct Seen {
    #[cfg(unix)]
    ids: HashSet<(u64, u64)>,
    #[cfg(not(unix))]
    paths: HashSet<std::path::PathBuf>,
}

impl Seen {
    #[cfg(unix)]
    fn first_time(&mut self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(path) {
            Ok(m) => self.ids.insert((m.dev(), m.ino())),
            // The compaction reports what is wrong with it.
            Err(_) => true,
        }
    }

    #[cfg(not(unix))]
    fn first_time(&mut self, path: &Path) -> bool {
        match std::fs::canonicalize(path) {
            Ok(p) => self.paths.insert(p),
            // The compaction reports what is wrong with it.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(w: &Walk, root: &Path) -> Vec<String> {
        w.files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn default_selection_takes_every_supported_formats_images_in_any_case_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        for f in [
            "x.vhd",
            "a/Y.VHDX",
            "a/b/z.Vhd",
            "notes.txt",
            "a/disk.vhd.bak",
            "a/b/q.qcow2",
            "a/b/vm.VDI",
            "a/b/raw.img",
            "a/b/disk.vmdk",
        ] {
            fs::write(r.join(f), b"").unwrap();
        }
        let w = walk(&[r.to_path_buf()], true, &Selection::new(&[], &[]).unwrap());
        assert_eq!(
            names(&w, r),
            [
                "a/Y.VHDX",
                "a/b/q.qcow2",
                "a/b/vm.VDI",
                "a/b/z.Vhd",
                "x.vhd"
            ]
        );
    }

    #[test]
    fn excludes_prune_folders_and_path_globs_match_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("keep/snap")).unwrap();
        fs::create_dir_all(r.join("Snapshots")).unwrap();
        for f in [
            "keep/a.vhd",
            "keep/snap/b.vhd",
            "Snapshots/c.vhd",
            "keep/base.vhdx",
        ] {
            fs::write(r.join(f), b"").unwrap();
        }
        let sel = Selection::new(&[], &["snapshots".into(), "keep/snap/*".into()]).unwrap();
        let w = walk(&[r.to_path_buf()], true, &sel);
        assert_eq!(names(&w, r), ["keep/a.vhd", "keep/base.vhdx"]);
        let sel = Selection::new(&["keep/*.vhdx".into()], &[]).unwrap();
        let w = walk(&[r.to_path_buf()], true, &sel);
        assert_eq!(names(&w, r), ["keep/base.vhdx"]);
    }

    #[cfg(unix)]
    #[test]
    fn links_are_never_followed_and_a_file_named_twice_is_compacted_once() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.vhd"), b"").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/real.vhd"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
        std::os::unix::fs::symlink(r.join("d"), r.join("loop")).unwrap();
        std::os::unix::fs::symlink(r.join("d/real.vhd"), r.join("alias.vhd")).unwrap();
        fs::hard_link(r.join("d/real.vhd"), r.join("d/hard.vhd")).unwrap();
        let roots = [r.to_path_buf(), r.join("d")];
        let w = walk(&roots, true, &Selection::new(&[], &[]).unwrap());
        assert_eq!(names(&w, r), ["d/hard.vhd"]);
        assert_eq!(w.links_skipped, [r.join("alias.vhd")]);
        assert!(w.errors.is_empty(), "{:?}", w.errors);
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_it() {
        let err = Selection::new(&["[".into()], &[]).unwrap_err();
        assert!(err.contains("\"[\""), "{err}");
    }
}
