//! Real images made by Hyper-V, Disk2VHD and qemu.

use vdisk_core::{BlockIndex, BlockState, ImageKind, MIB};

use super::util::{fixture, open_path, read};

#[test]
fn hyperv_dynamic_reads_documented_pattern_across_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "iotest-dynamic-1G.vhdx");
    let image = open_path(&path).unwrap();
    assert_eq!(image.size(), 1 << 30);
    assert_eq!(image.kind(), ImageKind::Dynamic);
    assert_eq!(image.sector_size(), 512);
    let at = |off: u64| read(&*image, off, 1)[0];
    assert_eq!(at(0), 0xa5);
    assert_eq!(at(33 * MIB - 1), 0xa5);
    assert_eq!(at(33 * MIB), 0x96);
    assert_eq!(at(66 * MIB - 1), 0x96);
    assert_eq!(at(66 * MIB), 0);
    assert_eq!(at((1 << 30) - 1), 0);
    // A read spanning both boundaries and several blocks.
    let span = read(&*image, 32 * MIB, 36 * MIB as usize);
    assert!(span[..MIB as usize].iter().all(|&b| b == 0xa5));
    assert!(
        span[MIB as usize..34 * MIB as usize]
            .iter()
            .all(|&b| b == 0x96)
    );
    assert!(span[34 * MIB as usize..].iter().all(|&b| b == 0));
    assert!(image.block_state(BlockIndex(0)).unwrap().host().is_some());
    assert!(
        image
            .read_at(&mut [0u8; 2], (1 << 30) - 1)
            .is_err_and(|e| e.kind() == vdisk_core::ErrorKind::OutOfRange)
    );
    assert!(image.check().unwrap().is_empty());
}

#[test]
fn dirty_log_is_replayed_in_memory_and_file_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "iotest-dirtylog-10G-4M.vhdx");
    let before = std::fs::read(&path).unwrap();
    let image = open_path(&path).unwrap();
    // qemu (after `qemu-img check -r all`) reads 0xa5 up to 18 MiB; without the log the BAT
    // maps only 17 MiB (libvhdi, which does not replay, stops there).
    let data = read(&*image, 0, 20 * MIB as usize);
    let end = data.iter().position(|&b| b != 0xa5).unwrap();
    assert_eq!(
        end as u64, 0x120_0000,
        "0xa5 must reach 18 MiB after replay"
    );
    assert!(data[end..].iter().all(|&b| b == 0));
    assert_eq!(
        image.block_state(BlockIndex(17)).unwrap(),
        BlockState::Allocated {
            host: vdisk_core::HostOffset(29 * MIB)
        }
    );
    let details = image.details();
    let log = &details.iter().find(|(k, _)| k == "log").unwrap().1;
    assert!(log.contains("replayed in memory"), "{log}");
    drop(image);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "file bytes changed"
    );
}

#[test]
fn disk2vhd_equal_header_sequence_numbers_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "test-disk2vhd.vhdx");
    let image = open_path(&path).unwrap();
    assert_eq!(image.size(), 256 * MIB);
    let mut buf = vec![0u8; MIB as usize];
    image.read_at(&mut buf, 0).unwrap();
    image.read_at(&mut buf, 255 * MIB).unwrap();
}

#[test]
fn disk2vhd_reads_like_libvhdi() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "test-disk2vhd.vhdx");
    let raw = dir.path().join("d2v.raw");
    super::util::libvhdi_raw(&path, &raw);
    let image = open_path(&path).unwrap();
    super::util::assert_same_as_raw(&*image, &raw);
}

#[test]
fn dirty_log_replayed_in_memory_equals_qemu_replayed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "iotest-dirtylog-10G-4M.vhdx");
    let repaired = dir.path().join("repaired.vhdx");
    std::fs::copy(&path, &repaired).unwrap();
    super::util::run(
        "qemu-img",
        &["check", "-q", "-r", "all", repaired.to_str().unwrap()],
    );
    let ours = open_path(&path).unwrap();
    let theirs = open_path(&repaired).unwrap();
    assert!(!theirs.details().iter().any(|(_, v)| v.contains("replayed")));
    assert_eq!(ours.block_count(), theirs.block_count());
    for i in 0..ours.block_count() {
        assert_eq!(
            ours.block_state(BlockIndex(i)).unwrap(),
            theirs.block_state(BlockIndex(i)).unwrap(),
            "block {i}"
        );
    }
    let n = 32 * MIB as usize;
    assert!(read(&*ours, 0, n) == read(&*theirs, 0, n));
}
