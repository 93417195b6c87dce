//! Backing chains: a qcow2 over a qcow2, a VDI or a VHDX reads like qemu reads it.

use super::util::{FILL, assert_reads_like_qemu, check, open, qemu_create, qemu_io, s, tool};
use vdisk_core::{BlockIndex, BlockState, FormatDriver, ImageKind};

#[test]
fn a_qcow2_over_qcow2_vdi_and_vhdx_backing_files_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["qcow2", "vdi", "vhdx"] {
        let base = dir.path().join(format!("base.{fmt}"));
        tool("qemu-img", &["create", "-q", "-f", fmt, s(&base), "8M"]);
        qemu_io(&base, fmt, FILL);
        let child = dir.path().join(format!("child-{fmt}.qcow2"));
        qemu_create(
            &child,
            &format!("backing_file=base.{fmt},backing_fmt={fmt}"),
            "8M",
        );
        qemu_io(
            &child,
            "qcow2",
            &[
                "write -P 0x77 1M 64k",
                "write -z 5M 64k",
                "write -P 8 7M 4k",
            ],
        );
        assert_reads_like_qemu(&child);
        let img = open(&child).unwrap();
        assert_eq!(img.kind(), ImageKind::Differencing);
        assert_eq!(img.parent().map(|p| p.format()), Some(fmt));
        assert_eq!(
            img.block_state(BlockIndex(0)).unwrap(),
            BlockState::Unallocated
        );
        assert!(check(&child).is_empty(), "{fmt}: {:?}", check(&child));
    }
}

#[test]
fn a_backing_file_of_another_format_than_the_header_names_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    tool("qemu-img", &["create", "-q", "-f", "vdi", s(&base), "4M"]);
    let child = dir.path().join("c.qcow2");
    qemu_create(&child, "backing_file=base.img,backing_fmt=vdi", "4M");
    // Rewrite the backing format extension's "vdi" as "vpc".
    let mut bytes = std::fs::read(&child).unwrap();
    let at = bytes.windows(3).position(|w| w == b"vdi").unwrap();
    bytes[at..at + 3].copy_from_slice(b"vpc");
    std::fs::write(&child, &bytes).unwrap();
    let err = open(&child).unwrap_err();
    assert!(err.message().contains("says its backing file"), "{err}");
    assert_eq!(std::fs::read(&child).unwrap(), bytes);
}

#[test]
fn a_backing_file_outside_the_images_folder_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let base = other.path().join("base.qcow2");
    qemu_create(&base, "", "4M");
    qemu_io(&base, "qcow2", &["write -P 1 0 64k"]);
    let child = dir.path().join("child.qcow2");
    qemu_create(
        &child,
        &format!("backing_file={},backing_fmt=qcow2", s(&base)),
        "4M",
    );
    let err = open(&child).unwrap_err();
    assert_eq!(err.kind(), vdisk_core::ErrorKind::Refused, "{err}");
    let opts = vdisk_core::OpenOptions::read_only().with_parents(vdisk_core::ParentPolicy {
        explicit: None,
        allowed_dirs: vec![other.path().to_path_buf()],
    });
    let img = super::util::registry().open_path(&child, &opts).unwrap();
    assert_eq!(
        img.parent_path().map(|p| p.file_name()),
        Some(base.file_name())
    );
    let reference = vdisk_qcow2::DRIVER
        .parent_reference(Box::new(
            vdisk_core::StdFile::open(&child, vdisk_core::Access::ReadOnly).unwrap(),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(reference.locators[0].path, s(&base));
}

#[test]
fn past_the_end_of_a_smaller_backing_file_the_child_reads_zeros_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("small.qcow2");
    qemu_create(&base, "", "3M");
    qemu_io(&base, "qcow2", &["write -P 0x31 0 3M"]);
    let child = dir.path().join("big.qcow2");
    qemu_create(
        &child,
        "backing_file=small.qcow2,backing_fmt=qcow2,cluster_size=4096",
        "8M",
    );
    qemu_io(
        &child,
        "qcow2",
        &["write -P 0x32 2M 8k", "write -P 0x33 7M 4k"],
    );
    assert_reads_like_qemu(&child);
    let problems = check(&child);
    assert!(
        problems.len() == 1 && problems[0].message.contains("smaller than the image"),
        "{problems:?}"
    );
}

#[test]
fn a_raw_backing_file_is_refused_as_unsupported_naming_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let child = dir.path().join("c.qcow2");
    qemu_create(&child, "backing_file=base.raw,backing_fmt=raw", "1M");
    let before = std::fs::read(&child).unwrap();
    let err = open(&child).unwrap_err();
    assert_eq!(err.kind(), vdisk_core::ErrorKind::Unsupported, "{err}");
    assert!(err.message().contains("is a raw image"), "{err}");
    assert_eq!(std::fs::read(&child).unwrap(), before);
}
