//! Hostile images: damaged metadata with valid checksums never panics, hangs or yields free
//! space outside the volume; device failures stay errors.

use vdisk_core::fs::MemDevice;
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict};

use super::util::{
    SUPER, chunk_root, edit_node, edit_super, extent_root, node_copies, nodesize, noise, small,
};

fn check_sane(dev: &MemDevice) {
    let len = dev.size();
    match vdisk_btrfs::ANALYZER.analyze(dev).unwrap() {
        FsVerdict::Analysed(u) => {
            assert!(u.free_bytes() <= len);
            assert!(!u.free.any_free(&(0..1 << 20)));
        }
        FsVerdict::Untrusted { fs, reason } => {
            assert_eq!(fs, "btrfs");
            assert!(!reason.is_empty());
        }
        FsVerdict::NotMine => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn resealed_byte_flips_in_the_superblock_and_the_trees_never_panic_or_free_the_reserved_area() {
    let v = small();
    let base = v.bytes();
    let roots = [chunk_root(&base), extent_root(&v.image)];
    let copies: Vec<usize> = roots.iter().flat_map(|&r| node_copies(&base, r)).collect();
    let ns = nodesize(&base);
    let mut dev = MemDevice::new(base.clone());
    let restore = |dev: &mut MemDevice| {
        let b = dev.bytes_mut();
        b[SUPER..SUPER + 4096].copy_from_slice(&base[SUPER..SUPER + 4096]);
        for &at in &copies {
            b[at..at + ns].copy_from_slice(&base[at..at + ns]);
        }
    };
    let rnd = noise(4096, 77);
    for i in 0..120 {
        let (a, bit) = (usize::from(rnd[2 * i]), rnd[2 * i + 1] % 8);
        edit_super(dev.bytes_mut(), |sb| {
            sb[32 + (a * 13 + i * 7) % 0xc40] ^= 1 << bit
        });
        check_sane(&dev);
        restore(&mut dev);
        for root in roots {
            edit_node(dev.bytes_mut(), root, |n| {
                let at = 32 + (a * 61 + i * 97) % (n.len() - 32);
                n[at] ^= 1 << bit;
            });
            check_sane(&dev);
            restore(&mut dev);
        }
    }
}

#[test]
fn a_failing_device_is_an_error_not_a_verdict() {
    let v = small();
    let b = v.bytes();
    let len = b.len() as u64;
    let dev = MemDevice::new(b).failing(1 << 20..len);
    assert!(vdisk_btrfs::ANALYZER.analyze(&dev).is_err());
}
