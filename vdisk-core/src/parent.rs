//! Finding the parent of a differencing image: locators, host path mapping, and the policy
//! that decides which paths found *inside* an image may be opened.
//!
//! Following a path stored in an image is a security decision (imago's `ImplicitOpenGate`):
//! a hostile image could name any file on the host. By default a parent is opened only if,
//! after resolving symbolic links, it lies in the child's own folder or under a folder the
//! user named ([`ParentPolicy::allowed_dirs`]); [`ParentPolicy::explicit`] (`--parent PATH`)
//! names the immediate parent outright. The check is made on where the path leads, and the
//! file opened is the one checked (see [`find_parent`]). Parents are always opened read-only
//! with a shared lock, and only if they are regular files. Chains are bounded by [`MAX_CHAIN_DEPTH`] and cycles are refused.
//!
//! Drivers do not call the finders themselves: they hand what they found inside the child
//! (a [`crate::ParentReference`]) to the gate, [`open_backing`], which applies this policy and
//! opens the parent with whichever registered driver recognises it.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::{Access, StdFile};

mod gate;

pub use gate::{Backing, Identity, open_backing, open_named_parent, own_format_only};

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
#[non_exhaustive]
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
            // On Windows the stored path is a host path: a drive letter, UNC share or volume
            // path, as written (after the sibling, as elsewhere: a chain moved together).
            if let Some(native) = crate::sys::native_windows_path(text) {
                out.push(native);
            }
            let bytes = stripped.as_bytes();
            // Elsewhere a drive letter maps to WSL's mount and a rooted path is a host path;
            // on Windows neither is (no `/mnt/c` there, and a rooted path without a drive
            // would mean the current drive, which the stored path never meant).
            let unix_host = !cfg!(windows);
            if unix_host && bytes.len() > 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
                let drive = char::from(bytes[0].to_ascii_lowercase());
                let rest = stripped[2..].trim_start_matches('/');
                out.push(PathBuf::from(format!("/mnt/{drive}/{rest}")));
            } else if unix_host && unified.starts_with('/') && !unified.starts_with("//") {
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

/// Whether `path` lies in or under the folder `dir`, both canonical, compared as the host
/// compares names (case-insensitively on Windows, where `C:\VMs` and `c:\vms` are one folder).
fn lies_under(path: &Path, dir: &Path) -> bool {
    crate::sys::fold_case(path).starts_with(crate::sys::fold_case(dir))
}

/// Whether `a` and `b` name the same file as the host compares names (see [`lies_under`]).
fn same_path(a: &Path, b: &Path) -> bool {
    crate::sys::fold_case(a) == crate::sys::fold_case(b)
}

/// A relative Windows path as a host-relative path: `\` and `/` both separate; `.` parts vanish.
fn windows_to_host(text: &str) -> PathBuf {
    text.split(['\\', '/'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect()
}

/// Finds and opens the parent of the image described by `chain`, trying `policy.explicit`
/// (first level only) or else each of `locators` in the order given (the format's spec
/// order).
///
/// The rule, at every level of the chain: the child's folder is resolved first (its path made
/// absolute, then canonical; a folder that cannot be resolved refuses the open, never allows
/// everything). Each candidate path is resolved (symbolic links followed) and allowed only if
/// where it leads lies in the child's folder or under one of `policy.allowed_dirs`: a link
/// that stays inside is harmless, one that leads out is refused. The allowed file is then
/// opened once, at its resolved path, following no link ([`StdFile::open_no_follow`]), so a
/// link swapped in after the check opens nothing; it must be a regular file.
///
/// Fails with [`ErrorKind::NotFound`] naming every path tried, with
/// [`ErrorKind::InvalidImage`] for cycles or chains deeper than [`MAX_CHAIN_DEPTH`], and with
/// [`ErrorKind::Refused`] when a parent exists only outside the allowed folders or is not a
/// regular file (the message names it and the options that allow it).
pub fn find_parent(
    chain: &ChainContext,
    policy: &ParentPolicy,
    locators: &[Locator],
) -> Result<FoundParent> {
    let child = match search_start(chain, policy)? {
        Start::Named(found) => return Ok(found),
        Start::Child(child) => child,
    };
    let child_dir = child_folder(child)?;
    let allowed_dirs: Vec<PathBuf> = policy
        .allowed_dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect();
    let mut tried = Vec::new();
    let mut refused = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for locator in locators {
        for candidate in host_candidates(locator, &child_dir) {
            // Several locators often name the same file (W2ru and W2ku of a sibling).
            if seen.iter().any(|s| same_path(s, &candidate)) {
                continue;
            }
            seen.push(candidate.clone());
            let named = format!("{} \"{}\"", locator.label, locator.path);
            let Ok(canon) = candidate.canonicalize() else {
                tried.push(format!("{} for {named}", candidate.display()));
                continue;
            };
            let allowed = lies_under(&canon, &child_dir)
                || allowed_dirs.iter().any(|d| lies_under(&canon, d));
            if !allowed {
                refused.push(format!(
                    "parent {} (named by {named}) lies outside the child's folder {}",
                    canon.display(),
                    child_dir.display()
                ));
                continue;
            }
            return open_candidate(chain, &canon).map_err(|e| {
                if e.kind() == ErrorKind::Refused {
                    Error::new(
                        ErrorKind::Refused,
                        format!("parent named by {named}: {}", e.message()),
                    )
                    .with_path(&canon)
                } else {
                    e
                }
            });
        }
    }
    if let Some(outside) = refused.first() {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{outside}; it was not opened: allow its folder with --parent-dir DIR or name \
                 the parent with --parent PATH"
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

/// Finds and opens the parent of the image described by `chain` by its identity, for formats
/// that record no path to their parent, only an identifier (VirtualBox VDI: the parent's
/// UUID): `policy.explicit` at the first level, as [`find_parent`]; otherwise the parent is
/// the one regular file, among those directly in the child's folder and in
/// `policy.allowed_dirs`, whose name ends in one of `extensions` (lowercase, no dot) and for
/// which `is_parent` says yes.
///
/// The same rules as [`find_parent`] hold: the folders are resolved first (an unresolvable
/// child folder refuses the open); symbolic links are never followed, not even to look (a
/// link is passed over); every candidate is opened once, read-only, following no link
/// ([`StdFile::open_no_follow`]), and the file `is_parent` accepted is the one returned.
/// Files already in the chain are not looked at, so a chain cannot loop. `is_parent` reads
/// only the file it is given.
///
/// Fails with [`ErrorKind::NotFound`] (naming the folders searched and the files that could
/// not be read), and with [`ErrorKind::InvalidImage`] when two files claim to be the parent
/// (copies of one image: which one the child was made from cannot be told; the message names
/// both and `--parent`).
pub fn find_parent_by_id(
    chain: &ChainContext,
    policy: &ParentPolicy,
    extensions: &[&str],
    is_parent: &dyn Fn(&StdFile) -> Result<bool>,
) -> Result<FoundParent> {
    let child = match search_start(chain, policy)? {
        Start::Named(found) => return Ok(found),
        Start::Child(child) => child,
    };
    let mut dirs = vec![child_folder(child)?];
    for d in &policy.allowed_dirs {
        if let Ok(c) = d.canonicalize()
            && !dirs.contains(&c)
        {
            dirs.push(c);
        }
    }
    let mut found: Vec<FoundParent> = Vec::new();
    let mut unreadable = Vec::new();
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            unreadable.push(format!("{} (cannot list the folder)", dir.display()));
            continue;
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            let wanted = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()));
            let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            if !wanted || !regular || chain.visited.contains(&path) {
                continue;
            }
            match open_candidate(chain, &path) {
                Ok(candidate) => match is_parent(&candidate.file) {
                    Ok(true) => found.push(candidate),
                    Ok(false) => {}
                    Err(e) => unreadable.push(format!("{} ({})", path.display(), e.message())),
                },
                Err(e) => unreadable.push(format!("{} ({})", path.display(), e.message())),
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let mut msg = format!(
                "parent image not found: no .{} file in {} is the image this one was made from",
                extensions.join(" or ."),
                searched.join(", ")
            );
            if !unreadable.is_empty() {
                msg.push_str(&format!("; could not read {}", unreadable.join(", ")));
            }
            msg.push_str(" (allow its folder with --parent-dir DIR or name it with --parent PATH)");
            Err(Error::new(ErrorKind::NotFound, msg))
        }
        _ => {
            let names: Vec<String> = found.iter().map(|f| f.path.display().to_string()).collect();
            Err(Error::new(
                ErrorKind::InvalidImage,
                format!(
                    "several files claim to be the parent ({}): copies of one image, and which \
                     one the child was made from cannot be told; name it with --parent PATH",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Where a parent search starts, after the checks both searches share.
enum Start<'a> {
    /// The parent named with `--parent` (it wins at the first level of the chain), opened.
    Named(FoundParent),
    /// The child's path: the search looks next to it.
    Child(&'a Path),
}

/// The start both searches share: a chain deeper than [`MAX_CHAIN_DEPTH`] is refused, a
/// parent named with `--parent` is opened at the first level, and otherwise the child must
/// have a path to search from.
fn search_start<'a>(chain: &'a ChainContext, policy: &ParentPolicy) -> Result<Start<'a>> {
    if chain.visited.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!("parent chain is deeper than {MAX_CHAIN_DEPTH} images"),
        ));
    }
    if let (Some(explicit), true) = (&policy.explicit, chain.visited.len() <= 1) {
        let canon = explicit.canonicalize().map_err(|e| {
            Error::io(e, "parent image not found (named with --parent)").with_path(explicit)
        })?;
        return open_candidate(chain, &canon).map(Start::Named);
    }
    let Some(child) = &chain.path else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "differencing image opened without a path: its parent cannot be located (name it \
             explicitly)",
        ));
    };
    Ok(Start::Child(child))
}

/// The canonical folder of the image at `child`: relative locators start there and parents
/// may lie under it. A path with no folder part (`child.vhd`) is taken from the current
/// folder; a folder that cannot be resolved is an error, never "anywhere".
fn child_folder(child: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(child).map_err(|e| {
        Error::io(e, "cannot resolve the image's path to look for its parent").with_path(child)
    })?;
    let dir = absolute.parent().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "the image's path has no folder to look for its parent in",
        )
        .with_path(child)
    })?;
    dir.canonicalize().map_err(|e| {
        Error::io(
            e,
            "cannot resolve the image's folder to look for its parent",
        )
        .with_path(dir)
    })
}

/// A test's action between the policy check and the open.
#[cfg(test)]
type Hook = Box<dyn FnMut(&Path)>;

#[cfg(test)]
thread_local! {
    /// Runs between the policy check and the open (tests swap paths here).
    static BEFORE_OPEN: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// Opens the parent at `canon` (resolved, already allowed) once, following no link.
fn open_candidate(chain: &ChainContext, canon: &Path) -> Result<FoundParent> {
    if chain.visited.iter().any(|v| same_path(v, canon)) {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!("parent chain loops back to {}", canon.display()),
        ));
    }
    #[cfg(test)]
    BEFORE_OPEN.with_borrow_mut(|hook| {
        if let Some(hook) = hook {
            hook(canon);
        }
    });
    let file = StdFile::open_no_follow(canon, Access::ReadOnly)?;
    let mut visited = chain.visited.clone();
    visited.push(canon.to_path_buf());
    Ok(FoundParent {
        path: canon.to_path_buf(),
        file,
        chain: ChainContext {
            path: Some(canon.to_path_buf()),
            visited,
        },
    })
}

impl ChainContext {
    /// The context for opening the image at `path` as the start of a chain. The path is made
    /// absolute now (against the current folder), so that the child's folder is known even
    /// for a bare file name; [`find_parent`] resolves that folder and refuses if it cannot.
    pub fn root(path: &Path) -> ChainContext {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let canon = absolute
            .canonicalize()
            .unwrap_or_else(|_| normalise(&absolute));
        ChainContext {
            path: Some(absolute),
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

/// A canonical Windows path as Windows itself writes it in a locator: the verbatim prefix
/// `std::fs::canonicalize` adds is dropped (`\\?\C:\VMs\base.vhdx` becomes
/// `C:\VMs\base.vhdx`, `\\?\UNC\server\share\x` becomes `\\server\share\x`), so Hyper-V and
/// other readers that do not expect it still find the parent. Other text is unchanged.
pub fn plain_windows_path(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("\\\\?\\UNC\\") {
        format!("\\\\{rest}")
    } else if let Some(rest) = text
        .strip_prefix("\\\\?\\")
        .filter(|r| r.as_bytes().get(1) == Some(&b':'))
    {
        rest.to_owned()
    } else {
        text.to_owned()
    }
}

/// Refuses a parent path a locator cannot store: both formats store parent paths as UTF-16
/// (VHD W2ru/W2ku and the parent name, VHDX relative_path), so a path that is not valid
/// Unicode (possible on Unix hosts) would be written lossily and the child could never find
/// its parent. Checks `parent` made absolute against the current folder. Fails with
/// [`ErrorKind::InvalidInput`], naming the path, before anything is written.
pub fn check_storable(parent: &Path) -> Result<()> {
    let absolute = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    if absolute.to_str().is_some() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!(
            "parent path {} is not valid unicode: a parent locator stores it as utf-16, so the \
             child could never find its parent (rename the parent or its folder)",
            absolute.display()
        ),
    ))
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
mod tests;
