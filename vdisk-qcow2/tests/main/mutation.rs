//! One-byte mutations of every header byte and of the first bytes of every table of an image
//! qemu made (data, zero, compressed clusters and a snapshot): open, reads and check never
//! panic, never allocate without bound, and a read-only open never writes.

use vdisk_core::testing::open_bytes;

use super::util::{peek64, qemu_create, qemu_io, s, tool};

/// Opens `bytes`; if that works, reads the first cluster, the last sector and runs check.
fn exercise(bytes: Vec<u8>) {
    let Ok(img) = open_bytes(&vdisk_qcow2::DRIVER, bytes, false) else {
        return;
    };
    let size = img.size();
    let mut buf = vec![0u8; 65536.min(size) as usize];
    let _ = img.read_at(&mut buf, 0);
    if size >= 512 {
        let _ = img.read_at(&mut buf[..512], size - 512);
    }
    let _ = img.check();
    let _ = img.details();
    let _ = img.guest_extents(0..size.min(1 << 24));
}

#[test]
fn no_one_byte_mutation_of_the_header_or_the_tables_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.qcow2");
    let path = dir.path().join("m.qcow2");
    qemu_create(&src, "cluster_size=4096", "1M");
    qemu_io(&src, "qcow2", &["write -P 1 0 64k", "write -P 2 512k 4k"]);
    tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            s(&src),
            s(&path),
        ],
    );
    qemu_io(&path, "qcow2", &["write -P 3 8k 8k", "write -z 900k 4k"]);
    tool("qemu-img", &["snapshot", "-c", "s1", s(&path)]);
    qemu_io(&path, "qcow2", &["write -P 4 0 4k"]);
    let pristine = std::fs::read(&path).unwrap();
    let l1 = peek64(&path, 40);
    let reftable = peek64(&path, 48);
    let snapshots = peek64(&path, 64);
    let l2 = peek64(&path, l1) & 0x00ff_ffff_ffff_fe00;
    let mut spots: Vec<u64> = (0..256).collect();
    for table in [l1, reftable, snapshots, l2] {
        spots.extend(table..table + 64);
    }
    for at in spots {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = pristine.clone();
            bytes[at as usize] ^= flip;
            exercise(bytes);
        }
    }
}
