//! Round trips through qemu-made dynamic VHDs: compact in each mode, then ask qemu and libvhdi
//! whether every virtual byte is still the same, and check the file shrank by exactly the
//! footprint of the blocks that read all zero.

use std::path::{Path, PathBuf};

use super::support::vhd::{self, Layout};
use super::support::{
    BLOCK, FOOTPRINT, Snapshot, assert_libvhdi_identical, assert_qemu_identical, assert_qemu_valid,
    assert_report_fields, compact_ok, copy_to, file_len, flag, info_ok, num, qemu_create, qemu_io,
    tempdir, text, vdisk_cmd,
};

/// A qemu-made image with a known pattern and its untouched copy.
pub struct Scenario {
    /// The image to compact.
    pub image: PathBuf,
    /// A byte-for-byte copy taken before any compaction.
    pub pristine: PathBuf,
    /// Virtual size qemu reports.
    pub size: u64,
    /// Blocks that hold host space.
    pub allocated: u64,
    /// Allocated blocks whose content is all zero.
    pub zero_blocks: u64,
}

fn b(i: u64) -> u64 {
    i * BLOCK
}

/// 16 MiB requested; qemu's CHS rounding gives 8 full 2 MiB blocks and a 2048-byte last block.
/// Blocks are first written out of virtual order so host order differs from virtual order.
///
/// | block | content | zero? |
/// |---|---|---|
/// | 0 | 0xaa everywhere | no |
/// | 1 | 0x11, then `write -z` over it | yes |
/// | 2 | 0x22, then `write -P 0` over it | yes |
/// | 3 | 8 KiB of 0x33 in the middle (partial block) | no |
/// | 4 | untouched (unallocated) | - |
/// | 5 | 0x55, first half then zeroed | no |
/// | 6 | one sector of 0x66 then zeroed | yes |
/// | 7 | only its last sector is 0x77 | no |
/// | 8 | last partial block (2048 bytes) of 0x88 | no |
pub fn mixed(dir: &Path) -> Scenario {
    let image = dir.join("mixed.vhd");
    let size = qemu_create(&image, "dynamic", 16 << 20);
    assert_eq!(
        size / BLOCK,
        8,
        "qemu's CHS size for 16 MiB changed: {size}"
    );
    assert!(
        !size.is_multiple_of(BLOCK),
        "want a partial last block, size {size}"
    );
    let tail = size - b(8);
    qemu_io(
        &image,
        &[
            format!("write -P 0x88 {} {tail}", b(8)),
            format!("write -P 0x11 {} {BLOCK}", b(1)),
            format!("write -z {} {BLOCK}", b(1)),
            format!("write -P 0xaa {} {BLOCK}", b(0)),
            format!("write -P 0x22 {} {BLOCK}", b(2)),
            format!("write -P 0 {} {BLOCK}", b(2)),
            format!("write -P 0x33 {} 8192", b(3) + 4096),
            format!("write -P 0x55 {} {BLOCK}", b(5)),
            format!("write -z {} {}", b(5), BLOCK / 2),
            format!("write -P 0x66 {} 512", b(6) + 512),
            format!("write -P 0 {} 512", b(6) + 512),
            format!("write -P 0x77 {} 512", b(8) - 512),
        ],
    );
    let pristine = copy_to(&image, dir, "mixed.pristine.vhd");
    Scenario {
        image,
        pristine,
        size,
        allocated: 8,
        zero_blocks: 3,
    }
}

/// The first block and the last partial block are written and then zeroed, so the zero blocks
/// sit at both ends of the virtual disk and at the start of the host file.
pub fn zeroed_ends(dir: &Path) -> Scenario {
    let image = dir.join("ends.vhd");
    let size = qemu_create(&image, "dynamic", 16 << 20);
    let tail = size - b(8);
    qemu_io(
        &image,
        &[
            format!("write -P 0x01 {} {BLOCK}", b(0)),
            format!("write -z {} {BLOCK}", b(0)),
            format!("write -P 0x99 {} {tail}", b(8)),
            format!("write -P 0 {} {tail}", b(8)),
            format!("write -P 0x44 {} {BLOCK}", b(4)),
            format!("write -P 0x33 {} {}", b(3), BLOCK / 2),
        ],
    );
    let pristine = copy_to(&image, dir, "ends.pristine.vhd");
    Scenario {
        image,
        pristine,
        size,
        allocated: 4,
        zero_blocks: 2,
    }
}

fn unique_id(file: &Path) -> [u8; 16] {
    let bytes = std::fs::read(file).unwrap();
    let l: Layout = vhd::layout(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    l.unique_id
}

/// Checks everything `vdisk info` says about a qemu-made scenario image.
fn assert_info(s: &Scenario, allocated: u64) {
    let info = info_ok(&s.image);
    assert_eq!(text(&info, "format"), "vhd", "{info}");
    assert_eq!(text(&info, "type"), "dynamic", "{info}");
    assert_eq!(num(&info, "virtual_size"), s.size, "qemu's size: {info}");
    assert_eq!(num(&info, "block_size"), BLOCK, "{info}");
    assert_eq!(
        num(&info, "blocks_total"),
        s.size.div_ceil(BLOCK),
        "blocks covering the virtual size: {info}"
    );
    assert_eq!(num(&info, "allocated_blocks"), allocated, "{info}");
    assert_eq!(num(&info, "file_size"), file_len(&s.image), "{info}");
}

/// Compacts `s` in `mode` and checks the whole invariant against the oracles.
fn round_trip(s: &Scenario, mode: &str) {
    let scans_zeros = matches!(mode, "prezeroed" | "full");
    let expect_reclaimed = if scans_zeros { s.zero_blocks } else { 0 };
    let before = file_len(&s.image);
    let id = unique_id(&s.image);
    assert_info(s, s.allocated);

    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&s.image).unwrap());
    let report = compact_ok(&s.image, mode, &[]);
    assert_report_fields(&report);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&s.image).unwrap()),
        inode,
        "compaction is in place: same file (hard links, owner, ACLs kept)"
    );
    let after = file_len(&s.image);
    assert_eq!(text(&report, "format"), "vhd", "{report}");
    assert!(
        text(&report, "file").ends_with(s.image.file_name().unwrap().to_str().unwrap()),
        "report names another file: {report}"
    );
    let reported_mode = text(&report, "mode");
    assert!(
        reported_mode == mode
            || (mode == "full" && reported_mode == "prezeroed")
            || (mode == "quick" && reported_mode == "pretrimmed"),
        "asked for {mode}, report says {reported_mode}"
    );
    assert!(!flag(&report, "dry_run"), "{report}");
    assert_eq!(num(&report, "bytes_before"), before, "{report}");
    assert_eq!(
        num(&report, "bytes_after"),
        after,
        "report vs real size: {report}"
    );
    assert_eq!(
        num(&report, "blocks_reclaimed"),
        expect_reclaimed,
        "{report}"
    );
    assert_eq!(
        num(&report, "blocks_reclaimed_zero"),
        expect_reclaimed,
        "{report}"
    );
    assert_eq!(
        num(&report, "blocks_reclaimed_trimmed"),
        0,
        "VHD has no trim state: {report}"
    );
    assert_eq!(
        after,
        before - expect_reclaimed * FOOTPRINT,
        "{mode}: the file must shrink by exactly {expect_reclaimed} blocks of {FOOTPRINT} bytes"
    );
    if matches!(mode, "full" | "quick") {
        let notes = report["notes"].as_array().unwrap();
        assert!(
            !notes.is_empty(),
            "{mode} without a file-system analyser must say what it did instead: {report}"
        );
    }

    // The oracles: same content through qemu and libvhdi, and a valid image for both.
    assert_qemu_identical(&s.pristine, &s.image);
    assert_qemu_valid(&s.image);
    assert_libvhdi_identical(&s.pristine, &s.image);
    let allocated_after = vhd::check_dynamic(&s.image)
        .unwrap_or_else(|e| panic!("{mode}: compacted image breaks the VHD spec: {e}"));
    assert_eq!(allocated_after, s.allocated - expect_reclaimed);
    assert_info(s, s.allocated - expect_reclaimed);
    assert_eq!(unique_id(&s.image), id, "compaction must keep the UniqueId");
    if expect_reclaimed == 0 {
        Snapshot::of(&s.pristine).assert_unchanged(
            &s.image,
            false,
            &format!("{mode} found nothing to reclaim"),
        );
    }

    // Idempotent: a second run reclaims nothing and changes nothing.
    let first = Snapshot::of(&s.image);
    let again = compact_ok(&s.image, mode, &[]);
    assert_eq!(
        num(&again, "blocks_reclaimed"),
        0,
        "second {mode} run: {again}"
    );
    assert_eq!(num(&again, "blocks_moved"), 0, "second {mode} run: {again}");
    assert_eq!(num(&again, "bytes_before"), after, "{again}");
    assert_eq!(num(&again, "bytes_after"), after, "{again}");
    first.assert_unchanged(&s.image, false, &format!("second {mode} run"));
}

#[test]
fn prezeroed_reclaims_exactly_the_zero_blocks_and_keeps_every_virtual_byte() {
    let dir = tempdir();
    round_trip(&mixed(dir.path()), "prezeroed");
}

#[test]
fn full_without_fs_analyser_reclaims_zero_blocks_and_keeps_every_virtual_byte() {
    let dir = tempdir();
    round_trip(&mixed(dir.path()), "full");
}

#[test]
fn pretrimmed_on_vhd_reclaims_nothing_and_leaves_the_file_byte_identical() {
    let dir = tempdir();
    round_trip(&mixed(dir.path()), "pretrimmed");
}

#[test]
fn quick_without_fs_analyser_reclaims_nothing_and_leaves_the_file_byte_identical() {
    let dir = tempdir();
    round_trip(&mixed(dir.path()), "quick");
}

#[test]
fn prezeroed_reclaims_zeroed_first_and_last_partial_blocks_and_keeps_every_byte() {
    let dir = tempdir();
    round_trip(&zeroed_ends(dir.path()), "prezeroed");
}

#[test]
fn full_reclaims_zeroed_first_and_last_partial_blocks_and_keeps_every_byte() {
    let dir = tempdir();
    round_trip(&zeroed_ends(dir.path()), "full");
}

#[test]
fn empty_qemu_image_compacts_to_itself_in_every_mode() {
    let dir = tempdir();
    let image = dir.path().join("empty.vhd");
    qemu_create(&image, "dynamic", 8 << 20);
    let pristine = Snapshot::of(&image);
    for mode in ["full", "quick", "prezeroed", "pretrimmed"] {
        let r = compact_ok(&image, mode, &[]);
        assert_eq!(num(&r, "blocks_reclaimed"), 0, "{mode}: {r}");
        assert_eq!(
            num(&r, "bytes_after"),
            num(&r, "bytes_before"),
            "{mode}: {r}"
        );
        pristine.assert_unchanged(&image, false, &format!("{mode} on an empty image"));
    }
}

#[test]
fn one_command_on_several_files_prints_one_json_line_per_file_and_compacts_each() {
    let dir = tempdir();
    let a = mixed(dir.path());
    let sub = dir.path().join("b");
    std::fs::create_dir(&sub).unwrap();
    let c = zeroed_ends(&sub);
    let out = super::support::run(
        vdisk_cmd()
            .args(["compact", "--json", "--mode", "prezeroed"])
            .arg(&a.image)
            .arg(&c.image),
    );
    out.ok();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "one JSON object per file: {}", out.stdout);
    for (report, s) in lines.iter().zip([&a, &c]) {
        assert_report_fields(report);
        assert_eq!(num(report, "blocks_reclaimed"), s.zero_blocks, "{report}");
        assert_eq!(num(report, "bytes_after"), file_len(&s.image), "{report}");
        assert_qemu_identical(&s.pristine, &s.image);
    }
}

/// 140 blocks of 512 KiB (a vdisk-created image, so the virtual disk stays small), host order:
/// the 70 even (all-zero) blocks first, then the 70 odd (data) ones, so every data block moves:
/// more moves than one relocation batch (64) holds. Each block is made by writing one sector,
/// so the host file stays sparse.
#[test]
fn more_moves_than_one_batch_keep_every_virtual_byte() {
    let dir = tempdir();
    let image = dir.path().join("many.vhd");
    let (blocks, bs) = (140u64, 512u64 << 10);
    crate::main::support::run(
        vdisk_cmd()
            .args([
                "create",
                "--format",
                "vhd",
                "--type",
                "dynamic",
                "--block-size",
            ])
            .arg(bs.to_string())
            .arg("--size")
            .arg((blocks * bs).to_string())
            .arg(&image),
    )
    .ok();
    let mut cmds: Vec<String> = (0..blocks)
        .step_by(2)
        .map(|i| format!("write -P 0 {} 512", i * bs + 4096))
        .collect();
    cmds.extend(
        (1..blocks)
            .step_by(2)
            .map(|i| format!("write -P {} {} 512", i % 250 + 1, i * bs + 1024)),
    );
    qemu_io(&image, &cmds);
    let pristine = copy_to(&image, dir.path(), "many.pristine.vhd");
    assert_eq!(vhd::check_dynamic(&image), Ok(blocks));
    let before = file_len(&image);
    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), blocks / 2, "{r}");
    assert!(
        num(&r, "blocks_moved") > 64,
        "the layout forces many moves: {r}"
    );
    assert_eq!(file_len(&image), before - blocks / 2 * (bs + 512));
    assert_qemu_identical(&pristine, &image);
    assert_qemu_valid(&image);
    assert_libvhdi_identical(&pristine, &image);
    assert_eq!(vhd::check_dynamic(&image), Ok(blocks / 2));
}
