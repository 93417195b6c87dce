//! Images made by Disk2VHD, Hyper-V, Virtual PC and qemu on Windows (tests/fixtures/real):
//! sizes as the fixtures README gives them, compaction results, and differencing disks (one
//! without its parent, one over image.vhd).

use std::path::Path;

use super::support::vhd;
use super::support::{
    EXIT_INVALID, MIB_4, Snapshot, assert_libvhdi_identical, assert_qemu_identical,
    assert_qemu_opens, assert_qemu_valid, compact_ok, copy_to, file_len, fixture, info_ok,
    libvhdi_read, libvhdi_read_prefix, num, run, tempdir, text, vdisk_cmd, vdisk_compact,
};

/// 514,560 sectors (fixtures README).
const D2V_SIZE: u64 = 514_560 * 512;
/// 266,338,304 sectors by CurrentSize (fixtures README).
const HYPERV_SIZE: u64 = 266_338_304 * 512;
/// Virtual PC image: 266,334,240 sectors by CHS, 266,338,304 by CurrentSize (README).
const VPC_SIZES: [u64; 2] = [266_334_240 * 512, 266_338_304 * 512];
/// image.vhd: 102 KiB (README), 104,448 bytes.
const IMAGE_SIZE: u64 = 104_448;

fn info(file: &Path) -> serde_json::Value {
    let out = run(vdisk_cmd().args(["info", "--json"]).arg(file));
    out.ok();
    out.json()
}

#[test]
fn fixture_sizes_and_types_match_the_readme() {
    let dir = tempdir();
    let d2v = info(&fixture("d2v-zerofilled.vhd", dir.path()));
    assert_eq!(num(&d2v, "virtual_size"), D2V_SIZE, "{d2v}");
    assert_eq!(text(&d2v, "type"), "dynamic", "{d2v}");
    assert_eq!(
        num(&d2v, "allocated_blocks"),
        126,
        "every block is allocated: {d2v}"
    );

    let hv = info(&fixture("hyperv2012r2-dynamic.vhd", dir.path()));
    assert_eq!(num(&hv, "virtual_size"), HYPERV_SIZE, "{hv}");
    assert_eq!(num(&hv, "allocated_blocks"), 0, "{hv}");

    let vpc = info(&fixture("virtualpc-dynamic.vhd", dir.path()));
    assert!(
        VPC_SIZES.contains(&num(&vpc, "virtual_size")),
        "Virtual PC image is sized by CHS or CurrentSize, one of {VPC_SIZES:?}: {vpc}"
    );

    let ext2_path = fixture("ext2.vhd", dir.path());
    let ext2 = info(&ext2_path);
    assert_eq!(
        num(&ext2, "virtual_size"),
        libvhdi_read_prefix(&ext2_path, 0).media_size,
        "ext2.vhd: vdisk and libvhdi disagree on the size: {ext2}"
    );
    for v in [&d2v, &hv, &vpc, &ext2] {
        assert_eq!(text(v, "format"), "vhd", "{v}");
        assert_eq!(num(v, "block_size"), 2 << 20, "{v}");
    }
}

/// image.vhd (qemu on Windows) carries a wrong footer checksum in both copies (stored
/// 0xfffff683; the spec's sum gives 0xffffef25). qemu refuses it ("Incorrect header checksum"),
/// libvhdi reads it. vdisk may read it (README: 102 KiB) or refuse it as invalid, but must
/// never compact it into something that reads differently.
#[test]
fn image_vhd_with_bad_footer_checksum_is_read_at_102_kib_or_refused_as_invalid() {
    let dir = tempdir();
    let image = fixture("image.vhd", dir.path());
    let bytes = std::fs::read(&image).unwrap();
    assert!(
        vhd::layout(&bytes).is_err_and(|e| e.contains("checksum")),
        "the fixture's footer checksum is known to be wrong"
    );
    let out = run(vdisk_cmd().args(["info", "--json"]).arg(&image));
    if out.code == 0 {
        assert_eq!(
            num(&out.json(), "virtual_size"),
            IMAGE_SIZE,
            "{}",
            out.stdout
        );
    } else {
        out.expect_code(EXIT_INVALID);
        let all = format!("{}{}", out.stdout, out.stderr).to_lowercase();
        assert!(all.contains("checksum"), "say what is wrong: {all}");
    }
    let before = libvhdi_read(&image);
    let pristine = Snapshot::of(&image);
    let out = vdisk_compact(&image, "prezeroed", &[]);
    if out.code == 0 {
        assert_eq!(
            libvhdi_read(&image),
            before,
            "compaction changed what libvhdi reads"
        );
    } else {
        out.expect_code(EXIT_INVALID);
        pristine.assert_unchanged(&image, true, "refused compaction of image.vhd");
    }
}

#[test]
fn disk2vhd_zero_filled_image_compacts_to_a_few_kib_and_still_reads_all_zeros() {
    let dir = tempdir();
    let image = fixture("d2v-zerofilled.vhd", dir.path());
    let before = libvhdi_read(&image);
    assert_eq!(before.media_size, D2V_SIZE);
    assert!(before.nonzero_blocks.is_empty(), "fixture reads all zero");
    let pristine = copy_to(&image, dir.path(), "pristine.vhd");

    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), 126, "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_zero"), 126, "{r}");
    let len = file_len(&image);
    assert_eq!(num(&r, "bytes_after"), len, "{r}");
    assert!(len <= 8 << 10, "expected a few KiB, got {len} bytes");

    let after = libvhdi_read(&image);
    assert_eq!(after, before, "libvhdi reads the same size and all zeros");
    assert_qemu_identical(&pristine, &image);
    assert_qemu_valid(&image);
    assert_eq!(vhd::check_dynamic(&image), Ok(0));
    assert_eq!(num(&info(&image), "allocated_blocks"), 0);
}

/// An empty image has no block to reclaim; vdisk may only drop slack between the metadata and
/// the footer (Hyper-V pads to 4 KiB): everything before the new footer and the footer itself
/// stay as they were, and later runs change nothing.
fn empty_big_fixture_compacts(name: &str) {
    let dir = tempdir();
    let image = fixture(name, dir.path());
    let pristine = copy_to(&image, dir.path(), "pristine.vhd");
    let original = std::fs::read(&image).unwrap();
    let before = libvhdi_read_prefix(&image, MIB_4);

    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), 0, "{name}: {r}");
    let len = file_len(&image);
    assert_eq!(num(&r, "bytes_after"), len, "{name}: {r}");
    assert!(
        len <= original.len() as u64,
        "{name}: the file grew to {len}"
    );
    let now = std::fs::read(&image).unwrap();
    let footer = vhd::idx(len - vhd::FOOTER_LEN);
    assert!(
        now[..footer] == original[..footer],
        "{name}: bytes before the footer changed"
    );
    assert!(
        now[footer..] == original[original.len() - 512..],
        "{name}: the footer changed"
    );
    let first = Snapshot::of(&image);
    for mode in ["prezeroed", "full", "pretrimmed", "quick"] {
        let r = compact_ok(&image, mode, &[]);
        assert_eq!(num(&r, "blocks_reclaimed"), 0, "{name} {mode}: {r}");
        assert_eq!(num(&r, "bytes_after"), len, "{name} {mode}: {r}");
    }
    first.assert_unchanged(&image, false, &format!("{name}: runs after the first"));
    let after = libvhdi_read_prefix(&image, MIB_4);
    assert_eq!(after, before, "{name}: libvhdi view changed");
    assert!(after.nonzero_blocks.is_empty());
    assert_qemu_opens(&image, MIB_4);
    assert_qemu_identical(&pristine, &image);
}

#[test]
fn hyperv_empty_127_gib_image_compacts_successfully_and_stays_readable() {
    empty_big_fixture_compacts("hyperv2012r2-dynamic.vhd");
}

#[test]
fn virtualpc_empty_chs_sized_image_compacts_successfully_and_stays_readable() {
    empty_big_fixture_compacts("virtualpc-dynamic.vhd");
}

#[test]
fn ext2_fixture_compacts_with_every_byte_kept_for_qemu_and_libvhdi() {
    let dir = tempdir();
    let image = fixture("ext2.vhd", dir.path());
    let pristine = copy_to(&image, dir.path(), "pristine.vhd");
    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "bytes_after"), file_len(&image), "{r}");
    assert_qemu_identical(&pristine, &image);
    assert_qemu_valid(&image);
    assert_libvhdi_identical(&pristine, &image);
}

#[test]
fn fat_differential_without_its_parent_fails_naming_the_stored_parent_path() {
    let dir = tempdir();
    // fat-differential.vhd: valid checksums, parent not shipped.
    let fat = fixture("fat-differential.vhd", dir.path());
    let pristine = Snapshot::of(&fat);
    let parent = r"C:\Projects\dfvfs\test_data\fat-parent.vhd";
    for mode in ["prezeroed", "full", "pretrimmed", "quick"] {
        let out = vdisk_compact(&fat, mode, &[]);
        assert_eq!(
            out.code, 9,
            "`{}`\n{}{}",
            out.cmdline, out.stdout, out.stderr
        );
        let report = out.json();
        assert_eq!(report["error"]["kind"], "not-found", "{report}");
        let message = report["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(parent), "name the parent: {report}");
        pristine.assert_unchanged(&fat, true, &format!("{mode} on a child without parent"));
    }
    let out = run(vdisk_cmd().args(["info"]).arg(&fat));
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(out.stderr.contains(parent), "{}", out.stderr);
}

/// image-differential.vhd (dfvfs) sits on image.vhd; its footer and header checksums are
/// stale from the dynamic image it was converted from (accepted with warnings). It compacts,
/// and libvhdi reads the chain the same afterwards.
#[test]
fn image_differential_compacts_and_reads_the_same_through_its_parent() {
    let dir = tempdir();
    let parent = fixture("image.vhd", dir.path());
    let child = fixture("image-differential.vhd", dir.path());
    let read = || {
        let out = run(std::process::Command::new(super::support::require(
            "/usr/bin/python3",
            "python3-libvhdi",
        ))
        .arg("-c")
        .arg(
            "import sys, pyvhdi, hashlib\n\
             c = pyvhdi.file(); c.open(sys.argv[1]); p = pyvhdi.file(); p.open(sys.argv[2])\n\
             c.set_parent(p)\n\
             print(hashlib.sha256(c.read_buffer_at_offset(c.get_media_size(), 0)).hexdigest())",
        )
        .arg(&child)
        .arg(&parent));
        out.ok();
        out.stdout
    };
    let before = read();
    let info = info_ok(&child);
    assert_eq!(text(&info, "type"), "differencing", "{info}");
    assert!(
        text(&info["chain"][0], "path").ends_with("image.vhd"),
        "{info}"
    );
    for mode in ["prezeroed", "pretrimmed", "full"] {
        compact_ok(&child, mode, &[]);
        assert_eq!(read(), before, "{mode} changed what libvhdi reads");
    }
}

/// Disk2VHD places blocks with gaps and out of order. With data written (by qemu-io) into
/// three of its blocks, compaction keeps those bytes and drops the other 123 blocks.
#[test]
fn disk2vhd_layout_with_data_in_three_blocks_keeps_every_byte() {
    let dir = tempdir();
    let image = fixture("d2v-zerofilled.vhd", dir.path());
    let mb = 1u64 << 20;
    crate::main::support::qemu_io(
        &image,
        &[
            format!("write -P 0x31 {} 4096", 2 * mb + 512),
            format!("write -P 0x35 {} {}", 10 * mb, 2 * mb),
            format!("write -P 0x40 {} 512", 40 * mb + 2 * mb - 512),
        ],
    );
    let pristine = copy_to(&image, dir.path(), "pristine.vhd");
    let prefix = 48 * mb;
    let before = libvhdi_read_prefix(&image, prefix);
    assert_eq!(before.nonzero_blocks, vec![1, 5, 20]);

    let r = compact_ok(&image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), 123, "{r}");
    assert_eq!(num(&r, "bytes_after"), file_len(&image), "{r}");
    assert_qemu_identical(&pristine, &image);
    assert_qemu_valid(&image);
    assert_eq!(vhd::check_dynamic(&image), Ok(3));
    let after = libvhdi_read_prefix(&image, prefix);
    assert_eq!(after, before, "libvhdi: same first 48 MiB");
}

/// VHDX fixtures (README sizes; libvhdi as the second opinion). Read-only commands must not
/// change the file, not even replay the dirty log of iotest-dirtylog into it.
/// (The README calls that image "4M"; qemu, libvhdi and vdisk all see 1 MiB blocks.)
#[test]
fn vhdx_fixtures_report_readme_sizes_and_read_only_commands_change_nothing() {
    let dir = tempdir();
    let mut dry_runs = Vec::new();
    for (name, size) in [
        ("iotest-dynamic-1G.vhdx", 1u64 << 30),
        ("iotest-dirtylog-10G-4M.vhdx", 10 << 30),
        ("test-disk2vhd.vhdx", 256 << 20),
    ] {
        let file = fixture(name, dir.path());
        let pristine = Snapshot::of(&file);
        let v = info(&file);
        assert_eq!(text(&v, "format"), "vhdx", "{name}: {v}");
        assert_eq!(num(&v, "virtual_size"), size, "{name}: README size: {v}");
        assert_eq!(
            libvhdi_read_prefix(&file, 0).media_size,
            size,
            "{name}: libvhdi"
        );
        let check = run(vdisk_cmd().args(["check", "--json"]).arg(&file));
        check.ok();
        let dry = vdisk_compact(&file, "prezeroed", &["--dry-run"]);
        pristine.assert_unchanged(&file, true, &format!("{name}: info, check, dry run"));
        // A dry run plans (0) or says VHDX compaction is not supported yet (5); the file is
        // writable, so "read-only" (6) would be wrong.
        if !matches!(dry.code, 0 | 5) {
            dry_runs.push(format!("{name}: exit {}: {}", dry.code, dry.stdout.trim()));
        }
    }
    assert!(dry_runs.is_empty(), "dry runs:\n{}", dry_runs.join("\n"));
}
