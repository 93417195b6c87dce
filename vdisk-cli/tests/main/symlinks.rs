//! No symlink trickery makes vdisk write outside the file it was named: `create` refuses a
//! path that is a symlink (to an existing file or dangling) without touching the target, and
//! `compact` through a symlink changes only the image it points to, leaving the link a link
//! and creating no file beside it.

use std::path::Path;

use super::killed::{compact, vhd_subject};
use super::support::{file_len, run, tempdir, vdisk_cmd};

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn create_refuses_a_symlinked_path_and_never_writes_its_target() {
    let dir = tempdir();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let to_existing = dir.path().join("new.vhd");
    std::os::unix::fs::symlink(&victim, &to_existing).unwrap();
    let dangling = dir.path().join("other.vhd");
    let absent = dir.path().join("would-be-created");
    std::os::unix::fs::symlink(&absent, &dangling).unwrap();
    for link in [&to_existing, &dangling] {
        let out = run(vdisk_cmd()
            .args([
                "create", "--format", "vhd", "--type", "dynamic", "--size", "1M",
            ])
            .arg(link));
        assert_ne!(out.code, 0, "{}: {}", link.display(), out.stderr);
        assert!(
            std::fs::symlink_metadata(link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !absent.exists(),
        "a dangling link's target is never created"
    );
    assert_eq!(
        listing(dir.path()),
        ["new.vhd", "other.vhd", "victim"],
        "nothing else appears"
    );
}

#[test]
fn compact_through_a_symlink_changes_only_the_image_it_points_to() {
    let dir = tempdir();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let subject = vhd_subject(&images);
    let target = subject.copy("target");
    let links = dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    let link = links.join("disk.vhd");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let before_images = listing(&images);
    let before_len = file_len(&target);
    compact(&link).ok();
    assert!(file_len(&target) < before_len, "the target was compacted");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is still a link, not replaced by a file"
    );
    assert_eq!(
        listing(&links),
        ["disk.vhd"],
        "nothing created beside the link"
    );
    assert_eq!(
        listing(&images),
        before_images,
        "nothing created beside the target"
    );
    subject.assert_valid(&target, "through a symlink");
    subject.assert_same_content(&target, "through a symlink");
}
