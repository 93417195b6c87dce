//! `vdisk check` lists every structural problem (not just the first) and says "safe to
//! compact: yes/no (why)" in text and JSON, with the exit code to match: 0 safe, 4 damaged,
//! 5 sound but not compactable.

use std::path::{Path, PathBuf};

use vdisk_core::{CreateSpec, DiskImage, FormatDriver, ImageKind, MemFile};

use super::support::vhd::{self, FOOTER_CHECKSUM, FOOTER_LEN, idx, put_be32};
use super::support::{Out, run, tempdir, text, vdisk_cmd};

const EXIT_INVALID: i32 = 4;
const EXIT_UNSUPPORTED: i32 = 5;
/// Footer byte: 1 if the VM was saved (hibernated) with the disk attached.
const FOOTER_SAVED_STATE: usize = 84;

/// A dynamic VHD of 16 blocks of 4 KiB, 8 of them written.
fn dynamic(kind: ImageKind) -> Vec<u8> {
    let mem = MemFile::new();
    let spec = match kind {
        ImageKind::Fixed => CreateSpec::new(kind, 64 << 10),
        _ => CreateSpec::new(kind, 64 << 10).block_size(4096),
    };
    let image: Box<dyn DiskImage> = vdisk_vhd::DRIVER
        .create(Box::new(mem.clone()), &spec)
        .unwrap();
    for b in 0..8u64 {
        image
            .write_at(&[u8::try_from(b + 1).unwrap(); 512], b * 8192)
            .unwrap();
    }
    drop(image);
    mem.to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn check(file: &Path, json: bool) -> Out {
    let mut cmd = vdisk_cmd();
    cmd.arg("check");
    if json {
        cmd.arg("--json");
    }
    run(cmd.arg(file))
}

/// Runs text and JSON checks; asserts the exit code, the verdict line and the JSON verdict.
fn assert_verdict(file: &Path, code: i32, safe: bool, why: &str) -> (Out, serde_json::Value) {
    let human = check(file, false);
    human.expect_code(code);
    let line = format!(
        "safe to compact: {} ({why}",
        if safe { "yes" } else { "no" }
    );
    assert!(
        human.stdout.contains(&line),
        "want {line:?} in:\n{}",
        human.stdout
    );
    let json = check(file, true);
    json.expect_code(code);
    let v = json.json();
    assert_eq!(v["safe_to_compact"].as_bool(), Some(safe), "{v}");
    assert!(text(&v, "safe_to_compact_why").starts_with(why), "{v}");
    (human, v)
}

#[test]
fn check_says_a_sound_dynamic_image_is_safe_to_compact() {
    let dir = tempdir();
    let file = write(dir.path(), "ok.vhd", &dynamic(ImageKind::Dynamic));
    let (_, v) = assert_verdict(&file, 0, true, "no problems found");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));
}

#[test]
fn check_lists_every_damaged_block_and_says_why_it_is_not_safe() {
    let dir = tempdir();
    let mut bytes = dynamic(ImageKind::Dynamic);
    let l = vhd::layout(&bytes).unwrap();
    let entries = vhd::bat(&bytes, &l);
    let past_eof = u32::try_from(bytes.len() / 512 + 100).unwrap();
    // Block 1 past the end of the file, block 3 sharing block 2's place, block 5 over the BAT.
    put_be32(&mut bytes, idx(l.bat) + 4, past_eof);
    put_be32(&mut bytes, idx(l.bat) + 12, entries[2]);
    put_be32(
        &mut bytes,
        idx(l.bat) + 20,
        u32::try_from(l.bat / 512).unwrap(),
    );
    let file = write(dir.path(), "bad.vhd", &bytes);
    let before = std::fs::read(&file).unwrap();
    let (human, v) = assert_verdict(&file, EXIT_INVALID, false, "3 structural errors");
    let problems = v["problems"].as_array().unwrap();
    let errors: Vec<&str> = problems
        .iter()
        .filter(|p| p["severity"] == "error")
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "one error per damaged block: {errors:#?}");
    for block in ["block 1", "block 3", "block 5"] {
        assert!(
            errors.iter().any(|m| m.contains(block)),
            "{block} named in {errors:#?}"
        );
    }
    assert_eq!(
        human.stdout.matches("error: ").count(),
        3,
        "{}",
        human.stdout
    );
    assert!(
        std::fs::read(&file).unwrap() == before,
        "check never writes"
    );
}

#[test]
fn check_says_a_vhd_saved_with_its_vm_is_sound_but_not_safe_to_compact() {
    let dir = tempdir();
    let mut bytes = dynamic(ImageKind::Dynamic);
    let end = bytes.len() - idx(FOOTER_LEN);
    for at in [0, end] {
        let footer = &mut bytes[at..at + idx(FOOTER_LEN)];
        footer[FOOTER_SAVED_STATE] = 1;
        let sum = vhd::checksum(footer, FOOTER_CHECKSUM);
        put_be32(footer, FOOTER_CHECKSUM, sum);
    }
    let file = write(dir.path(), "saved.vhd", &bytes);
    assert_verdict(&file, EXIT_UNSUPPORTED, false, "the VM was saved");
}

/// Regression: a fixed VHD saved with its VM was retrimmed (punched) and `check` called it
/// safe for retrim, because only the dynamic path asked the image for its preconditions.
#[test]
fn a_fixed_vhd_saved_with_its_vm_is_neither_retrimmed_nor_called_safe() {
    let dir = tempdir();
    // 8 MiB: four 2 MiB units, three of them zero, which a retrim would punch.
    let mem = MemFile::new();
    let image = vdisk_vhd::DRIVER
        .create(
            Box::new(mem.clone()),
            &CreateSpec::new(ImageKind::Fixed, 8 << 20),
        )
        .unwrap();
    image.write_at(&[7; 512], 4096).unwrap();
    drop(image);
    let mut bytes = mem.to_vec();
    let end = bytes.len() - idx(FOOTER_LEN);
    let footer = &mut bytes[end..];
    footer[FOOTER_SAVED_STATE] = 1;
    let sum = vhd::checksum(footer, FOOTER_CHECKSUM);
    put_be32(footer, FOOTER_CHECKSUM, sum);
    let file = write(dir.path(), "saved-fixed.vhd", &bytes);
    assert_verdict(&file, EXIT_UNSUPPORTED, false, "the VM was saved");
    let out = run(vdisk_cmd().args(["compact", "--mode", "retrim"]).arg(&file));
    out.expect_code(EXIT_UNSUPPORTED);
    assert!(out.stderr.contains("saved"), "says why: {}", out.stderr);
    assert!(
        std::fs::read(&file).unwrap() == bytes,
        "a refused retrim writes nothing"
    );
}

#[test]
fn check_says_a_fixed_image_is_safe_only_for_retrim() {
    let dir = tempdir();
    let file = write(dir.path(), "fixed.vhd", &dynamic(ImageKind::Fixed));
    assert_verdict(&file, 0, true, "fixed disk: only --mode retrim applies");
}
