//! The parent policy: where locators lead, what may be opened, and that the file opened is
//! the one checked.

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

#[cfg(unix)]
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
    assert_eq!(err.kind(), ErrorKind::Refused);
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

/// `vdisk info c.vhd`: the child's path has no folder part. Its folder is the current one,
/// resolved, not the empty path that every path "starts with".
#[test]
fn a_bare_file_name_does_not_make_every_folder_the_childs() {
    let outside = tempfile::tempdir().unwrap();
    let parent = outside.path().join("p.vhd");
    std::fs::write(&parent, b"x").unwrap();
    let absolute = parent.to_str().unwrap().replace('/', "\\");
    for chain in [
        ChainContext::root(Path::new("c.vhd")),
        ChainContext {
            path: Some(PathBuf::from("c.vhd")),
            visited: Vec::new(),
        },
    ] {
        for locator in [
            loc(LocatorKind::WindowsAbsolute, &absolute),
            loc(LocatorKind::Mac, parent.to_str().unwrap()),
        ] {
            let err = find_parent(&chain, &ParentPolicy::default(), &[locator]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
            assert!(err.message().contains("--parent-dir"), "{err}");
            assert!(err.message().contains("p.vhd"), "{err}");
        }
    }
    let root = ChainContext::root(Path::new("c.vhd"));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(root.path.as_deref(), Some(cwd.join("c.vhd").as_path()));
    assert_eq!(
        child_folder(Path::new("c.vhd")).unwrap(),
        cwd.canonicalize().unwrap()
    );
}

/// A child whose folder cannot be resolved finds no parent at all.
#[test]
fn a_child_folder_that_cannot_be_resolved_refuses_every_locator() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.vhd"), b"x").unwrap();
    let chain = ChainContext {
        path: Some(dir.path().join("gone").join("c.vhd")),
        visited: Vec::new(),
    };
    let err = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsRelative, "..\\p.vhd")],
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("cannot resolve"), "{err}");
}

/// Layout for the swap tests: `in/c.vhd` (child), `in/sub/p.vhd` (its parent), and
/// `out/p.vhd`, a file the child must never reach.
fn swap_layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("in");
    std::fs::create_dir_all(inside.join("sub")).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::write(inside.join("sub/p.vhd"), b"inside").unwrap();
    std::fs::write(dir.path().join("out/p.vhd"), b"outside").unwrap();
    let child = inside.join("c.vhd");
    std::fs::write(&child, b"x").unwrap();
    (dir, inside, child)
}

#[cfg(unix)]
fn with_hook<T>(hook: impl FnMut(&Path) + 'static, f: impl FnOnce() -> T) -> T {
    BEFORE_OPEN.with_borrow_mut(|h| *h = Some(Box::new(hook)));
    let out = f();
    BEFORE_OPEN.with_borrow_mut(|h| *h = None);
    out
}

/// The time-of-check/time-of-use window: the candidate passes the folder check, then a
/// folder along its path (or the file itself) becomes a link out of the child's folder
/// before the open. The one open follows no link, so nothing outside is opened.
#[cfg(unix)]
#[test]
fn a_link_swapped_in_between_check_and_open_opens_nothing_outside() {
    for swap_folder in [true, false] {
        let (dir, inside, child) = swap_layout();
        let out = dir.path().join("out");
        let chain = ChainContext::root(&child);
        let locators = [loc(LocatorKind::WindowsRelative, ".\\sub\\p.vhd")];
        let opened = with_hook(
            {
                let (inside, out) = (inside.clone(), out.clone());
                move |checked: &Path| {
                    assert_eq!(checked, inside.canonicalize().unwrap().join("sub/p.vhd"));
                    if swap_folder {
                        std::fs::rename(inside.join("sub"), inside.join("sub.was")).unwrap();
                        std::os::unix::fs::symlink(&out, inside.join("sub")).unwrap();
                    } else {
                        std::fs::remove_file(inside.join("sub/p.vhd")).unwrap();
                        std::os::unix::fs::symlink(out.join("p.vhd"), inside.join("sub/p.vhd"))
                            .unwrap();
                    }
                }
            },
            || find_parent(&chain, &ParentPolicy::default(), &locators),
        );
        let err = opened.expect_err("the swapped-in link is not followed");
        assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
        assert!(err.message().contains("symbolic link"), "{err}");
    }
}

/// Links that stay inside the child's folder are followed (the check is on where they lead);
/// the parent found is recorded at its resolved path, which its own parents start from.
#[cfg(unix)]
#[test]
fn a_link_that_stays_inside_the_childs_folder_is_followed_to_its_target() {
    let (_dir, inside, child) = swap_layout();
    std::os::unix::fs::symlink(inside.join("sub/p.vhd"), inside.join("p.vhd")).unwrap();
    let chain = ChainContext::root(&child);
    let found = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsRelative, ".\\p.vhd")],
    )
    .unwrap();
    let real = inside.canonicalize().unwrap().join("sub/p.vhd");
    assert_eq!(found.path, real);
    assert_eq!(found.chain.path.as_deref(), Some(real.as_path()));
    let mut buf = [0u8; 6];
    crate::HostFile::read_at(&found.file, &mut buf, 0).unwrap();
    assert_eq!(&buf, b"inside");
}

/// A FIFO (or any non-regular file) named as the parent is refused without being opened,
/// so it cannot hang the open, whether a locator or `--parent` names it.
#[cfg(unix)]
#[test]
fn a_fifo_named_as_parent_is_refused_without_hanging() {
    let (_dir, inside, child) = swap_layout();
    let fifo = inside.join("f.vhd");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) is needed");
    assert!(made.success());
    let chain = ChainContext::root(&child);
    let err = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsRelative, ".\\f.vhd")],
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("fifo"), "{err}");
    let policy = ParentPolicy {
        explicit: Some(fifo.clone()),
        allowed_dirs: Vec::new(),
    };
    let err = find_parent(&chain, &policy, &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let err = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsRelative, ".")],
    )
    .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Refused,
        "a folder is refused too: {err}"
    );
}

/// Every level of a chain follows the rule from its own folder: a parent found inside the
/// child's folder cannot name a grandparent outside it.
#[test]
fn a_grandparent_outside_the_parents_folder_is_refused_too() {
    let (dir, inside, child) = swap_layout();
    let chain = ChainContext::root(&child);
    let found = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsRelative, ".\\sub\\p.vhd")],
    )
    .unwrap();
    let up = [loc(LocatorKind::WindowsRelative, "..\\c.vhd")];
    let err = find_parent(&found.chain, &ParentPolicy::default(), &up).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let out = [loc(LocatorKind::WindowsRelative, "..\\..\\out\\p.vhd")];
    let err = find_parent(&found.chain, &ParentPolicy::default(), &out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let allow = ParentPolicy {
        explicit: None,
        allowed_dirs: vec![dir.path().join("out")],
    };
    let grand = find_parent(&found.chain, &allow, &out).unwrap();
    assert_eq!(grand.chain.visited.len(), 3);
    assert!(grand.path.ends_with("out/p.vhd"));
    let _ = inside;
}

/// Reads the first byte of a candidate: the "identity" of the test files below.
fn first_byte_is(want: u8) -> impl Fn(&StdFile) -> Result<bool> {
    move |f: &StdFile| {
        let mut b = [0u8; 1];
        crate::HostFile::read_at(f, &mut b, 0)?;
        Ok(b[0] == want)
    }
}

#[test]
fn a_parent_named_by_identity_is_the_one_matching_file_of_the_folder_never_through_a_link() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    let elsewhere = outer.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let child = dir.join("c.vdi");
    std::fs::write(&child, b"C").unwrap();
    std::fs::write(dir.join("a.vdi"), b"A").unwrap();
    std::fs::write(dir.join("b.VDI"), b"B").unwrap();
    std::fs::write(dir.join("b.txt"), b"B").unwrap();
    std::fs::write(elsewhere.join("o.vdi"), b"B").unwrap();
    std::fs::write(elsewhere.join("z.vdi"), b"Z").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(elsewhere.join("z.vdi"), dir.join("l.vdi")).unwrap();
    let chain = ChainContext::root(&child);
    let none = ParentPolicy::default();

    let found = find_parent_by_id(&chain, &none, &["vdi"], &first_byte_is(b'B')).unwrap();
    assert_eq!(found.path, dir.canonicalize().unwrap().join("b.VDI"));
    assert_eq!(found.chain.visited.len(), 2);

    // The link leads to the only "Z": it is passed over, never opened.
    let err = find_parent_by_id(&chain, &none, &["vdi"], &first_byte_is(b'Z')).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("--parent-dir"), "{err}");
    // The child itself is never a candidate.
    let err = find_parent_by_id(&chain, &none, &["vdi"], &first_byte_is(b'C')).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Another folder only when the user allows it; two files claiming to be the parent are
    // refused, naming both.
    let allowed = ParentPolicy {
        explicit: None,
        allowed_dirs: vec![elsewhere.clone()],
    };
    let found = find_parent_by_id(&chain, &allowed, &["vdi"], &first_byte_is(b'Z')).unwrap();
    assert_eq!(found.path, elsewhere.canonicalize().unwrap().join("z.vdi"));
    let err = find_parent_by_id(&chain, &allowed, &["vdi"], &first_byte_is(b'B')).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(
        err.message().contains("b.VDI") && err.message().contains("o.vdi"),
        "{err}"
    );

    // --parent names it outright (the caller's format still checks the identity).
    let explicit = ParentPolicy {
        explicit: Some(elsewhere.join("o.vdi")),
        allowed_dirs: Vec::new(),
    };
    let found = find_parent_by_id(&chain, &explicit, &["vdi"], &first_byte_is(b'Q')).unwrap();
    assert_eq!(found.path, elsewhere.canonicalize().unwrap().join("o.vdi"));
}

/// Hyper-V writes `C:\VMs\base.vhdx`, not the `\\?\` form `canonicalize` returns on
/// Windows: a locator written with the prefix would not be found by readers that do not
/// expect it.
#[test]
fn plain_windows_paths_drop_only_the_verbatim_prefix() {
    assert_eq!(
        plain_windows_path(r"\\?\C:\VMs\base.vhdx"),
        r"C:\VMs\base.vhdx"
    );
    assert_eq!(
        plain_windows_path(r"\\?\UNC\srv\share\b.vhd"),
        r"\\srv\share\b.vhd"
    );
    for kept in [
        r"C:\VMs\base.vhdx",
        r"\\srv\share\b.vhd",
        r"\\?\Volume{0b5e6a9c-0000-0000-0000-100000000000}\b.vhdx",
        "/srv/b.vhd",
    ] {
        assert_eq!(plain_windows_path(kept), kept);
    }
}

/// On Windows an absolute locator is a host path: drive letters and UNC shares are tried as
/// written, after the sibling (a chain copied elsewhere together).
#[cfg(windows)]
#[test]
fn drive_letter_and_unc_locators_are_tried_as_written_on_windows() {
    let dir = Path::new(r"D:\child");
    for (stored, native) in [
        (r"C:\VMs\base.vhdx", r"C:\VMs\base.vhdx"),
        (r"\\srv\share\vms\base.vhdx", r"\\srv\share\vms\base.vhdx"),
        (r"\\?\C:\VMs\base.vhdx", r"\\?\C:\VMs\base.vhdx"),
    ] {
        let c = host_candidates(&loc(LocatorKind::WindowsAbsolute, stored), dir);
        assert_eq!(c.first(), Some(&dir.join("base.vhdx")), "{stored}: {c:?}");
        assert!(c.contains(&PathBuf::from(native)), "{stored}: {c:?}");
    }
    // A rooted path without a drive is not a Windows host path.
    let c = host_candidates(&loc(LocatorKind::WindowsAbsolute, r"\srv\base.vhd"), dir);
    assert_eq!(c, vec![dir.join("base.vhd")]);
}

/// Windows matches file names without regard to case: a locator that spells the parent's
/// folder and name in another case still finds it, and the folder rule holds.
#[cfg(windows)]
#[test]
fn a_parent_named_in_another_case_is_found_and_allowed_on_windows() {
    let (dir, inside, child) = swap_layout();
    let shouted = inside.join("SUB").join("P.VHD");
    let stored = shouted.to_string_lossy().to_uppercase();
    let chain = ChainContext::root(&child);
    let found = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(LocatorKind::WindowsAbsolute, &stored)],
    );
    // The sibling candidate (c.vhd's folder + P.VHD) does not exist; the drive-letter path
    // as written (upper case) is the one found.
    let found = found.unwrap();
    let mut buf = [0u8; 6];
    crate::HostFile::read_at(&found.file, &mut buf, 0).unwrap();
    assert_eq!(&buf, b"inside");
    let out = dir.path().join("OUT").join("P.VHD");
    let err = find_parent(
        &chain,
        &ParentPolicy::default(),
        &[loc(
            LocatorKind::WindowsAbsolute,
            &out.to_string_lossy().to_uppercase(),
        )],
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
}
