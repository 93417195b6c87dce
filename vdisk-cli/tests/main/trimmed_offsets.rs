//! Trimmed VHDX blocks (BAT states UNMAPPED and UNDEFINED) may keep a FileOffsetMB. Compaction
//! punches or reuses that space, so the offset must be the block's own as strictly as a live
//! block's: an offset over a live block, the BAT, the metadata region or another block makes the
//! image inconsistent (`check` says so, exit 4, and every compaction mode refuses, leaving the
//! file byte-identical); an offset past the end of the file holds no space and is ignored with
//! a warning (compaction succeeds and every virtual byte reads the same by qemu).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::support::{
    EXIT_INVALID, Snapshot, copy_to, qemu_img, require, run, tempdir, vdisk, vdisk_compact,
};

const MIB: u64 = 1 << 20;
const UNMAPPED: u64 = 3;
const UNDEFINED: u64 = 1;
const BAT_REGION: u128 = 0x2DC27766_F623_4200_9D64_115E9BFD4A08;
const METADATA_REGION: u128 = 0x8B7CA206_4790_4B9A_B8FE_575F050F886E;
const MODES: [&str; 5] = ["full", "quick", "prezeroed", "pretrimmed", "retrim"];

/// A qemu-made dynamic VHDX of 8 MiB in 1 MiB blocks: data in blocks 0, 2 and 5, the rest
/// never written.
fn base(dir: &Path) -> PathBuf {
    let image = dir.join("base.vhdx");
    qemu_img(
        ["create", "-q", "-f", "vhdx", "-o", "block_size=1M"]
            .map(OsStr::new)
            .into_iter()
            .chain([image.as_os_str(), OsStr::new("8M")]),
    )
    .ok();
    let mut cmd = std::process::Command::new(require("qemu-io", "qemu-utils"));
    cmd.args(["-f", "vhdx"]);
    for c in [
        format!("write -P 0x11 0 {MIB}"),
        format!("write -P 0x22 {} {MIB}", 2 * MIB),
        format!("write -P 0x33 {} 4096", 5 * MIB),
    ] {
        cmd.arg("-c").arg(c);
    }
    run(cmd.arg(&image)).ok();
    image
}

/// The file offset of region `id` from the first region table.
fn region(b: &[u8], id: u128) -> u64 {
    // A GUID on disk: the first three fields little-endian, the last eight bytes as written.
    let be = id.to_be_bytes();
    let mut want = [
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    want[8..].copy_from_slice(&be[8..]);
    let count = u32::from_le_bytes(b[0x30008..0x3000c].try_into().unwrap()) as usize;
    let e = (0..count)
        .map(|i| 0x30010 + 32 * i)
        .find(|&e| b[e..e + 16] == want)
        .expect("region present");
    u64::from_le_bytes(b[e + 16..e + 24].try_into().unwrap())
}

/// BAT entry `i` (the chunk ratio of this image is far above 8, so payload entry i is entry i).
fn entry(b: &[u8], i: u64) -> u64 {
    let at = usize::try_from(region(b, BAT_REGION) + 8 * i).unwrap();
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A copy of `base` whose never-written block 1 is `state` with FileOffsetMB pointing at
/// `offset` (a multiple of 1 MiB).
fn trimmed_at(dir: &Path, base: &Path, name: &str, state: u64, offset: u64) -> PathBuf {
    let mut b = std::fs::read(base).unwrap();
    assert!(
        [0, 2].contains(&(entry(&b, 1) & 7)),
        "block 1 starts NOT_PRESENT or ZERO"
    );
    let at = usize::try_from(region(&b, BAT_REGION) + 8).unwrap();
    b[at..at + 8].copy_from_slice(&((offset / MIB) << 20 | state).to_le_bytes());
    let path = dir.join(name);
    std::fs::write(&path, b).unwrap();
    path
}

/// `check` exits 4 naming trimmed block 1; every compaction mode (and its dry run) exits 4
/// with the same cause and leaves the file byte-identical.
#[track_caller]
fn refused_everywhere(file: &Path, needle: &str) {
    let out = vdisk([OsStr::new("check"), file.as_os_str()]);
    out.expect_code(EXIT_INVALID);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(needle), "check must name the problem:\n{all}");
    let before = Snapshot::of(file);
    for mode in MODES {
        for extra in [&["--dry-run"][..], &[]] {
            let out = vdisk_compact(file, mode, extra);
            out.expect_code(EXIT_INVALID);
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(all.contains(needle), "compact --mode {mode}:\n{all}");
            before.assert_unchanged(file, false, &format!("compact --mode {mode} {extra:?}"));
        }
    }
}

#[test]
fn a_trimmed_entry_pointing_at_a_live_block_is_reported_and_never_punched() {
    let dir = tempdir();
    let base = base(dir.path());
    let b = std::fs::read(&base).unwrap();
    let live = (entry(&b, 0) >> 20) * MIB;
    assert_eq!(entry(&b, 0) & 7, 6, "block 0 is fully present");
    for (state, name) in [(UNMAPPED, "unmapped.vhdx"), (UNDEFINED, "undefined.vhdx")] {
        let file = trimmed_at(dir.path(), &base, name, state, live);
        refused_everywhere(&file, "overlapping");
    }
}

#[test]
fn a_trimmed_entry_pointing_at_the_bat_is_reported_and_never_punched() {
    let dir = tempdir();
    let base = base(dir.path());
    let bat = region(&std::fs::read(&base).unwrap(), BAT_REGION);
    let file = trimmed_at(dir.path(), &base, "at-bat.vhdx", UNMAPPED, bat);
    refused_everywhere(&file, "trimmed block 1 keeps the offset");
}

#[test]
fn a_trimmed_entry_pointing_at_the_metadata_region_is_reported_and_never_punched() {
    let dir = tempdir();
    let base = base(dir.path());
    let meta = region(&std::fs::read(&base).unwrap(), METADATA_REGION);
    let file = trimmed_at(dir.path(), &base, "at-meta.vhdx", UNMAPPED, meta);
    refused_everywhere(&file, "trimmed block 1 keeps the offset");
}

#[test]
fn a_trimmed_entry_pointing_past_the_end_holds_no_space_and_compacts_in_every_mode() {
    let dir = tempdir();
    let base = base(dir.path());
    let file = trimmed_at(dir.path(), &base, "past-eof.vhdx", UNMAPPED, 1 << 40);
    let out = vdisk([OsStr::new("check"), file.as_os_str()]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("past the end"), "check warns:\n{all}");
    out.ok();
    let pristine = copy_to(&file, dir.path(), "past-eof.pristine.vhdx");
    for mode in MODES {
        let image = copy_to(&pristine, dir.path(), &format!("{mode}.vhdx"));
        vdisk_compact(&image, mode, &[]).ok();
        let cmp = qemu_img(
            ["compare", "-f", "vhdx", "-F", "vhdx"]
                .map(OsStr::new)
                .into_iter()
                .chain([base.as_os_str(), image.as_os_str()]),
        );
        assert_eq!(cmp.code, 0, "{mode}: {}{}", cmp.stdout, cmp.stderr);
        let check = qemu_img(
            ["check", "-f", "vhdx"]
                .map(OsStr::new)
                .into_iter()
                .chain([image.as_os_str()]),
        );
        assert_eq!(check.code, 0, "{mode}: {}{}", check.stdout, check.stderr);
        vdisk([OsStr::new("check"), image.as_os_str()]).ok();
    }
}
