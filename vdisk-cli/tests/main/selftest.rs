//! The oracles and helpers can fail: a one-byte difference is seen by qemu and libvhdi, and the
//! spec check finds leaked space and overlapping blocks. Without this, a passing suite could
//! mean a blind harness.

use super::roundtrip::mixed;
use super::support::vhd::{self, idx, put_be32};
use super::support::{BLOCK, copy_to, libvhdi_read, qemu_compare, qemu_io, tempdir};

#[test]
fn qemu_and_libvhdi_oracles_see_a_one_byte_difference() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let other = copy_to(&s.pristine, dir.path(), "other.vhd");
    qemu_io(&other, &[format!("write -P 0x01 {} 1", 4 * BLOCK + 777)]);
    assert_eq!(
        qemu_compare(&s.pristine, &other).code,
        1,
        "qemu-img compare must see it"
    );
    assert_ne!(
        libvhdi_read(&s.pristine).sha256,
        libvhdi_read(&other).sha256,
        "libvhdi hash must see it"
    );
}

#[test]
fn spec_check_finds_leaked_tail_space_and_overlapping_blocks() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let b = std::fs::read(&s.image).unwrap();
    assert_eq!(vhd::check_dynamic(&s.image), Ok(s.allocated));

    let len = b.len();
    let mut leaked = b[..len - 512].to_vec();
    leaked.extend(std::iter::repeat_n(0, 4096));
    leaked.extend_from_slice(&b[len - 512..]);
    let f = dir.path().join("leaked.vhd");
    std::fs::write(&f, &leaked).unwrap();
    assert!(vhd::check_dynamic(&f).is_err_and(|e| e.contains("between")));

    let l = vhd::layout(&b).unwrap();
    let mut overlap = b.clone();
    let first = vhd::be32(&b, idx(l.bat));
    put_be32(&mut overlap, idx(l.bat + 4 * 4), first + 8);
    std::fs::write(&f, &overlap).unwrap();
    assert!(vhd::check_dynamic(&f).is_err_and(|e| e.contains("overlap")));
}
