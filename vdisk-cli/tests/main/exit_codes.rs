//! One exit code per kind of failure, whatever the command (issue 12, class 8): a folder is
//! "not a disk image" for every command, create refuses what it cannot make before it makes
//! anything, and an option that cannot apply is a usage error instead of being ignored.

use super::support::{EXIT_INVALID, EXIT_USAGE, qemu_create, run, tempdir, vdisk_cmd};

#[test]
fn a_folder_gives_the_same_exit_code_from_every_command() {
    let dir = tempdir();
    let folder = dir.path().join("images.vhd");
    std::fs::create_dir(&folder).unwrap();
    for args in [
        &["info"][..],
        &["check"][..],
        &["compact"][..],
        &["compact", "--dry-run"][..],
        &["compact", "--mode", "retrim"][..],
    ] {
        let out = run(vdisk_cmd().args(args).arg(&folder));
        assert_eq!(out.code, EXIT_INVALID, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("is a folder"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn create_refuses_a_size_that_is_not_whole_sectors_and_creates_nothing() {
    let dir = tempdir();
    for size in ["1", "513", "1000000"] {
        for format in ["vhd", "vhdx"] {
            let file = dir.path().join(format!("odd-{size}.{format}"));
            let out = run(vdisk_cmd()
                .args([
                    "create", "--format", format, "--type", "dynamic", "--size", size,
                ])
                .arg(&file));
            assert_eq!(out.code, EXIT_USAGE, "{size} {format}: {}", out.stderr);
            assert!(out.stderr.contains("512-byte sectors"), "{}", out.stderr);
            assert!(!file.exists(), "{size} {format}: a file was made");
        }
    }
}

/// A block size the format refuses is found before the file exists: nothing is created and
/// then removed.
#[test]
fn create_checks_every_argument_before_creating_the_file() {
    let dir = tempdir();
    for (format, bs) in [("vhd", "3000000"), ("vhdx", "512K"), ("vhdx", "3M")] {
        let file = dir.path().join(format!("bad-bs.{format}"));
        let out = run(vdisk_cmd()
            .args([
                "create", "--format", format, "--type", "dynamic", "--size", "64M",
            ])
            .args(["--block-size", bs])
            .arg(&file));
        assert_eq!(out.code, EXIT_USAGE, "{format} {bs}: {}", out.stderr);
        assert!(
            !out.stderr.contains("removed"),
            "{format} {bs}: refused before creating, not after: {}",
            out.stderr
        );
        assert!(!file.exists());
    }
}

#[test]
fn a_parent_named_for_a_non_differencing_image_is_a_usage_error_naming_its_type() {
    let dir = tempdir();
    let image = dir.path().join("base.vhd");
    let other = dir.path().join("other.vhd");
    qemu_create(&image, "dynamic", 8 << 20);
    qemu_create(&other, "dynamic", 8 << 20);
    let before = std::fs::read(&image).unwrap();
    for args in [
        &["info"][..],
        &["check"][..],
        &["compact", "--dry-run"][..],
        &["compact", "--mode", "prezeroed"][..],
    ] {
        let out = run(vdisk_cmd()
            .args(args)
            .arg("--parent")
            .arg(&other)
            .arg(&image));
        assert_eq!(out.code, EXIT_USAGE, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("dynamic vhd") && out.stderr.contains("no parent"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(
        std::fs::read(&image).unwrap() == before,
        "nothing was changed"
    );
}
