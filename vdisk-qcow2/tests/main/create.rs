//! `create`: what vdisk makes, qemu-img checks clean and describes as asked, and qemu can
//! write to it and vdisk read back what qemu wrote.

use std::path::Path;

use super::util::{assert_qemu_check, assert_reads_like_qemu, qemu_io, s, tool};
use vdisk_core::{Access, CreateSpec, FormatDriver, ImageKind, StdFile};

fn create(path: &Path, spec: &CreateSpec) {
    let file = StdFile::create_new(path).unwrap();
    vdisk_qcow2::DRIVER.create(Box::new(file), spec).unwrap();
}

/// `qemu-img info --output=json` of `path`.
fn qemu_info(path: &Path) -> String {
    tool("qemu-img", &["info", "--output=json", s(path)])
}

#[test]
fn created_images_check_clean_in_qemu_and_qemu_info_agrees_on_size_and_cluster_size() {
    let dir = tempfile::tempdir().unwrap();
    for (size, cs) in [
        (8u64 << 20, 65536u64),
        (24 << 20, 512),
        (64 << 20, 4096),
        (20 << 20, 2 << 20),
    ] {
        let path = dir.path().join(format!("n{cs}.qcow2"));
        create(
            &path,
            &CreateSpec::new(ImageKind::Dynamic, size).block_size(cs),
        );
        assert_qemu_check(&path);
        let info = qemu_info(&path);
        assert!(
            info.contains(&format!("\"virtual-size\": {size}")),
            "{info}"
        );
        assert!(info.contains(&format!("\"cluster-size\": {cs}")), "{info}");
        assert!(info.contains("\"compat\": \"1.1\""), "{info}");
        assert!(info.contains("\"refcount-bits\": 16"), "{info}");
        qemu_io(&path, "qcow2", &["write -P 9 0 100k", "write -P 8 5M 3k"]);
        assert_qemu_check(&path);
        assert_reads_like_qemu(&path);
        assert!(super::util::check(&path).is_empty());
    }
}

#[test]
fn a_created_child_names_its_backing_file_and_reads_through_it_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let child = dir.path().join("child.qcow2");
    create(&base, &CreateSpec::new(ImageKind::Dynamic, 8 << 20));
    qemu_io(&base, "qcow2", &["write -P 1 0 2M"]);
    create(&child, &CreateSpec::differencing(&base, &child));
    assert_qemu_check(&child);
    let info = qemu_info(&child);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 8 << 20)),
        "{info}"
    );
    qemu_io(&child, "qcow2", &["write -P 2 1M 64k"]);
    assert_reads_like_qemu(&child);
    let _ = StdFile::open(&child, Access::ReadOnly).unwrap();
}

#[test]
fn a_child_of_a_vdi_or_vhdx_parent_names_qemus_format_and_reads_through_it_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["vdi", "vhdx"] {
        let base = dir.path().join(format!("base.{fmt}"));
        let child = dir.path().join(format!("child-of-{fmt}.qcow2"));
        tool("qemu-img", &["create", "-q", "-f", fmt, s(&base), "6M"]);
        qemu_io(&base, fmt, &["write -P 5 0 1M", "write -P 6 5M 512k"]);
        let spec = CreateSpec::differencing(&base, &child)
            .block_size(4096)
            .with_registry(super::util::registry());
        create(&child, &spec);
        assert_qemu_check(&child);
        let info = qemu_info(&child);
        assert!(
            info.contains(&format!("\"backing-filename-format\": \"{fmt}\"")),
            "{info}"
        );
        assert!(info.contains("\"virtual-size\": 6291456"), "{info}");
        assert!(info.contains("\"cluster-size\": 4096"), "{info}");
        tool("qemu-img", &["compare", "-q", s(&base), s(&child)]);
        qemu_io(&child, "qcow2", &["write -P 9 512k 1M"]);
        assert_reads_like_qemu(&child);
        assert!(super::util::check(&child).is_empty());
    }
}

#[test]
fn a_child_of_a_format_the_registry_lacks_is_refused_and_no_image_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vdi");
    tool("qemu-img", &["create", "-q", "-f", "vdi", s(&base), "4M"]);
    let child = dir.path().join("child.qcow2");
    let file = StdFile::create_new(&child).unwrap();
    // No registry: the qcow2 driver alone, which does not recognise a VDI.
    let err = vdisk_qcow2::DRIVER
        .create(Box::new(file), &CreateSpec::differencing(&base, &child))
        .unwrap_err();
    assert_eq!(err.kind(), vdisk_core::ErrorKind::InvalidImage, "{err}");
    assert!(
        err.message().contains("not a disk image this tool knows"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&child).unwrap().len(), 0);
}
