//! Compaction of qemu-made dynamic images through a real file: qemu must find the result
//! clean and identical, and the file must lose exactly the reclaimed blocks.

use std::path::Path;

use vdisk_core::{Access, BlockIndex, BlockState, DiskImage, ErrorKind, MIB, MemFile, Mode};

use super::qemu::make;
use super::util::{
    assert_same_as_raw, check_errors, compact, content, fixture, log_detail, open_path, open_rw,
    read, run,
};

/// Data, real zero data, qemu zero writes and a partially written block, data in the last
/// (partial) block. Returns the commands and how many allocated blocks read as zeros.
fn workload(bs: u64, size: u64) -> Vec<String> {
    vec![
        // Block 0: data. Block 1: real zero data (allocated). Block 2: data in its middle.
        format!("write -P 0x11 0 {bs}"),
        format!("write -P 0 {bs} {bs}"),
        format!("write -P 0x22 {} 4096", 2 * bs + bs / 2),
        // Block 3: written, then overwritten with zeros by a zero write.
        format!("write -P 0x33 {} {bs}", 3 * bs),
        format!("write -z {} {bs}", 3 * bs),
        // Block 4: partly data, then that data overwritten with real zeros.
        format!("write -P 0x44 {} 8192", 4 * bs),
        format!("write -P 0 {} 8192", 4 * bs),
        // Block 6: data; the last (partial) block: data in its last sector.
        format!("write -P 0x66 {} 512", 6 * bs + 512),
        format!("write -P 0x77 {} 512", size - 512),
    ]
}

fn qemu_compaction(bs: u64, size: u64, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let cmds = workload(bs, size);
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let opts = format!("subformat=dynamic,block_size={bs},log_size=1M");
    let (orig, raw) = make(dir.path(), "o.vhdx", &opts, size, &cmds);
    let new = dir.path().join("n.vhdx");
    std::fs::copy(&orig, &new).unwrap();
    let before = std::fs::metadata(&orig).unwrap().len();

    let file = vdisk_core::testing::open_std_file(&new, Access::ReadWrite).unwrap();
    let mut image = open_rw(file).unwrap();
    let allocated_zero: u64 = (0..image.block_count())
        .filter(|&b| {
            matches!(
                image.block_state(BlockIndex(b)).unwrap(),
                BlockState::Allocated { .. }
            ) && read(&*image, b * bs, bs.min(size - b * bs) as usize)
                .iter()
                .all(|&x| x == 0)
        })
        .count() as u64;
    assert!(allocated_zero >= 2, "the workload leaves zero blocks");
    let metadata_end = (image.host_space().unwrap().ranges().iter())
        .filter(|(_, u)| matches!(u, vdisk_core::HostUse::Metadata { .. }))
        .map(|(r, _)| r.end)
        .max()
        .unwrap();
    let allocated = vdisk_core::image_info(&*image).unwrap().allocated_blocks;
    let report = compact(&mut *image, mode).unwrap();
    assert_same_as_raw(&*image, &raw);
    drop(image);

    let after = std::fs::metadata(&new).unwrap().len();
    let expect_freed = if mode == Mode::Prezeroed {
        allocated_zero
    } else {
        0
    };
    assert_eq!(report.blocks_reclaimed, expect_freed, "{report:?}");
    // qemu leaves 4 MiB free between its metadata and the first block; blocks are packed
    // into it where they fit (a 32 MiB block does not fit the 4 MiB gap).
    let packed = metadata_end + (allocated - expect_freed) * bs;
    assert!(
        after == packed || (bs > 4 * MIB && after == packed + 4 * MIB),
        "the surviving blocks are packed after the metadata: {after} vs {packed}"
    );
    assert!(after <= before - expect_freed * bs);
    assert_eq!(report.bytes_after, after);
    qemu_agrees(&new, &orig);
    let image = open_path(&new).unwrap();
    assert_same_as_raw(&*image, &raw);
    assert_eq!(log_detail(&*image), "empty");
    assert!(check_errors(std::fs::read(&new).unwrap()).is_empty());
}

/// `qemu-img check` finds `new` clean and `qemu-img compare` finds it identical to `orig`.
pub fn qemu_agrees(new: &Path, orig: &Path) {
    run("qemu-img", &["check", "-f", "vhdx", new.to_str().unwrap()]);
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "vhdx",
            "-F",
            "vhdx",
            orig.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
    );
}

#[test]
fn prezeroed_1m_blocks_qemu_checks_clean_and_identical() {
    qemu_compaction(MIB, 9 * MIB + 3 * 512, Mode::Prezeroed);
}

#[test]
fn prezeroed_2m_blocks_qemu_checks_clean_and_identical() {
    qemu_compaction(2 * MIB, 20 * MIB - 4096, Mode::Prezeroed);
}

#[test]
fn prezeroed_32m_blocks_qemu_checks_clean_and_identical() {
    qemu_compaction(32 * MIB, 7 * 32 * MIB + 5 * MIB, Mode::Prezeroed);
}

#[test]
fn pretrimmed_on_qemu_images_changes_no_byte_qemu_reads() {
    qemu_compaction(MIB, 9 * MIB + 3 * 512, Mode::Pretrimmed);
    qemu_compaction(2 * MIB, 20 * MIB, Mode::Pretrimmed);
}

/// Offset of the BAT region in the first region table.
fn bat_offset(bytes: &[u8]) -> usize {
    super::util::region_offset(bytes, super::util::BAT_REGION) as usize
}

#[test]
fn trimmed_blocks_with_host_space_are_reclaimed_by_pretrimmed() {
    let dir = tempfile::tempdir().unwrap();
    let bs = MIB;
    let size = 8 * MIB;
    let cmds = [
        "write -P 1 0 1M".to_string(),
        format!("write -P 2 {bs} {bs}"),
        format!("write -P 3 {} {bs}", 2 * bs),
    ];
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (orig, _) = make(
        dir.path(),
        "t.vhdx",
        "subformat=dynamic,block_size=1M",
        size,
        &cmds,
    );
    let mut bytes = std::fs::read(&orig).unwrap();
    // Mark block 1 UNMAPPED (state 3), keeping its FileOffsetMB.
    let e = bat_offset(&bytes) + 8;
    bytes[e] = (bytes[e] & !7) | 3;
    let before = bytes.len() as u64;
    let mem = MemFile::from_bytes(bytes);
    let mut image = open_rw(mem.clone()).unwrap();
    assert!(matches!(
        image.block_state(BlockIndex(1)).unwrap(),
        BlockState::Trimmed { host: Some(_) }
    ));
    let want = content(&*image);
    let report = compact(&mut *image, Mode::Pretrimmed).unwrap();
    assert_eq!(report.blocks_reclaimed_trimmed, 1);
    assert_eq!(image.block_state(BlockIndex(1)).unwrap(), BlockState::Zero);
    assert!(content(&*image) == want);
    drop(image);
    let after = mem.to_vec();
    assert_eq!(after.len() as u64, 4 * MIB + 2 * bs, "{before}");
    let image = open_rw(MemFile::from_bytes(after.clone())).unwrap();
    assert!(content(&*image) == want);
    assert!(check_errors(after).is_empty());
}

#[test]
fn dirty_log_fixture_compacts_to_an_empty_log_and_the_replayed_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "iotest-dirtylog-10G-4M.vhdx");
    let replayed_ro = open_path(&path).unwrap();
    let want = read(&*replayed_ro, 0, 40 * MIB as usize);
    drop(replayed_ro);
    let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
    let mut image = open_rw(file).unwrap();
    // The open writes nothing; the compaction's first write replays the log, and says so.
    assert!(log_detail(&*image).contains("replayed in memory"));
    assert!(image.implicit_changes().is_empty());
    assert!(read(&*image, 0, 40 * MIB as usize) == want);
    compact(&mut *image, Mode::Prezeroed).unwrap();
    assert!(log_detail(&*image).contains("replayed onto the file"));
    assert!(image.implicit_changes()[0].contains("the pending log"));
    assert!(read(&*image, 0, 40 * MIB as usize) == want);
    drop(image);
    let image = open_path(&path).unwrap();
    assert_eq!(log_detail(&*image), "empty");
    let data = read(&*image, 0, 40 * MIB as usize);
    assert!(data == want);
    let end = data.iter().position(|&b| b != 0xa5).unwrap();
    assert_eq!(end as u64, 0x120_0000);
    assert!(check_errors(std::fs::read(&path).unwrap()).is_empty());
    drop(image);
    run("qemu-img", &["check", "-f", "vhdx", path.to_str().unwrap()]);
}

#[test]
fn fixed_images_refuse_block_moving_modes_with_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(
        dir.path(),
        "f.vhdx",
        "subformat=fixed,block_size=1M,block_state_zero=off",
        4 * MIB,
        &["write -P 1 0 4096"],
    );
    let file = vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap();
    let mut image = open_rw(file).unwrap();
    let err = compact(&mut *image, Mode::Prezeroed).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType);
    assert!(err.to_string().contains("--mode retrim"), "{err}");
    for b in 0..4 {
        let state = image.block_state(BlockIndex(b)).unwrap();
        assert!(
            matches!(state, BlockState::Allocated { .. }),
            "block {b}: {state:?}"
        );
    }
}

#[test]
fn read_only_open_refuses_compaction_primitives() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(
        dir.path(),
        "r.vhdx",
        "subformat=dynamic,block_size=1M",
        4 * MIB,
        &["write -P 0 0 4096"],
    );
    let mut image = open_path(&path).unwrap();
    let err = compact(&mut *image, Mode::Prezeroed).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
}

/// Images opened through the driver with `&dyn DiskImage` keep `image_info` working.
#[test]
fn compacted_image_reports_its_new_size() {
    let mem = {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = make(
            dir.path(),
            "i.vhdx",
            "subformat=dynamic,block_size=1M",
            4 * MIB,
            &["write -P 0 0 2M", "write -P 9 2M 1M"],
        );
        MemFile::from_bytes(std::fs::read(path).unwrap())
    };
    let mut image = open_rw(mem.clone()).unwrap();
    compact(&mut *image, Mode::Prezeroed).unwrap();
    let info = vdisk_core::image_info(&*image as &dyn DiskImage).unwrap();
    assert_eq!(info.allocated_blocks, 1);
    assert_eq!(info.file_size, mem.to_vec().len() as u64);
}
