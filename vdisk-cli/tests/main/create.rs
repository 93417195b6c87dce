//! Images made by `vdisk create` are valid for qemu and libvhdi, read as zeros, and take data
//! written by qemu that then survives compaction.

use std::path::Path;

use super::support::vhd;
use super::support::{
    Libvhdi, assert_libvhdi_identical, assert_qemu_identical, assert_qemu_valid, compact_ok,
    copy_to, file_len, info_ok, libvhdi_read, num, qemu_io, qemu_virtual_size, run, tempdir, text,
    vdisk_cmd,
};

/// Sizes every VHD reader agrees on: exactly representable in CHS geometry (qemu's own
/// rounding of 8 MiB and 10 MiB), so CHS- and CurrentSize-based readers see the same size.
const SIZES: [u64; 2] = [8_390_656, 10_514_432];

fn create(file: &Path, kind: &str, size: u64, block_size: Option<u64>) {
    let mut cmd = vdisk_cmd();
    cmd.args(["create", "--format", "vhd", "--type", kind]);
    if let Some(bs) = block_size {
        cmd.arg("--block-size").arg(bs.to_string());
    }
    cmd.arg("--size").arg(size.to_string()).arg(file);
    run(&mut cmd).ok();
}

fn assert_valid_empty(file: &Path, kind: &str, size: u64, block_size: Option<u64>) {
    let what = format!("{kind} {size} bytes, block {block_size:?}");
    let info = info_ok(file);
    assert_eq!(text(&info, "format"), "vhd", "{what}: {info}");
    assert_eq!(text(&info, "type"), kind, "{what}: {info}");
    assert_eq!(num(&info, "virtual_size"), size, "{what}: {info}");
    if let Some(bs) = block_size {
        assert_eq!(num(&info, "block_size"), bs, "{what}: {info}");
    }
    assert_eq!(qemu_virtual_size(file), size, "{what}: qemu's size");
    assert_qemu_valid(file);
    let out = run(
        std::process::Command::new(super::support::require("qemu-io", "qemu-utils"))
            .args(["-r", "-f", "vpc", "-c"])
            .arg(format!("read -P 0 0 {size}"))
            .arg(file),
    );
    out.ok();
    assert!(
        !out.stdout.contains("Pattern verification failed")
            && out.stdout.contains(&format!("read {size}/{size} bytes")),
        "{what}: qemu-io must read zeros everywhere:\n{}{}",
        out.stdout,
        out.stderr
    );
    let lib: Libvhdi = libvhdi_read(file);
    assert_eq!(lib.media_size, size, "{what}: libvhdi size");
    assert!(
        lib.nonzero_blocks.is_empty(),
        "{what}: libvhdi reads non-zero data"
    );
    let bytes = std::fs::read(file).unwrap();
    let layout = vhd::layout(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    match kind {
        "fixed" => {
            assert_eq!(lib.disk_type, 2, "{what}");
            assert_eq!(layout.disk_type, 2, "{what}");
            assert_eq!(file_len(file), size + 512, "{what}: fixed = data + footer");
        }
        _ => {
            assert_eq!(lib.disk_type, 3, "{what}");
            assert_eq!(vhd::check_dynamic(file), Ok(0), "{what}");
            if let Some(bs) = block_size {
                assert_eq!(layout.block_size, bs, "{what}: dynamic header block size");
            }
            assert!(
                u64::from(layout.entries) >= size.div_ceil(layout.block_size),
                "{what}: BAT too small"
            );
        }
    }
}

#[test]
fn created_fixed_images_pass_qemu_and_libvhdi_and_read_zeros() {
    let dir = tempdir();
    for size in SIZES {
        let file = dir.path().join(format!("fixed-{size}.vhd"));
        create(&file, "fixed", size, None);
        assert_valid_empty(&file, "fixed", size, None);
    }
}

#[test]
fn created_dynamic_images_of_several_block_sizes_pass_qemu_and_libvhdi_and_read_zeros() {
    let dir = tempdir();
    for size in SIZES {
        for bs in [
            None,
            Some(512 << 10),
            Some(1 << 20),
            Some(2 << 20),
            Some(4 << 20),
        ] {
            let file = dir
                .path()
                .join(format!("dyn-{size}-{}.vhd", bs.unwrap_or(0)));
            create(&file, "dynamic", size, bs);
            assert_valid_empty(&file, "dynamic", size, bs);
        }
    }
}

#[test]
fn qemu_data_in_a_vdisk_created_dynamic_image_survives_compaction() {
    let dir = tempdir();
    let bs: u64 = 1 << 20;
    let size = SIZES[1];
    let file = dir.path().join("made-by-vdisk.vhd");
    create(&file, "dynamic", size, Some(bs));
    // Blocks: 0 data, 1 zeroed (write -z), 2 zeroed (-P 0), 3 partial data, 5 data then zeroed
    // in part, 9 last (partial) block with data, 7 written then zeroed.
    let last = size / bs;
    qemu_io(
        &file,
        &[
            format!("write -P 0x5a {} {}", last * bs, size - last * bs),
            format!("write -P 0xa1 0 {bs}"),
            format!("write -P 0x11 {bs} {bs}"),
            format!("write -z {bs} {bs}"),
            format!("write -P 0x22 {} {bs}", 2 * bs),
            format!("write -P 0 {} {bs}", 2 * bs),
            format!("write -P 0x33 {} 4096", 3 * bs + 8192),
            format!("write -P 0x55 {} {bs}", 5 * bs),
            format!("write -z {} 4096", 5 * bs),
            format!("write -P 0x77 {} 512", 7 * bs),
            format!("write -z {} 512", 7 * bs),
        ],
    );
    let pristine = copy_to(&file, dir.path(), "pristine.vhd");
    let before = file_len(&file);
    assert_eq!(vhd::check_dynamic(&file), Ok(7), "qemu allocated 7 blocks");

    let r = compact_ok(&file, "prezeroed", &[]);
    assert_eq!(
        num(&r, "blocks_reclaimed"),
        3,
        "blocks 1, 2 and 7 read zero: {r}"
    );
    let after = file_len(&file);
    assert_eq!(num(&r, "bytes_after"), after, "{r}");
    assert!(after < before, "the file must shrink ({before} -> {after})");
    assert_qemu_identical(&pristine, &file);
    assert_qemu_valid(&file);
    assert_libvhdi_identical(&pristine, &file);
    assert_eq!(vhd::check_dynamic(&file), Ok(4));
    assert_eq!(num(&info_ok(&file), "allocated_blocks"), 4);
}

#[test]
fn create_never_overwrites_an_existing_file() {
    let dir = tempdir();
    let file = dir.path().join("exists.vhd");
    std::fs::write(&file, b"precious data").unwrap();
    let out = run(vdisk_cmd()
        .args([
            "create", "--format", "vhd", "--type", "dynamic", "--size", "8388608",
        ])
        .arg(&file));
    assert_ne!(out.code, 0, "create must refuse an existing file");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious data");
}

#[test]
fn create_rejects_impossible_specs_and_leaves_no_file() {
    let dir = tempdir();
    for (i, (kind, size, bs)) in [
        ("dynamic", "0", None),
        ("dynamic", "8388608", Some("3000000")),
        ("dynamic", "8388608", Some("256")),
        ("fixed", "3298534883328", None),
        ("dynamic", "3298534883328", None),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("bad-{i}.vhd"));
        let mut cmd = vdisk_cmd();
        cmd.args(["create", "--format", "vhd", "--type", kind, "--size", size]);
        if let Some(bs) = bs {
            cmd.args(["--block-size", bs]);
        }
        let out = run(cmd.arg(&file));
        assert_eq!(
            out.code, 2,
            "`{}` is a usage error (bad size or block size)",
            out.cmdline
        );
        assert!(!out.stderr.is_empty(), "`{}` must say why", out.cmdline);
        assert!(!file.exists(), "`{}` left a file behind", out.cmdline);
    }
}

/// A size no CHS geometry represents: every reader must still agree on one virtual size.
#[test]
fn created_image_of_a_non_chs_size_has_one_size_for_vdisk_qemu_and_libvhdi() {
    let dir = tempdir();
    let file = dir.path().join("odd.vhd");
    // Whole sectors (others are refused), but no CHS geometry: 19532 sectors.
    let asked = 10_000_384;
    create(&file, "dynamic", asked, None);
    let size = num(&info_ok(&file), "virtual_size");
    assert_eq!(size, asked, "the size asked for");
    assert_eq!(qemu_virtual_size(&file), size, "qemu");
    assert_eq!(libvhdi_read(&file).media_size, size, "libvhdi");
}

/// A host that cannot hold the file (here a file-size limit, `ulimit -f`, with SIGXFSZ ignored
/// so the write fails with EFBIG instead of killing the process) is "no space": exit 7, and
/// the partly written file is removed.
#[test]
fn create_fixed_beyond_the_hosts_file_size_limit_exits_7_and_leaves_no_file() {
    let dir = tempdir();
    let file = dir.path().join("big-fixed.vhd");
    let script = format!(
        "trap '' XFSZ; ulimit -f 2048; exec '{}' create --format vhd --type fixed --size 8388608 '{}'",
        env!("CARGO_BIN_EXE_vdisk"),
        file.display()
    );
    let out = run(
        std::process::Command::new(super::support::require("sh", "dash"))
            .arg("-c")
            .arg(script),
    );
    out.expect_code(7);
    assert!(!out.stderr.is_empty(), "say why");
    assert!(!file.exists(), "the partly created file must be removed");
}
