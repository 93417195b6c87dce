//! One exit code per kind of failure, whatever the command (issue 12, class 8): a folder is
//! "not a disk image" for every command, create refuses what it cannot make before it makes
//! anything, and an option that cannot apply is a usage error instead of being ignored.

use super::support::{
    EXIT_EXISTS, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_USAGE, qemu_create, run, tempdir, vdisk_cmd,
};

/// Every command that takes an existing image, as a script would call it.
const EVERY_COMMAND: [&[&str]; 9] = [
    &["info"],
    &["info", "--json"],
    &["check"],
    &["map"],
    &["compact"],
    &["compact", "--dry-run"],
    &["compact", "--mode", "retrim"],
    &["compact", "--json", "--mode", "quick"],
    &["compact", "--jobs", "2", "--skip-in-use"],
];

#[test]
fn a_folder_gives_the_same_exit_code_from_every_command() {
    let dir = tempdir();
    let folder = dir.path().join("images.vhd");
    std::fs::create_dir(&folder).unwrap();
    for args in EVERY_COMMAND {
        let out = run(vdisk_cmd().args(args).arg(&folder));
        assert_eq!(out.code, EXIT_INVALID, "{args:?}: {}", out.stderr);
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains("is a folder"),
            "{args:?}: {}{}",
            out.stdout,
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

#[test]
fn a_missing_file_gives_exit_9_from_every_command_and_creates_nothing() {
    let dir = tempdir();
    let missing = dir.path().join("gone.vhdx");
    for args in EVERY_COMMAND {
        let out = run(vdisk_cmd().args(args).arg(&missing));
        assert_eq!(out.code, EXIT_NOT_FOUND, "{args:?}: {}", out.stderr);
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains("gone.vhdx"),
            "{args:?} names the file: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(!missing.exists(), "{args:?} created the file");
    }
}

/// A file that is no disk image at all (a text file named .vhd) is "not a disk image" for
/// every command, never "unsupported" or "other", and is left as it was.
#[test]
fn a_file_of_the_wrong_type_gives_exit_4_from_every_command_and_is_left_alone() {
    let dir = tempdir();
    let text = dir.path().join("notes.vhd");
    let content = b"not a disk image, just notes\n".repeat(200);
    std::fs::write(&text, &content).unwrap();
    for args in EVERY_COMMAND {
        let out = run(vdisk_cmd().args(args).arg(&text));
        assert_eq!(
            out.code, EXIT_INVALID,
            "{args:?}: {}{}",
            out.stdout, out.stderr
        );
        assert_eq!(
            std::fs::read(&text).unwrap(),
            content,
            "{args:?} changed it"
        );
    }
}

#[test]
fn create_over_an_existing_file_gives_exit_10_and_leaves_it_alone() {
    let dir = tempdir();
    let file = dir.path().join("keep.vhdx");
    std::fs::write(&file, b"precious").unwrap();
    for format in ["vhd", "vhdx", "vdi", "qcow2"] {
        let out = run(vdisk_cmd()
            .args([
                "create", "--format", format, "--type", "dynamic", "--size", "64M",
            ])
            .arg(&file));
        assert_eq!(out.code, EXIT_EXISTS, "{format}: {}", out.stderr);
        assert!(out.stderr.contains("already exists"), "{}", out.stderr);
        assert_eq!(std::fs::read(&file).unwrap(), b"precious", "{format}");
    }
}

/// A fixed VHD is the disk's bytes and a footer: a block size cannot apply, and saying so
/// beats silently making something other than what was asked.
#[test]
fn create_refuses_a_block_size_for_a_fixed_vhd_before_creating_anything() {
    let dir = tempdir();
    let file = dir.path().join("fixed.vhd");
    let out = run(vdisk_cmd()
        .args([
            "create", "--format", "vhd", "--type", "fixed", "--size", "8M",
        ])
        .args(["--block-size", "2M"])
        .arg(&file));
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    assert!(out.stderr.contains("block size"), "{}", out.stderr);
    assert!(!out.stderr.contains("removed"), "{}", out.stderr);
    assert!(!file.exists());
}
