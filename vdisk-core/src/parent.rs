//! Finding the parent of a differencing image: locators, host path mapping, and the policy
//! that decides which paths found *inside* an image may be opened.
//!
//! Following a path stored in an image is a security decision (imago's `ImplicitOpenGate`):
//! a hostile image could name any file on the host. By default a parent is opened only if,
//! after resolving symbolic links, it lies in the child's own folder or under a folder the
//! user named ([`ParentPolicy::allowed_dirs`]); [`ParentPolicy::explicit`] (`--parent PATH`)
//! names the immediate parent outright. Parents are always opened read-only with a shared
//! lock. Chains are bounded by [`MAX_CHAIN_DEPTH`] and cycles are refused.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::{Access, StdFile};

/// The deepest parent chain opened (child plus this many ancestors).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// Which parent files an open may follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentPolicy {
    /// The immediate parent of the image being opened, given by the user: used instead of the
    /// image's locators (linkage is still verified). Applies to the first level only.
    pub explicit: Option<PathBuf>,
    /// Folders under which parents named by locators may be opened, besides the child's own
    /// folder.
    pub allowed_dirs: Vec<PathBuf>,
}

/// How a locator names its path (for error messages and for the mapping to host paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatorKind {
    /// A Windows path relative to the child's folder (VHD `W2ru`, VHDX `relative_path`).
    WindowsRelative,
    /// An absolute Windows path (VHD `W2ku`, VHDX `absolute_win32_path`).
    WindowsAbsolute,
    /// A Windows volume path, `\\?\Volume{GUID}\dir\file` (VHDX `volume_path`).
    WindowsVolume,
    /// A Mac OS path or `file://` URL (VHD `Mac`, `MacX`).
    Mac,
}

/// One parent locator as stored in an image, already decoded to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// How to interpret `path`.
    pub kind: LocatorKind,
    /// Short name for messages, e.g. `"W2ru"` or `"relative_path"`.
    pub label: &'static str,
    /// The path exactly as stored.
    pub path: String,
}

/// Where a chain open stands: the child's path and the ancestors opened so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainContext {
    /// Path of the image being opened (needed to resolve relative locators).
    pub path: Option<PathBuf>,
    /// Canonical paths of the images already opened in this chain, child first.
    pub visited: Vec<PathBuf>,
}

/// A parent found on the host, opened read-only with a shared lock.
#[derive(Debug)]
pub struct FoundParent {
    /// The path it was opened at.
    pub path: PathBuf,
    /// The open file.
    pub file: StdFile,
    /// The context to open it with (its own parents are found from here).
    pub chain: ChainContext,
}

/// Host paths a locator may refer to, most likely first. Windows separators become `/`;
/// relative paths are taken from `child_dir`; absolute Windows paths are tried as a sibling of
/// the child (a chain copied off a Windows host), for drive-letter paths under WSL's
/// `/mnt/<drive>/`, and, when they start with a single separator (written on a Unix host,
/// `\srv\vm\base.vhd`), as that host path.
pub fn host_candidates(locator: &Locator, child_dir: &Path) -> Vec<PathBuf> {
    let text = locator.path.trim_end_matches('\0').trim();
    if text.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    match locator.kind {
        LocatorKind::WindowsRelative => out.push(child_dir.join(windows_to_host(text))),
        LocatorKind::WindowsAbsolute | LocatorKind::WindowsVolume => {
            let unified = text.replace('\\', "/");
            let stripped = unified
                .strip_prefix("//?/")
                .or_else(|| unified.strip_prefix("//./"))
                .unwrap_or(&unified);
            if let Some(name) = stripped.rsplit('/').next().filter(|n| !n.is_empty()) {
                out.push(child_dir.join(name));
            }
            let bytes = stripped.as_bytes();
            if bytes.len() > 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
                let drive = char::from(bytes[0].to_ascii_lowercase());
                let rest = stripped[2..].trim_start_matches('/');
                out.push(PathBuf::from(format!("/mnt/{drive}/{rest}")));
            } else if unified.starts_with('/') && !unified.starts_with("//") {
                out.push(PathBuf::from(&unified));
            }
        }
        LocatorKind::Mac => {
            let path = text
                .strip_prefix("file://localhost")
                .or_else(|| text.strip_prefix("file://"))
                .unwrap_or(text);
            let path = Path::new(path);
            if path.is_absolute() {
                if let Some(name) = path.file_name() {
                    out.push(child_dir.join(name));
                }
                out.push(path.to_path_buf());
            } else {
                out.push(child_dir.join(path));
            }
        }
    }
    out.dedup();
    out
}

/// A relative Windows path as a host-relative path: `\` and `/` both separate; `.` parts vanish.
fn windows_to_host(text: &str) -> PathBuf {
    text.split(['\\', '/'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect()
}

/// Finds and opens the parent of the image described by `chain`, trying `policy.explicit`
/// (first level only) or else each of `locators` in the order given (the format's spec
/// order). Fails with [`ErrorKind::NotFound`] naming every path tried, with
/// [`ErrorKind::InvalidImage`] for cycles or chains deeper than [`MAX_CHAIN_DEPTH`], and with
/// [`ErrorKind::InvalidInput`] when a parent exists only outside the allowed folders.
pub fn find_parent(
    chain: &ChainContext,
    policy: &ParentPolicy,
    locators: &[Locator],
) -> Result<FoundParent> {
    if chain.visited.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!("parent chain is deeper than {MAX_CHAIN_DEPTH} images"),
        ));
    }
    let first_level = chain.visited.len() <= 1;
    if let (Some(explicit), true) = (&policy.explicit, first_level) {
        return open_candidate(chain, explicit);
    }
    let Some(child) = &chain.path else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "differencing image opened without a path: its parent cannot be located (name it \
             explicitly)",
        ));
    };
    let child_dir = child
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let child_dir_canon = child_dir.canonicalize().unwrap_or(child_dir.clone());
    let mut tried = Vec::new();
    let mut refused = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for locator in locators {
        for candidate in host_candidates(locator, &child_dir) {
            // Several locators often name the same file (W2ru and W2ku of a sibling).
            if seen.contains(&candidate) {
                continue;
            }
            seen.push(candidate.clone());
            let Ok(canon) = candidate.canonicalize() else {
                tried.push(format!(
                    "{} for {} \"{}\"",
                    candidate.display(),
                    locator.label,
                    locator.path
                ));
                continue;
            };
            let allowed = canon.starts_with(&child_dir_canon)
                || policy
                    .allowed_dirs
                    .iter()
                    .filter_map(|d| d.canonicalize().ok())
                    .any(|d| canon.starts_with(d));
            if !allowed {
                refused.push(canon.display().to_string());
                continue;
            }
            return open_candidate(chain, &candidate);
        }
    }
    if let Some(outside) = refused.first() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "parent {outside} lies outside the child's folder; allow it with --parent-dir \
                 or name it with --parent"
            ),
        ));
    }
    let names: Vec<&str> = locators.iter().map(|l| l.path.as_str()).collect();
    Err(Error::new(
        ErrorKind::NotFound,
        if tried.is_empty() {
            "differencing image has no usable parent locator".to_owned()
        } else {
            format!(
                "parent image {} not found (tried {})",
                names.first().copied().unwrap_or(""),
                tried.join(", ")
            )
        },
    ))
}

fn open_candidate(chain: &ChainContext, path: &Path) -> Result<FoundParent> {
    let canon = path
        .canonicalize()
        .map_err(|e| Error::io(e, format!("parent image {} not found", path.display())))?;
    if chain.visited.contains(&canon) {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!("parent chain loops back to {}", canon.display()),
        ));
    }
    let file = StdFile::open(path, Access::ReadOnly)?;
    let mut visited = chain.visited.clone();
    visited.push(canon);
    Ok(FoundParent {
        path: path.to_path_buf(),
        file,
        chain: ChainContext {
            path: Some(path.to_path_buf()),
            visited,
        },
    })
}

impl ChainContext {
    /// The context for opening the image at `path` as the start of a chain.
    pub fn root(path: &Path) -> ChainContext {
        let canon = path.canonicalize().unwrap_or_else(|_| normalise(path));
        ChainContext {
            path: Some(path.to_path_buf()),
            visited: vec![canon],
        }
    }
}

/// `to` relative to the folder `from_dir`, in the Windows form parent locators store (`.\name`,
/// `..\x\name`). Both paths should be absolute and normalised. `None` if they share no root
/// or a component is not valid Unicode (a locator cannot hold it).
pub fn relative_windows(from_dir: &Path, to: &Path) -> Option<String> {
    let from: Vec<Component> = from_dir.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    if common == from.len() {
        parts.push(".");
    }
    parts.extend(std::iter::repeat_n("..", from.len() - common));
    for c in &to[common..] {
        parts.push(c.as_os_str().to_str()?);
    }
    Some(parts.join("\\"))
}

/// `path` with `.` and `..` folded lexically (for paths that cannot be canonicalised, such as
/// a file about to be created).
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(kind: LocatorKind, path: &str) -> Locator {
        Locator {
            kind,
            label: "test",
            path: path.to_owned(),
        }
    }

    #[test]
    fn relative_windows_paths_resolve_from_the_child_folder() {
        let c = host_candidates(
            &loc(LocatorKind::WindowsRelative, ".\\snap\\base.vhdx"),
            Path::new("/data/vm"),
        );
        assert_eq!(c, vec![PathBuf::from("/data/vm/snap/base.vhdx")]);
    }

    #[test]
    fn absolute_windows_paths_try_the_sibling_then_wsl_mount() {
        let c = host_candidates(
            &loc(
                LocatorKind::WindowsAbsolute,
                "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd",
            ),
            Path::new("/data"),
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/data/fat-parent.vhd"),
                PathBuf::from("/mnt/c/Projects/dfvfs/test_data/fat-parent.vhd")
            ]
        );
        let v = host_candidates(
            &loc(
                LocatorKind::WindowsVolume,
                "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vms\\p.vhdx",
            ),
            Path::new("/d"),
        );
        assert_eq!(v, vec![PathBuf::from("/d/p.vhdx")]);
        let u = host_candidates(
            &loc(LocatorKind::WindowsAbsolute, "\\srv\\vm\\base.vhd"),
            Path::new("/d"),
        );
        assert_eq!(
            u,
            vec![
                PathBuf::from("/d/base.vhd"),
                PathBuf::from("/srv/vm/base.vhd")
            ]
        );
    }

    #[test]
    fn parents_outside_the_child_folder_are_refused_without_consent() {
        let outer = tempfile::tempdir().unwrap();
        let inner = outer.path().join("child");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(outer.path().join("p.vhd"), b"x").unwrap();
        let child = inner.join("c.vhd");
        std::fs::write(&child, b"x").unwrap();
        let chain = ChainContext::root(&child);
        let locators = [loc(LocatorKind::WindowsRelative, "..\\p.vhd")];
        let err = find_parent(&chain, &ParentPolicy::default(), &locators).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let policy = ParentPolicy {
            explicit: None,
            allowed_dirs: vec![outer.path().to_path_buf()],
        };
        let found = find_parent(&chain, &policy, &locators).unwrap();
        assert_eq!(found.chain.visited.len(), 2);
    }

    #[test]
    fn missing_parents_are_named_in_the_error_and_cycles_refused() {
        let dir = tempfile::tempdir().unwrap();
        let child = dir.path().join("c.vhd");
        std::fs::write(&child, b"x").unwrap();
        let chain = ChainContext::root(&child);
        let err = find_parent(
            &chain,
            &ParentPolicy::default(),
            &[loc(LocatorKind::WindowsAbsolute, "C:\\x\\fat-parent.vhd")],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("C:\\x\\fat-parent.vhd"), "{err}");
        let err = find_parent(
            &chain,
            &ParentPolicy::default(),
            &[loc(LocatorKind::WindowsRelative, "c.vhd")],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    }
}
