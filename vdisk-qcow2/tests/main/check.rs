//! `check`: nothing on images qemu made and checks clean; a refcount lowered by hand is
//! corruption, found by vdisk as by qemu-img check; a raised one is a leak.

use std::process::Command;

use super::util::{FILL, assert_qemu_check, check, peek64, poke, qemu_create, qemu_io};
use vdisk_core::Severity;

/// The host offset of guest cluster 0's data and the file offset of its 16-bit refcount, in a
/// 64 KiB-cluster v3 image.
fn refcount_of_first_cluster(path: &std::path::Path) -> (u64, u64) {
    let l1 = peek64(path, 40);
    let l2 = peek64(path, l1) & 0x00ff_ffff_ffff_fe00;
    let host = peek64(path, l2) & 0x00ff_ffff_ffff_fe00;
    let reftable = peek64(path, 48);
    let block = peek64(path, reftable);
    (host, block + (host >> 16) * 2)
}

#[test]
fn a_refcount_lowered_by_hand_is_corruption_and_a_raised_one_a_leak_as_qemu_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.qcow2");
    qemu_create(&path, "cluster_size=65536,refcount_bits=16", "8M");
    qemu_io(&path, "qcow2", FILL);
    assert_qemu_check(&path);
    assert!(check(&path).is_empty(), "{:?}", check(&path));
    let (host, at) = refcount_of_first_cluster(&path);
    poke(&path, at, &0u16.to_be_bytes());
    let problems = check(&path);
    let qemu = Command::new("qemu-img")
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !qemu.status.success(),
        "qemu-img check agrees the image is corrupt"
    );
    assert!(
        problems.iter().any(|p| p.severity == Severity::Error
            && p.offset == Some(host)
            && p.message.contains("refcount 0 but 1 references")),
        "{problems:?}"
    );
    poke(&path, at, &2u16.to_be_bytes());
    let problems = check(&path);
    assert!(
        problems
            .iter()
            .any(|p| p.severity == Severity::Warning && p.message.contains("leaked")),
        "{problems:?}"
    );
}

#[test]
fn a_one_bit_refcount_cleared_by_hand_is_found_like_qemu_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r1.qcow2");
    qemu_create(&path, "cluster_size=4096,refcount_bits=1", "8M");
    qemu_io(&path, "qcow2", FILL);
    assert!(check(&path).is_empty(), "{:?}", check(&path));
    let l1 = peek64(&path, 40);
    let l2 = peek64(&path, l1) & 0x00ff_ffff_ffff_fe00;
    let host = peek64(&path, l2) & 0x00ff_ffff_ffff_fe00;
    let block = peek64(&path, peek64(&path, 48));
    let c = host / 4096;
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&path)
            .unwrap()
            .read_exact_at(&mut byte, block + c / 8)
            .unwrap();
    }
    assert_eq!(
        byte[0] >> (c % 8) & 1,
        1,
        "qemu stored the refcount where vdisk reads it"
    );
    poke(&path, block + c / 8, &[byte[0] & !(1 << (c % 8))]);
    let qemu = Command::new("qemu-img")
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!qemu.status.success());
    let problems = check(&path);
    assert!(
        problems
            .iter()
            .any(|p| p.offset == Some(host) && p.message.contains("refcount 0 but 1 references")),
        "{problems:?}"
    );
}
