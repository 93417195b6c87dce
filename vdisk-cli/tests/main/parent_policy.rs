//! The parent-folder policy from the command line (issue 12, class 3): a path found inside a
//! differencing image is followed only into the child's own folder or a `--parent-dir`,
//! however the image is named (a bare file name run from its folder is the most common call),
//! at every level of the chain; refused parents are never opened and exit 4 with a message
//! that names them and the options that allow them. "Never opened" is proven with a FIFO
//! whose blocked writer would wake up on any open.

use std::path::{Path, PathBuf};

use super::chain::libvhdi_chain;
use super::support::fifo::FifoWatch;
use super::support::{EXIT_INVALID, EXIT_USAGE, Out, run, tempdir, vdisk_cmd};

/// `vdisk ARGS` run in `cwd`.
fn vdisk_in(cwd: &Path, args: &[&str]) -> Out {
    run(vdisk_cmd().current_dir(cwd).args(args))
}

/// `root/outside/base.EXT` ← `root/d/child.EXT` ← `root/d/top.EXT`, each made by
/// `vdisk create` with relative names, so child's locator is `..\outside\base.EXT`.
/// Returns `root/d`.
fn chain_reaching_out(root: &Path, ext: &str) -> PathBuf {
    let d = root.join("d");
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::create_dir(&d).unwrap();
    let base = format!("outside/base.{ext}");
    vdisk_in(
        root,
        &[
            "create", "--format", ext, "--type", "dynamic", "--size", "8M", &base,
        ],
    )
    .ok();
    let child = format!("child.{ext}");
    let base = format!("../{base}");
    vdisk_in(
        &d,
        &[
            "create",
            "--type",
            "differencing",
            "--parent",
            &base,
            &child,
        ],
    )
    .ok();
    vdisk_in(
        &d,
        &[
            "create",
            "--parent-dir",
            "../outside",
            "--type",
            "differencing",
            "--parent",
            &child,
            &format!("top.{ext}"),
        ],
    )
    .ok();
    d
}

#[track_caller]
fn assert_refused(out: &Out, what: &str) {
    assert_eq!(
        out.code, EXIT_INVALID,
        "{what}: {}{}",
        out.stdout, out.stderr
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("--parent-dir"), "{what}: {all}");
    assert!(all.contains("outside/base."), "{what}: {all}");
}

#[test]
fn a_bare_file_name_child_does_not_follow_a_locator_out_of_its_folder() {
    for ext in ["vhd", "vhdx"] {
        let root = tempdir();
        let d = chain_reaching_out(root.path(), ext);
        let child = format!("child.{ext}");
        let top = format!("top.{ext}");
        for named in [child.clone(), format!("./{child}"), top.clone()] {
            let out = vdisk_in(&d, &["info", "--json", &named]);
            assert_refused(&out, &format!("info {named}"));
            assert_eq!(out.json()["error"]["kind"], "refused", "{}", out.stdout);
        }
        let abs = d.join(&child);
        assert_refused(
            &vdisk_in(root.path(), &["info", abs.to_str().unwrap()]),
            "absolute path",
        );
        // Allowed, the same chain opens and reads its parent's data.
        vdisk_in(&d, &["info", "--parent-dir", "../outside", &top]).ok();
        if ext == "vhd" {
            let base = root.path().join("outside/base.vhd");
            assert!(
                libvhdi_chain(&[&d.join(&top), &d.join(&child), &base]) == libvhdi_chain(&[&base])
            );
        }
    }
}

/// The parent outside is a FIFO: `info`, `check` and `compact --dry-run` of the child (a
/// locator reaches out) and of its child (the grandparent level does) refuse it without
/// opening it, by its relative locator (both formats) and by its absolute one (VHD W2ku).
#[test]
fn a_parent_outside_the_folder_is_never_opened_at_any_level_of_the_chain() {
    for ext in ["vhd", "vhdx"] {
        let root = tempdir();
        let d = chain_reaching_out(root.path(), ext);
        let base = root.path().join(format!("outside/base.{ext}"));
        std::fs::rename(&base, root.path().join("outside/real")).unwrap();
        let watch = FifoWatch::new(&base);
        let child = format!("child.{ext}");
        let top = format!("top.{ext}");
        for named in [&child, &top] {
            assert_refused(&vdisk_in(&d, &["info", named]), "info");
            for cmd in [&["check"][..], &["compact", "--dry-run"][..]] {
                let out = vdisk_in(&d, &[cmd, &[named.as_str()]].concat());
                assert_eq!(out.code, EXIT_INVALID, "{cmd:?} {named}: {}", out.stderr);
            }
        }
        if ext == "vhd" {
            // Only W2ku (`\...\outside\base.vhd`) still finds it from a deeper folder.
            let deeper = d.join("deeper");
            std::fs::create_dir(&deeper).unwrap();
            std::fs::rename(d.join(&child), deeper.join(&child)).unwrap();
            assert_refused(&vdisk_in(&deeper, &["info", &child]), "absolute locator");
        }
        assert!(!watch.was_opened(), "{ext}: the refused parent was opened");
    }
}

/// A FIFO named as the parent inside the child's folder is refused (exit 4) without hanging,
/// and without being opened.
#[test]
fn a_fifo_named_as_parent_in_the_childs_folder_is_refused_without_opening_it() {
    let root = tempdir();
    let d = chain_reaching_out(root.path(), "vhd");
    std::fs::rename(d.join("child.vhd"), d.join("moved.vhd")).unwrap();
    let watch = FifoWatch::new(&d.join("child.vhd"));
    let out = vdisk_in(&d, &["info", "top.vhd"]);
    assert_eq!(out.code, EXIT_INVALID, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("fifo"), "{}", out.stderr);
    assert!(!watch.was_opened(), "the fifo was opened");
}

/// A parent whose path is not valid Unicode cannot be stored in a locator (UTF-16): `create`
/// refuses it and leaves no file, instead of making a child that never finds its parent.
#[test]
fn create_refuses_a_parent_name_that_is_not_unicode_and_leaves_no_file() {
    use std::os::unix::ffi::OsStrExt;
    for ext in ["vhd", "vhdx"] {
        let root = tempdir();
        let name = std::ffi::OsStr::from_bytes(b"base-\xff.img");
        let parent = root.path().join(name);
        run(vdisk_cmd()
            .args([
                "create", "--format", ext, "--type", "dynamic", "--size", "8M",
            ])
            .arg(&parent))
        .ok();
        let child = root.path().join(format!("child.{ext}"));
        let out = run(vdisk_cmd()
            .args(["create", "--type", "differencing", "--parent"])
            .arg(&parent)
            .arg(&child));
        assert_eq!(out.code, EXIT_USAGE, "{ext}: {}", out.stderr);
        assert!(out.stderr.contains("not valid unicode"), "{}", out.stderr);
        assert!(!child.exists(), "{ext}: no child left behind");
    }
}
