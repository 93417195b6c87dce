//! Format confusion driven by guest data (issue 12, class 1). A file is read as a format only
//! from bytes that format owns and no guest can write: a VHDX's last block is guest data, and
//! so is a fixed VHD's first sector. Every image here is made by qemu-img, its guest data
//! written by qemu-io (`write -s`), and judged by qemu-img check and compare.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::support::vhd::checksum;
use super::support::{
    EXIT_INVALID, assert_qemu_checked_same, file_len, info_ok, qemu_create_as, qemu_create_vhdx,
    qemu_img, qemu_io_as, run, tempdir, text, vdisk, vdisk_cmd,
};

const MIB: u64 = 1 << 20;

/// Writes `bytes` into the guest of `file` at `offset`, as the guest would (qemu-io).
#[track_caller]
fn guest_write(format: &str, file: &Path, offset: u64, bytes: &[u8]) {
    let src = file.with_extension(format!("guest-{offset}.bin"));
    std::fs::write(&src, bytes).unwrap();
    qemu_io_as(
        format,
        file,
        &[format!(
            "write -s {} {offset} {}",
            src.display(),
            bytes.len()
        )],
    );
    std::fs::remove_file(&src).unwrap();
}

fn be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A sealed VHD footer: `disk_type` 2 or 3, `data_offset`, `size`.
fn vhd_footer(disk_type: u32, data_offset: u64, size: u64) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    be32(&mut f, 8, 2);
    be32(&mut f, 12, 0x0001_0000);
    be64(&mut f, 16, data_offset);
    f[28..32].copy_from_slice(b"vpc ");
    f[36..40].copy_from_slice(b"Wi2k");
    be64(&mut f, 40, size);
    be64(&mut f, 48, size);
    be32(&mut f, 60, disk_type);
    let sum = checksum(&f, 64);
    be32(&mut f, 64, sum);
    f
}

/// A dynamic VHDX (1 MiB blocks, qemu-made): block 0 data, block 1 zeros, and block 3
/// allocated last, so it ends the file. Returns the file and the host offset of block 3.
fn vhdx_with_last_block(dir: &Path) -> (PathBuf, u64) {
    let file = dir.join("guest.vhdx");
    qemu_create_vhdx(&file, "block_size=1M,subformat=dynamic", 8 * MIB);
    qemu_io_as(
        "vhdx",
        &file,
        &[
            "write -P 0x11 0 1M".into(),
            "write -P 0 1M 1M".into(),
            "write -P 0x22 3M 1M".into(),
        ],
    );
    let len = file_len(&file);
    let bytes = std::fs::read(&file).unwrap();
    let last = usize::try_from(len - MIB).unwrap();
    assert!(
        bytes[last..].iter().all(|&b| b == 0x22),
        "block 3 is the last MiB of the file"
    );
    (file, len - MIB)
}

/// The attack: the guest fills the block that ends the VHDX with a dynamic VHD footer
/// (at the end of the file), a dynamic header and a two-entry table. vdisk used to read the
/// file as that VHD and truncate the VHDX. The footer at the end is guest data: the VHDX's own
/// signature at offset 0 wins, for info, check and compact, and qemu still reads the same.
#[test]
fn a_guest_written_vhd_footer_at_the_end_of_a_vhdx_does_not_make_it_a_vhd() {
    let dir = tempdir();
    let (file, host) = vhdx_with_last_block(dir.path());
    let mut block = vec![0u8; usize::try_from(MIB).unwrap()];
    // Dynamic header at the block's host offset, table right after it, footer at the end.
    let h = &mut block[..1024];
    h[..8].copy_from_slice(b"cxsparse");
    be64(h, 8, u64::MAX);
    be64(h, 16, host + 1024);
    be32(h, 24, 0x0001_0000);
    be32(h, 28, 2);
    be32(h, 32, 2 << 20);
    let sum = checksum(h, 36);
    be32(h, 36, sum);
    block[1024..1032].fill(0xff);
    let footer = vhd_footer(3, host, 4 * MIB);
    block[usize::try_from(MIB - 512).unwrap()..].copy_from_slice(&footer);
    guest_write("vhdx", &file, 3 * MIB, &block);
    let tail = std::fs::read(&file).unwrap();
    assert_eq!(
        &tail[tail.len() - 512..],
        &footer[..],
        "the fake footer ends the file"
    );
    let pristine = dir.path().join("pristine.vhdx");
    std::fs::copy(&file, &pristine).unwrap();

    assert_eq!(text(&info_ok(&file), "format"), "vhdx");
    let check = run(vdisk_cmd().args(["check", "--json"]).arg(&file));
    check.ok();
    assert_eq!(text(&check.json(), "format"), "vhdx");
    for mode in ["prezeroed", "full"] {
        let out = vdisk(["compact", "--json", "--mode", mode, file.to_str().unwrap()]);
        out.ok();
        assert_eq!(text(&out.json(), "format"), "vhdx", "{mode}");
        assert_qemu_checked_same("vhdx", &file, &pristine);
    }
    assert!(
        file_len(&file) < file_len(&pristine),
        "the zero block was reclaimed"
    );
}

/// A guest can also end a VHDX with a fixed-VHD footer whose size matches the file exactly:
/// then the file really reads two ways. It is refused (exit 4, both readings named, the file
/// byte-identical) until `--format` says which, and `--format vhdx` compacts it correctly.
#[test]
fn a_vhdx_ending_in_a_valid_fixed_vhd_footer_is_refused_as_ambiguous_until_format_is_named() {
    let dir = tempdir();
    let (file, _) = vhdx_with_last_block(dir.path());
    let len = file_len(&file);
    guest_write(
        "vhdx",
        &file,
        4 * MIB - 512,
        &vhd_footer(2, u64::MAX, len - 512),
    );
    let pristine = dir.path().join("pristine.vhdx");
    std::fs::copy(&file, &pristine).unwrap();
    let before = std::fs::read(&file).unwrap();
    for args in [
        &["info"][..],
        &["check"][..],
        &["compact", "--mode", "prezeroed"][..],
        &["compact", "--mode", "retrim"][..],
        &["compact", "--dry-run"][..],
    ] {
        let out = run(vdisk_cmd().args(args).arg(&file));
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, EXIT_INVALID, "{args:?}: {all}");
        assert!(
            all.contains("--format vhd") && all.contains("--format vhdx"),
            "{args:?} says how to choose: {all}"
        );
        assert!(
            std::fs::read(&file).unwrap() == before,
            "{args:?} changed the file"
        );
    }
    let out = run(vdisk_cmd()
        .args([
            "compact",
            "--json",
            "--format",
            "vhdx",
            "--mode",
            "prezeroed",
        ])
        .arg(&file));
    out.ok();
    assert_eq!(text(&out.json(), "format"), "vhdx");
    assert_qemu_checked_same("vhdx", &file, &pristine);
}

/// A qemu-made fixed VHD of `size` whose guest wrote `guest` at offset 0.
fn fixed_vhd_with_guest_head(dir: &Path, name: &str, size: &str, guest: &[u8]) -> PathBuf {
    let file = dir.join(name);
    qemu_create_as(&file, "vpc", "subformat=fixed", size);
    guest_write("vpc", &file, 0, guest);
    file
}

/// The reverse: a fixed VHD whose guest holds a whole VHDX (signature, headers, region
/// tables, metadata) from offset 0, as a nested VM's disk might. Offset 0 is guest data in a
/// fixed VHD, and the footer that ends the file proves itself, so neither reading can be
/// ruled out: it is refused, untouched, and never opened as a VHDX behind the user's back;
/// `--format vhd` opens it as the fixed VHD it is.
#[test]
fn a_fixed_vhd_whose_guest_wrote_a_vhdx_at_offset_0_is_never_opened_as_a_vhdx() {
    let dir = tempdir();
    let inner = dir.path().join("inner.vhdx");
    qemu_create_vhdx(&inner, "block_size=1M", MIB);
    let guest = std::fs::read(&inner).unwrap();
    let file = fixed_vhd_with_guest_head(dir.path(), "fixed.vhd", "16M", &guest);
    let before = std::fs::read(&file).unwrap();
    assert_eq!(&before[..8], b"vhdxfile");
    for args in [
        &["info"][..],
        &["check"][..],
        &["compact", "--mode", "retrim"][..],
        &["compact", "--mode", "full"][..],
        &["compact", "--dry-run", "--mode", "retrim"][..],
    ] {
        let out = run(vdisk_cmd().args(args).arg(&file));
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, EXIT_INVALID, "{args:?}: {all}");
        assert!(
            all.contains("--format vhd") && all.contains("reads two ways"),
            "{args:?}: {all}"
        );
        assert!(
            std::fs::read(&file).unwrap() == before,
            "{args:?} changed the file"
        );
    }
    let out = run(vdisk_cmd()
        .args(["info", "--json", "--format", "vhd"])
        .arg(&file));
    out.ok();
    let v = out.json();
    assert_eq!(text(&v, "format"), "vhd");
    assert_eq!(text(&v, "type"), "fixed");
    run(vdisk_cmd().args(["check", "--format", "vhd"]).arg(&file)).ok();
    let copy = dir.path().join("copy.vhd");
    std::fs::copy(&file, &copy).unwrap();
    run(vdisk_cmd()
        .args(["compact", "--format", "vhd", "--mode", "retrim"])
        .arg(&file))
    .ok();
    super::support::assert_qemu_valid(&file);
    super::support::assert_qemu_identical(&file, &copy);
}

/// A fixed VHD whose guest wrote a whole qcow2 header at sector 0 (a nested VM's disk): like
/// a VHDX there, offset 0 is guest data in a fixed VHD and the footer proves itself, so the
/// file reads two ways and is refused untouched until the format is named; `--format vhd`
/// opens it as the fixed VHD it is. (Before qcow2 was supported, its bare magic was only a
/// weak claim and the VHD won; a supported qcow2 header is as strong a claim as a VHDX's.)
#[test]
fn a_fixed_vhd_whose_guest_wrote_a_qcow2_header_at_sector_0_is_ambiguous_until_format_is_named() {
    let dir = tempdir();
    let q = dir.path().join("inner.qcow2");
    qemu_img([
        OsStr::new("create"),
        OsStr::new("-q"),
        OsStr::new("-f"),
        OsStr::new("qcow2"),
        q.as_os_str(),
        OsStr::new("1M"),
    ])
    .ok();
    let mut guest = std::fs::read(&q).unwrap();
    guest.truncate(4096);
    assert_eq!(&guest[..4], b"QFI\xfb");
    let file = fixed_vhd_with_guest_head(dir.path(), "fixed.vhd", "8M", &guest);
    let before = std::fs::read(&file).unwrap();
    for args in [
        &["info"][..],
        &["check"][..],
        &["compact", "--mode", "full"][..],
    ] {
        let out = run(vdisk_cmd().args(args).arg(&file));
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, EXIT_INVALID, "{args:?}: {all}");
        assert!(
            all.contains("--format vhd") && all.contains("reads two ways"),
            "{all}"
        );
        assert!(
            std::fs::read(&file).unwrap() == before,
            "{args:?} changed the file"
        );
    }
    let out = run(vdisk_cmd()
        .args(["info", "--json", "--format", "vhd"])
        .arg(&file));
    out.ok();
    let v = out.json();
    assert_eq!(text(&v, "format"), "vhd");
    assert_eq!(text(&v, "type"), "fixed");
    run(vdisk_cmd().args(["check", "--format", "vhd"]).arg(&file)).ok();
}

/// A forced format that does not fit is an error, not a fallback to detection; an unknown one
/// is a usage error. Neither changes the file.
#[test]
fn a_forced_format_that_does_not_open_is_an_error_not_a_fallback() {
    let dir = tempdir();
    let file = fixed_vhd_with_guest_head(dir.path(), "plain.vhd", "8M", &[1u8; 512]);
    let before = std::fs::read(&file).unwrap();
    let out = run(vdisk_cmd().args(["info", "--format", "vhdx"]).arg(&file));
    assert_eq!(out.code, EXIT_INVALID, "{}", out.stderr);
    let out = run(vdisk_cmd().args(["compact", "--format", "qed"]).arg(&file));
    assert_eq!(out.code, super::support::EXIT_USAGE, "{}", out.stderr);
    assert!(out.stderr.contains("unknown format"), "{}", out.stderr);
    assert!(std::fs::read(&file).unwrap() == before);
}
