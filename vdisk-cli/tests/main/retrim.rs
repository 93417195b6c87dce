//! `retrim` frees zero blocks in place (hole punching): nothing moves, the file keeps its length
//! and its tables, every virtual byte reads the same, and host space is returned. It is the one
//! mode that applies to fixed disks.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::roundtrip::mixed;
use super::support::vhd;
use super::support::{
    BLOCK, FOOTPRINT, Snapshot, assert_libvhdi_identical, assert_qemu_identical, assert_qemu_valid,
    compact_ok, copy_to, file_len, flag, num, qemu_create, qemu_io, run, tempdir, vdisk_cmd,
};

/// Host bytes the file occupies (st_blocks is in 512-byte units).
fn usage(file: &Path) -> u64 {
    std::fs::metadata(file).unwrap().blocks() * 512
}

#[test]
fn retrim_on_dynamic_keeps_bytes_length_and_bat_and_returns_host_space() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let len = file_len(&s.image);
    let used = usage(&s.image);
    let bat_before = {
        let b = std::fs::read(&s.image).unwrap();
        vhd::bat(&b, &vhd::layout(&b).unwrap())
    };

    let dry = compact_ok(&s.image, "retrim", &["--dry-run"]);
    assert!(flag(&dry, "dry_run"));
    Snapshot::of(&s.pristine).assert_unchanged(&s.image, false, "retrim --dry-run");

    let r = compact_ok(&s.image, "retrim", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), s.zero_blocks, "{r}");
    assert_eq!(num(&r, "blocks_moved"), 0, "{r}");
    assert_eq!(file_len(&s.image), len, "retrim never changes the length");
    assert_eq!(num(&r, "bytes_after"), len, "{r}");
    let b = std::fs::read(&s.image).unwrap();
    // Nothing moves: an entry either stays or (dynamic disks only, where unallocated reads
    // zero) becomes unallocated; exactly the zero blocks may go.
    let bat_after = vhd::bat(&b, &vhd::layout(&b).unwrap());
    let changed: Vec<usize> = (0..bat_after.len())
        .filter(|&i| bat_after[i] != bat_before[i])
        .collect();
    for &i in &changed {
        assert_eq!(
            bat_after[i],
            vhd::UNALLOCATED,
            "block {i} moved: {bat_before:?} -> {bat_after:?}"
        );
    }
    assert!(
        changed.iter().all(|i| [1, 2, 6].contains(i)),
        "only the zero blocks 1, 2, 6 may be unmapped: {changed:?}"
    );
    // Blocks 1 and 2 were fully written on the host before being zeroed.
    assert!(
        usage(&s.image) + 2 * (BLOCK - 8192) <= used,
        "retrim must return host space: {used} -> {}",
        usage(&s.image)
    );
    assert_qemu_identical(&s.pristine, &s.image);
    assert_qemu_valid(&s.image);
    assert_libvhdi_identical(&s.pristine, &s.image);

    // A later block-moving run still finds the punched blocks and ends where a direct one would.
    compact_ok(&s.image, "prezeroed", &[]);
    assert_eq!(file_len(&s.image), len - s.zero_blocks * FOOTPRINT);
    assert_qemu_identical(&s.pristine, &s.image);
    assert_eq!(
        vhd::check_dynamic(&s.image),
        Ok(s.allocated - s.zero_blocks)
    );
}

#[test]
fn retrim_on_fixed_keeps_every_byte_and_the_length_and_returns_host_space() {
    let dir = tempdir();
    let image = dir.path().join("fixed.vhd");
    let size = qemu_create(&image, "fixed", 8 << 20);
    // Fill the whole disk on the host, then zero two whole blocks and part of a third.
    qemu_io(
        &image,
        &[
            format!("write -P 0x6c 0 {size}"),
            format!("write -P 0 {BLOCK} {BLOCK}"),
            format!("write -P 0 {} {}", 2 * BLOCK, BLOCK),
            format!("write -P 0 {} 4096", 3 * BLOCK),
        ],
    );
    let pristine = copy_to(&image, dir.path(), "pristine.vhd");
    let used = usage(&image);
    let len = file_len(&image);
    let r = compact_ok(&image, "retrim", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), 2, "{r}");
    assert_eq!(file_len(&image), len);
    assert!(
        usage(&image) + 2 * (BLOCK - 8192) <= used,
        "retrim must return host space: {used} -> {}",
        usage(&image)
    );
    assert_qemu_identical(&pristine, &image);
    assert_qemu_valid(&image);
    assert_libvhdi_identical(&pristine, &image);
}

/// What `du` (coreutils, the oracle here) says the file takes on the host, in bytes.
fn du(file: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-B1")
        .arg(file)
        .output()
        .expect("du (coreutils) is needed");
    assert!(out.status.success(), "du failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du printed {text:?}"))
}

/// A retrim reports what the host really gave back, as `du` counts it, in the summary, the
/// JSON and the batch report; right after, a second run finds nothing to give back and says so,
/// instead of claiming the same bytes again.
#[test]
fn retrim_reports_the_space_du_sees_before_and_after_and_a_second_run_gives_nothing() {
    let dir = tempdir();
    let image = dir.path().join("fixed.vhd");
    let size = qemu_create(&image, "fixed", 16 << 20);
    qemu_io(
        &image,
        &[
            format!("write -P 0x3e 0 {size}"),
            format!("write -P 0 {BLOCK} {}", 3 * BLOCK),
        ],
    );
    let human = copy_to(&image, dir.path(), "human.vhd");
    let batch = copy_to(&image, dir.path(), "batch.vhd");

    let before = du(&image);
    let r = compact_ok(&image, "retrim", &[]);
    let after = du(&image);
    assert!(after + 3 * (BLOCK - 8192) <= before, "{before} -> {after}");
    assert_eq!(num(&r, "host_allocated_before"), before, "{r}");
    assert_eq!(num(&r, "host_allocated_after"), after, "{r}");
    let again = compact_ok(&image, "retrim", &[]);
    assert_eq!(num(&again, "blocks_reclaimed"), 0, "{again}");
    assert_eq!(du(&image), after, "nothing more to give back");

    let out = run(vdisk_cmd()
        .args(["compact", "--mode", "retrim"])
        .arg(&human));
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("the disk space it takes went from 16.0 MiB to 10.0 MiB"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("punch"), "plain words: {}", out.stdout);
    let out = run(vdisk_cmd()
        .args(["compact", "--mode", "retrim"])
        .arg(&human));
    out.expect_code(0);
    assert!(out.stdout.contains("nothing to reclaim"), "{}", out.stdout);

    let report = dir.path().join("report.jsonl");
    let batch_before = du(&batch);
    let out = run(vdisk_cmd()
        .args(["compact", "--mode", "retrim", "--report"])
        .arg(&report)
        .arg(&batch));
    out.expect_code(0);
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
    assert_eq!(row["state"], "compacted", "{row}");
    assert_eq!(num(&row, "bytes_saved"), batch_before - du(&batch), "{row}");
}
