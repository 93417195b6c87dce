//! Crash safety through core's shared harness: a qcow2 compaction is cut at every write (a
//! crash with several choices of surviving unsynced writes, a disk that stays full, one write
//! failing for lack of space). At every cut `qemu-img check` must report no corruption (leaks
//! are allowed: qcow2's rule), the guest content must be unchanged, and a re-run must finish
//! the job. Images are a few dozen clusters, so each case runs in seconds.

use std::path::Path;

use vdisk_core::testing::{ALL_FAULTS, CrashCase, Fault, cut_each, open_bytes, report_cuts};
use vdisk_core::{DiskImage, FormatDriver, Mode, OpenOptions};
use vdisk_qcow2::DRIVER;

use super::compact_util::{compressed_copy, made, metadata_high, pattern, qemu_check_counts};
use super::util::{qemu_io, tool};

/// qemu-img check's corruptions in `bytes` (leaks allowed), and any image our driver refuses.
fn corruptions(bytes: Vec<u8>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.qcow2");
    std::fs::write(&path, &bytes).unwrap();
    let (errors, _leaks) = qemu_check_counts(&path);
    let mut out = Vec::new();
    if errors > 0 {
        out.push(format!("qemu-img check: {errors} errors"));
    }
    if let Err(e) = open_bytes(&DRIVER, bytes, false) {
        out.push(format!("vdisk cannot open it: {e}"));
    }
    out
}

fn case(name: String, path: &Path, mode: Mode) -> CrashCase<'static> {
    CrashCase::new(
        name,
        std::fs::read(path).unwrap(),
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open_bytes(&DRIVER, bytes, false),
        move |img: &mut dyn DiskImage| vdisk_core::testing::compact(img, mode, None).map(|_| ()),
        corruptions,
    )
}

/// Runs `c` against every fault, prints the cut counts, checks the file shrank; returns the
/// fewest cut points.
fn run(c: &CrashCase<'_>, faults: &[Fault]) -> u64 {
    let stats = cut_each(c, faults);
    assert!(
        stats[0].final_len < c.original.len() as u64,
        "{}: the file shrinks",
        c.name
    );
    report_cuts(&c.name, faults, &stats)
}

#[test]
fn every_cut_of_a_compaction_of_each_version_and_refcount_width_leaves_no_corruption_and_the_content_unchanged()
 {
    let dir = tempfile::tempdir().unwrap();
    for (i, (opts, cs, mode)) in [
        ("compat=1.1,cluster_size=4096", 4096u64, Mode::Prezeroed),
        ("compat=0.10,cluster_size=4096", 4096, Mode::Full),
        (
            "compat=1.1,cluster_size=512,refcount_bits=1",
            512,
            Mode::Prezeroed,
        ),
        (
            "compat=1.1,cluster_size=4096,refcount_bits=64",
            4096,
            Mode::Full,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let path = made(
            dir.path(),
            &format!("c{i}.qcow2"),
            opts,
            &(32 * cs).to_string(),
            &pattern(cs),
        );
        let c = case(format!("qcow2 {opts} {mode}"), &path, mode);
        let cuts = run(&c, &ALL_FAULTS);
        assert!(
            cuts >= 8,
            "{opts}: a compaction that frees and moves writes often"
        );
    }
}

#[test]
fn every_cut_of_a_compaction_around_compressed_clusters_and_a_snapshot_leaves_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cs = 4096u64;
    let opts = "compat=1.1,cluster_size=4096";
    let src = made(
        dir.path(),
        "src.qcow2",
        opts,
        &(32 * cs).to_string(),
        &pattern(cs),
    );
    let z = compressed_copy(&src, "z.qcow2", opts);
    tool("qemu-img", &["snapshot", "-c", "s1", z.to_str().unwrap()]);
    let cmds = [
        format!("write -P 0xa1 {} {cs}", 20 * cs),
        format!("write -P 0 {} {cs}", 21 * cs),
        format!("write -P 0xa2 {} {cs}", 0),
        format!("write -P 0xa3 {} {cs}", 29 * cs),
    ];
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(&z, "qcow2", &refs);
    let c = case(
        "qcow2 compressed + snapshot prezeroed".into(),
        &z,
        Mode::Prezeroed,
    );
    run(&c, &[Fault::Crash]);
}

#[test]
fn every_cut_of_a_compaction_that_moves_the_l1_table_refcount_table_refcount_block_and_an_l2_table_leaves_no_corruption()
 {
    let dir = tempfile::tempdir().unwrap();
    for l1_high in [true, false] {
        let path = metadata_high(dir.path(), &format!("m{l1_high}.qcow2"), l1_high);
        let mut c = case(
            format!("qcow2 metadata moves (l1 high {l1_high}) prezeroed"),
            &path,
            Mode::Prezeroed,
        );
        // The 2 GiB guest is sampled where it was written (the rest reads zeros, unmapped).
        c.content = Box::new(|img: &dyn DiskImage| {
            let mut v = vec![0u8; (128 << 10) + 4096];
            img.read_at(&mut v[..128 << 10], 0).unwrap();
            img.read_at(&mut v[128 << 10..], 1 << 30).unwrap();
            v
        });
        // Both images with a crash at every write; one also with a full disk.
        let faults: &[Fault] = if l1_high {
            &ALL_FAULTS
        } else {
            &[Fault::Crash]
        };
        let cuts = run(&c, faults);
        assert!(
            cuts >= 20,
            "four metadata moves of five writes each ({cuts} cut points)"
        );
    }
}

/// Clusters the "file system" calls free hold data, which may read zeros afterwards: the
/// content compared at every cut leaves them out.
#[test]
fn every_cut_of_a_compaction_freeing_file_system_free_data_leaves_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cs = 4096u64;
    let path = made(
        dir.path(),
        "fs.qcow2",
        "compat=1.1,cluster_size=4096",
        &(32 * cs).to_string(),
        &pattern(cs),
    );
    let free: Vec<std::ops::Range<u64>> = std::iter::once(12 * cs..16 * cs).collect();
    let mut c = CrashCase::new(
        "qcow2 full with file-system free data",
        std::fs::read(&path).unwrap(),
        |file| DRIVER.open(file, &OpenOptions::read_write()),
        |bytes| open_bytes(&DRIVER, bytes, false),
        move |img: &mut dyn DiskImage| {
            vdisk_core::testing::compact(img, Mode::Full, Some(&free)).map(|_| ())
        },
        corruptions,
    );
    c.content = Box::new(move |img: &dyn DiskImage| {
        let mut all = vec![0u8; img.size() as usize];
        img.read_at(&mut all, 0).unwrap();
        all[(12 * cs) as usize..(16 * cs) as usize].fill(0);
        all
    });
    let cuts = run(&c, &[Fault::Crash]);
    assert!(cuts >= 8, "{cuts} cut points");
}
