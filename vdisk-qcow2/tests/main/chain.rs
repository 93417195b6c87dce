//! Backing chains: a qcow2 over a qcow2, a VDI or a VHDX reads like qemu reads it.

use super::util::{FILL, assert_reads_like_qemu, check, open, qemu_create, qemu_io, s, tool};
use vdisk_core::{BlockIndex, BlockState, ImageKind};

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
