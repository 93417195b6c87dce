//! More compaction cases: header updates, real fixtures, retrim, updates split over log
//! entries, and primitives refusing bad input.

use std::path::Path;

use vdisk_core::{Access, BlockIndex, BlockState, DiskImage, ErrorKind, MIB, MemFile, Mode};

use super::compact::qemu_agrees;
use super::qemu::make;
use super::util::{
    assert_same_as_raw, check_errors, compact, content, fixture, log_detail, open_path, open_rw,
    qemu_create, read, run,
};

/// (sequence number, FileWriteGuid, DataWriteGuid, LogGuid) of the header copy at `at`.
fn header_fields(bytes: &[u8], at: usize) -> (u64, Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
        bytes[at + 16..at + 32].to_vec(),
        bytes[at + 32..at + 48].to_vec(),
        bytes[at + 48..at + 64].to_vec(),
    )
}

/// The current header: the copy with the higher sequence number.
fn current_header(bytes: &[u8]) -> (u64, Vec<u8>, Vec<u8>, Vec<u8>) {
    let a = header_fields(bytes, 0x10000);
    let b = header_fields(bytes, 0x20000);
    if a.0 >= b.0 { a } else { b }
}

#[test]
fn compaction_changes_file_write_guid_once_and_keeps_data_write_guid() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(
        dir.path(),
        "g.vhdx",
        "subformat=dynamic,block_size=1M",
        6 * MIB,
        &[
            "write -P 0 0 1M",
            "write -P 3 1M 1M",
            "write -P 0 2M 1M",
            "write -P 4 5M 4k",
        ],
    );
    let before = std::fs::read(&path).unwrap();
    let (seq0, fwg0, dwg0, log0) = current_header(&before);
    assert_eq!(log0, vec![0; 16]);
    let mem = MemFile::from_bytes(before.clone());
    let mut image = open_rw(mem.clone()).unwrap();
    // Planning (a dry run) writes nothing.
    {
        use vdisk_core::{CancelToken, CompactOptions, Compactor, GenericCompactor, NoProgress};
        GenericCompactor
            .plan(
                &*image,
                &CompactOptions::new(Mode::Prezeroed),
                &NoProgress,
                &CancelToken::new(),
            )
            .unwrap();
    }
    assert!(mem.to_vec() == before, "a plan alone changes nothing");
    compact(&mut *image, Mode::Prezeroed).unwrap();
    drop(image);
    let after = mem.to_vec();
    let (seq1, fwg1, dwg1, log1) = current_header(&after);
    assert!(
        seq1 > seq0 + 1,
        "headers were updated through the log's use"
    );
    assert_ne!(fwg1, fwg0, "a writing session changes the FileWriteGuid");
    assert_eq!(dwg1, dwg0, "compaction does not change what the disk reads");
    assert_eq!(log1, vec![0; 16], "the log is empty at the end");
    // Both copies are valid and the older one has the previous sequence number.
    let (sa, fa, ..) = header_fields(&after, 0x10000);
    let (sb, fb, ..) = header_fields(&after, 0x20000);
    assert_eq!(sa.abs_diff(sb), 1);
    assert_eq!(
        fa, fb,
        "the FileWriteGuid changed once, before the first write"
    );
    assert!(check_errors(after).is_empty());
}

#[test]
fn retrim_of_a_fixed_image_punches_zero_blocks_and_keeps_content() {
    let dir = tempfile::tempdir().unwrap();
    let (path, raw) = make(
        dir.path(),
        "f.vhdx",
        "subformat=fixed,block_size=1M,block_state_zero=off",
        6 * MIB,
        &["write -P 7 1M 4k", "write -P 8 4M 1M"],
    );
    // qemu leaves a fixed image's unwritten blocks as host holes, which retrim has nothing to
    // give back from: rewrite the file so every byte holds host space, as a fixed disk that
    // was used does.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let orig = dir.path().join("orig.vhdx");
    std::fs::copy(&path, &orig).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let mut image =
        open_rw(vdisk_core::testing::open_std_file(&path, Access::ReadWrite).unwrap()).unwrap();
    assert_eq!(image.kind(), vdisk_core::ImageKind::Fixed);
    let report = compact(&mut *image, Mode::Retrim).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 4);
    assert_eq!(report.bytes_punched, 4 * MIB);
    let again = compact(&mut *image, Mode::Retrim).unwrap();
    assert_eq!(
        (again.blocks_reclaimed, again.bytes_punched),
        (0, 0),
        "a second retrim finds its own holes and gives nothing back again: {again:?}"
    );
    assert_same_as_raw(&*image, &raw);
    drop(image);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    qemu_agrees(&path, &orig);
}

/// The real images (Hyper-V's and Disk2VHD's, whose two headers are identical copies) compact
/// to files qemu finds clean and identical, and that read the same for us.
#[test]
fn real_fixtures_compact_clean_and_identical() {
    for name in ["iotest-dynamic-1G.vhdx", "test-disk2vhd.vhdx"] {
        let dir = tempfile::tempdir().unwrap();
        let orig = fixture(dir.path(), name);
        let new = dir.path().join("n.vhdx");
        std::fs::copy(&orig, &new).unwrap();
        let model = content(&*open_path(&orig).unwrap());
        let mut image =
            open_rw(vdisk_core::testing::open_std_file(&new, Access::ReadWrite).unwrap()).unwrap();
        let report = compact(&mut *image, Mode::Prezeroed).unwrap();
        assert!(content(&*image) == model, "{name}: in-memory view");
        drop(image);
        let image = open_path(&new).unwrap();
        assert!(content(&*image) == model, "{name}: reopened");
        assert_eq!(log_detail(&*image), "empty", "{name}");
        assert_eq!(
            std::fs::metadata(&new).unwrap().len(),
            report.bytes_after,
            "{name}"
        );
        assert!(
            check_errors(std::fs::read(&new).unwrap()).is_empty(),
            "{name}"
        );
        qemu_agrees(&new, &orig);
        eprintln!(
            "{name}: {} -> {} bytes",
            report.bytes_before, report.bytes_after
        );
    }
}

/// Retrim of a dynamic image frees zero blocks in place (ZERO in the BAT) and punches their
/// old space; nothing moves and the file keeps its length.
#[test]
fn retrim_of_a_dynamic_image_frees_and_punches_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, raw) = make(
        dir.path(),
        "d.vhdx",
        "subformat=dynamic,block_size=1M",
        6 * MIB,
        &["write -P 0 0 2M", "write -P 5 2M 1M", "write -P 0 3M 1M"],
    );
    let new = dir.path().join("n.vhdx");
    std::fs::copy(&orig, &new).unwrap();
    let len = std::fs::metadata(&new).unwrap().len();
    let mut image =
        open_rw(vdisk_core::testing::open_std_file(&new, Access::ReadWrite).unwrap()).unwrap();
    let report = compact(&mut *image, Mode::Retrim).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 3);
    assert_eq!(image.block_state(BlockIndex(0)).unwrap(), BlockState::Zero);
    assert_same_as_raw(&*image, &raw);
    drop(image);
    assert_eq!(std::fs::metadata(&new).unwrap().len(), len);
    qemu_agrees(&new, &orig);
}

/// More changed BAT pages than one log entry may carry (half of a 1 MiB log): the update is
/// split over several entries, each applied before the next is written.
#[test]
fn bat_updates_larger_than_one_log_entry_are_split() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB blocks: one BAT page maps 512 entries (4096 per chunk plus a bitmap entry), so
    // a zero block every 512 MiB changes one page each: 140 pages.
    let size = 70u64 << 30;
    let mut cmds: Vec<String> = (0..140u64)
        .map(|i| format!("write -P 0 {} 4k", i * 512 * MIB))
        .collect();
    cmds.push(format!("write -P 9 {} 4k", 139 * 512 * MIB + MIB));
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (orig, _) = make_no_raw(
        dir.path(),
        "big.vhdx",
        "subformat=dynamic,block_size=1M",
        size,
        &cmds,
    );
    let new = dir.path().join("n.vhdx");
    std::fs::copy(&orig, &new).unwrap();
    let mut image =
        open_rw(vdisk_core::testing::open_std_file(&new, Access::ReadWrite).unwrap()).unwrap();
    let report = compact(&mut *image, Mode::Prezeroed).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 140);
    let at = 139 * 512 * MIB + MIB;
    assert_eq!(read(&*image, at, 4096), vec![9; 4096]);
    drop(image);
    assert_eq!(std::fs::metadata(&new).unwrap().len(), 5 * MIB);
    let image = open_path(&new).unwrap();
    assert_eq!(read(&*image, at, 4096), vec![9; 4096]);
    assert_eq!(log_detail(&*image), "empty");
    drop(image);
    qemu_agrees(&new, &orig);
}

/// Like `make`, without the raw copy (for huge sparse disks).
fn make_no_raw(
    dir: &Path,
    name: &str,
    opts: &str,
    size: u64,
    cmds: &[&str],
) -> (std::path::PathBuf, ()) {
    let path = dir.join(name);
    let p = path.to_str().unwrap();
    qemu_create(p, opts, &size.to_string());
    let mut args = vec!["-f", "vhdx"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(p);
    run("qemu-io", &args);
    (path, ())
}

#[test]
fn primitives_refuse_bad_moves_and_blocks_changing_nothing() {
    use vdisk_core::{HostOffset, Relocation};
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(
        dir.path(),
        "p.vhdx",
        "subformat=dynamic,block_size=1M",
        4 * MIB,
        &["write -P 1 0 4k", "write -P 2 1M 4k"],
    );
    let before = std::fs::read(&path).unwrap();
    let mem = MemFile::from_bytes(before.clone());
    let mut image = open_rw(mem.clone()).unwrap();
    let host = |image: &dyn DiskImage, b| image.block_state(BlockIndex(b)).unwrap().host().unwrap();
    let (h0, h1) = (host(&*image, 0), host(&*image, 1));
    let c = image.as_compactable().unwrap();
    let bad = [
        // Onto the metadata (the BAT and metadata regions sit at 2 and 3 MiB).
        Relocation {
            block: BlockIndex(1),
            from: h1,
            to: HostOffset(2 * MIB),
        },
        // Upwards.
        Relocation {
            block: BlockIndex(0),
            from: h0,
            to: HostOffset(h1.0 + MIB),
        },
        // Unaligned.
        Relocation {
            block: BlockIndex(1),
            from: h1,
            to: HostOffset(4 * MIB + 512),
        },
        // The block is not where the move says.
        Relocation {
            block: BlockIndex(1),
            from: h0,
            to: HostOffset(4 * MIB),
        },
    ];
    for m in bad {
        let err = c.relocate(&[m], &|| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "{m:?}: {err}");
    }
    let err = c
        .deallocate(&[BlockIndex(4)], vdisk_core::FreeAs::Zero)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    let err = c.truncate(4 * MIB).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    drop(image);
    assert!(mem.to_vec() == before, "nothing was written");
}
