//! `vdisk compact` for many disks at once (`--recursive`, `--jobs`, `--min-savings`,
//! `--skip-in-use`, `--report`): every file walked ends in exactly one stable state, the
//! report's rows match the files (read back by Python's csv and json modules), compacted
//! images read as before (qemu-img compare/check against a copy made first), files skipped
//! are byte-identical, one pass converges, and Ctrl-C cancels the files not started.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::in_use::Holder;
use super::support::interrupt::{EXIT_CANCELLED, send};
use super::support::ntfs::{Table, build};
use super::support::{
    EXIT_UNSUPPORTED, Out, Snapshot, assert_qemu_checked_same, assert_qemu_identical,
    assert_qemu_valid, file_len, num, qemu_create, qemu_create_vhdx, qemu_io_as, require, run,
    tempdir, text, vdisk,
};

const MIB: u64 = 1 << 20;

/// A 32 MiB image of qemu's `format` (`vpc` dynamic, `vhdx` with 1 MiB blocks) with 4 MiB of
/// data at 0 and `zeros` bytes written as zeros at 8 MiB (allocated, reclaimable).
pub fn image(path: &Path, format: &str, zeros: u64) {
    match format {
        "vpc" => {
            qemu_create(path, "dynamic", 32 * MIB);
        }
        _ => {
            qemu_create_vhdx(path, "block_size=1M", 32 * MIB);
        }
    }
    let mut cmds = vec![format!("write -P 0x5a 0 {}", 4 * MIB)];
    if zeros > 0 {
        cmds.push(format!("write -P 0 {} {zeros}", 8 * MIB));
    }
    qemu_io_as(format, path, &cmds);
}

fn qemu_format(path: &Path) -> &'static str {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vhdx"))
    {
        "vhdx"
    } else {
        "vpc"
    }
}

/// `path` reads as `pristine` and qemu accepts its structure.
#[track_caller]
pub fn assert_same_and_valid(path: &Path, pristine: &Path) {
    if qemu_format(path) == "vhdx" {
        assert_qemu_checked_same("vhdx", path, pristine);
    } else {
        assert_qemu_valid(path);
        assert_qemu_identical(path, pristine);
    }
}

/// The rows of a report as Python's `csv.DictReader` or `json` read them (an oracle for our
/// quoting and line framing), as JSON objects with every value a string for CSV.
pub fn python_rows(report: &Path) -> Vec<Value> {
    let script = "import csv, json, sys\n\
        p = sys.argv[1]\n\
        if p.endswith('.csv'):\n\
        \x20   rows = list(csv.DictReader(open(p, newline='')))\n\
        else:\n\
        \x20   rows = [json.loads(l) for l in open(p) if l.strip()]\n\
        print(json.dumps(rows))\n";
    let out = run(Command::new(require("/usr/bin/python3", "python3"))
        .args(["-c", script])
        .arg(report));
    out.ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// A report value as text (CSV gives strings, JSON numbers).
pub fn field(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::String(s) => s.clone(),
        Value::Null => panic!("row has no {key:?}: {row}"),
        v => v.to_string(),
    }
}

/// The JSON rows `--json` printed, by path.
fn rows_by_path(out: &Out) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    for r in out.json_lines() {
        let path = text(&r, "path").to_string();
        assert!(
            rows.insert(path.clone(), r).is_none(),
            "{path} reported twice"
        );
    }
    rows
}

#[test]
fn a_parallel_batch_over_mixed_images_compacts_skips_held_and_small_ones_and_reports_each_file_once()
 {
    let dir = tempdir();
    let root = dir.path().join("fleet");
    let keep = dir.path().join("pristine");
    fs::create_dir_all(&keep).unwrap();
    // 24 images: what each name starts with is the state it must end in. Big ones give back
    // at least 16 MiB, small ones at most 6 MiB (2 MiB of zeros, and qemu's VHDX slack).
    let mut plan: Vec<(PathBuf, &str, u64)> = Vec::new();
    for i in 0..8 {
        plan.push((root.join(format!("a/big-{i}.vhd")), "vpc", 16 * MIB));
    }
    for i in 0..6 {
        plan.push((root.join(format!("b/big-{i}.VHDX")), "vhdx", 16 * MIB));
    }
    for i in 0..3 {
        plan.push((root.join(format!("a/small-{i}.vhd")), "vpc", 2 * MIB));
    }
    for i in 0..2 {
        plan.push((root.join(format!("b/deep/small-{i}.vhdx")), "vhdx", 2 * MIB));
    }
    for i in 0..2 {
        plan.push((root.join(format!("a/held-{i}.vhd")), "vpc", 8 * MIB));
    }
    plan.push((root.join("b/held-2.vhdx"), "vhdx", 8 * MIB));
    for (path, format, zeros) in &plan {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image(path, format, *zeros);
    }
    for i in 0..2 {
        let path = root.join(format!("c/fixed-{i}.vhd"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        qemu_create(&path, "fixed", 16 * MIB);
        plan.push((path, "vpc", 0));
    }
    assert_eq!(plan.len(), 24);
    // Files the default selection must not touch.
    fs::write(root.join("a/notes.txt"), b"not an image").unwrap();
    fs::copy(root.join("a/big-0.vhd"), root.join("a/big-0.vhd.bak")).unwrap();
    let untouched_extras =
        [root.join("a/notes.txt"), root.join("a/big-0.vhd.bak")].map(|p| (Snapshot::of(&p), p));
    let mut pristine = BTreeMap::new();
    let mut snapshots = BTreeMap::new();
    for (i, (path, _, _)) in plan.iter().enumerate() {
        let copy = keep.join(format!(
            "{i}-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        fs::copy(path, &copy).unwrap();
        pristine.insert(path.clone(), copy);
        snapshots.insert(path.clone(), Snapshot::of(path));
    }
    let _holders: Vec<Holder> = plan
        .iter()
        .filter(|(p, _, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("held-")
        })
        .map(|(p, f, _)| Holder::start_format(p, f, &[]))
        .collect();

    let report = dir.path().join("report.csv");
    let out = run(super::support::vdisk_cmd()
        .args([
            "compact",
            "--json",
            "--recursive",
            "--jobs",
            "4",
            "--skip-in-use",
        ])
        .args(["--min-savings", "10M", "--report"])
        .arg(&report)
        .arg(&root));
    // The fixed disks cannot be compacted in full mode: the first failure's code.
    out.expect_code(EXIT_UNSUPPORTED);
    let rows = rows_by_path(&out);
    assert_eq!(rows.len(), 24, "one row per image:\n{}", out.stdout);
    assert!(
        out.stderr.contains("vdisk: 24 files in ")
            && out.stderr.contains(
                "14 compacted, 0 nothing-to-reclaim, 5 below-threshold, 3 in-use, 2 failed, 0 cancelled"
            ),
        "summary:\n{}",
        out.stderr
    );
    for (path, _, zeros) in &plan {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let row = &rows[&path.to_string_lossy().into_owned()];
        let state = text(row, "state");
        let expected = match name.split('-').next().unwrap() {
            "big" => "compacted",
            "small" => "below-threshold",
            "held" => "in-use",
            _ => "failed",
        };
        assert_eq!(state, expected, "{name}: {row}");
        assert_eq!(num(row, "bytes_after"), file_len(path), "{name}: {row}");
        match state {
            "compacted" => {
                assert!(num(row, "bytes_saved") >= *zeros, "{name}: {row}");
                assert_eq!(
                    num(row, "bytes_saved"),
                    num(row, "bytes_before") - num(row, "bytes_after")
                );
                assert_same_and_valid(path, &pristine[path]);
            }
            _ => {
                assert_eq!(num(row, "bytes_saved"), 0, "{name}: {row}");
                snapshots[path].assert_unchanged(path, true, &format!("{name} ({state})"));
            }
        }
        match state {
            "in-use" => assert!(
                text(row, "message").contains("held by qemu-io (pid "),
                "the holder is named: {row}"
            ),
            "below-threshold" => assert!(
                text(row, "message").contains("below --min-savings 10.0 MiB"),
                "{row}"
            ),
            "failed" => {
                assert_eq!(num(row, "exit_code"), 5, "{row}");
                assert!(text(row, "message").contains("retrim"), "{row}");
            }
            _ => assert_eq!(num(row, "exit_code"), 0, "{row}"),
        }
    }
    for (snap, p) in &untouched_extras {
        snap.assert_unchanged(p, true, "a file the selection does not take");
    }

    // The report: a header and one row per file, as Python's csv module reads it, matching
    // what stdout said.
    let text_report = fs::read_to_string(&report).unwrap();
    assert!(
        text_report.starts_with(
            "path,state,start,end,seconds,bytes_before,bytes_after,bytes_saved,mode,message"
        ),
        "{text_report}"
    );
    let csv = python_rows(&report);
    assert_eq!(csv.len(), 24, "{text_report}");
    for r in &csv {
        let json = &rows[&field(r, "path")];
        for key in [
            "state",
            "start",
            "end",
            "bytes_before",
            "bytes_after",
            "bytes_saved",
            "mode",
            "message",
            "format",
            "exit_code",
            "host",
        ] {
            assert_eq!(field(r, key), field(json, key), "{key} of {r}");
        }
        let seconds: f64 = field(r, "seconds").parse().unwrap();
        assert!((0.0..120.0).contains(&seconds), "{r}");
        assert!(field(r, "start") <= field(r, "end"), "{r}");
    }
}

/// Runs `vdisk compact --recursive --jobs 2 --report REPORT ROOT` (human output), expecting 0.
fn batch_ok(root: &Path, report: &Path) -> Out {
    let out = vdisk(
        ["compact", "--recursive", "--jobs", "2", "--report"]
            .map(OsStr::new)
            .into_iter()
            .chain([report.as_os_str(), root.as_os_str()]),
    );
    out.ok();
    out
}

#[test]
fn one_pass_converges_a_second_run_on_ntfs_and_zero_filled_images_finds_nothing_to_reclaim() {
    let ntfs = build(Table::Mbr, None);
    let dir = tempdir();
    let root = dir.path().join("disks");
    fs::create_dir(&root).unwrap();
    let mut images = Vec::new();
    for (format, sub, name) in [
        ("vpc", "dynamic", "ntfs.vhd"),
        ("vhdx", "dynamic", "ntfs.vhdx"),
    ] {
        let made = ntfs.image(format, sub);
        let to = root.join(name);
        fs::rename(&made, &to).unwrap();
        images.push((to, format));
    }
    // Zero-filled: every block written with zeros (allocated), VHD and VHDX.
    for (format, name) in [("vpc", "zeros.vhd"), ("vhdx", "zeros.vhdx")] {
        let path = root.join(name);
        image(&path, format, 0);
        qemu_io_as(format, &path, &[format!("write -P 0 0 {}", 32 * MIB)]);
        images.push((path, format));
    }
    let report = dir.path().join("runs.jsonl");
    let first = batch_ok(&root, &report);
    let second = batch_ok(&root, &report);
    let rows = python_rows(&report);
    assert_eq!(rows.len(), 8, "two runs of four files:\n{rows:?}");
    for (path, format) in &images {
        let mine: Vec<&Value> = rows
            .iter()
            .filter(|r| field(r, "path") == path.to_string_lossy())
            .collect();
        assert_eq!(mine.len(), 2, "{}", path.display());
        assert_eq!(
            field(mine[0], "state"),
            "compacted",
            "first run: {}",
            first.stdout
        );
        assert_eq!(
            field(mine[1], "state"),
            "nothing-to-reclaim",
            "a second run right after the first reclaims nothing more: {}\nfirst:\n{}",
            mine[1],
            first.stdout
        );
        assert_eq!(num(mine[1], "bytes_saved"), 0);
        assert_eq!(num(mine[1], "bytes_after"), file_len(path));
        if path.to_string_lossy().contains("ntfs") {
            ntfs.assert_content_kept(path, format);
        }
    }
    assert!(
        second.stdout.contains("4 files in ")
            && second.stdout.contains("0 compacted, 4 nothing-to-reclaim"),
        "{}",
        second.stdout
    );
    for line in second.stdout.lines().filter(|l| !l.starts_with("vdisk:")) {
        assert!(
            line.starts_with("nothing-to-reclaim "),
            "one line per file: {line}"
        );
    }
}

#[test]
fn ctrl_c_during_a_batch_cancels_the_files_not_started_and_every_image_stays_readable_as_before() {
    let dir = tempdir();
    let root = dir.path().join("disks");
    fs::create_dir(&root).unwrap();
    let mut images = Vec::new();
    for i in 0..12 {
        let path = root.join(format!("d{i:02}.vhd"));
        image(&path, "vpc", 16 * MIB);
        let copy = dir.path().join(format!("pristine-{i}.vhd"));
        fs::copy(&path, &copy).unwrap();
        images.push((path, copy));
    }
    let report = dir.path().join("r.jsonl");
    let mut child = super::support::vdisk_cmd()
        .args(["compact", "--json", "--recursive", "--report"])
        .arg(&report)
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first row").unwrap();
    send(&mut child, "INT");
    let mut all = vec![first];
    all.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(EXIT_CANCELLED), "{all:?}");
    let rows: Vec<Value> = all
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 12, "every file has a row: {all:?}");
    let not_started = rows
        .iter()
        .filter(|r| {
            text(r, "state") == "cancelled" && text(r, "message").starts_with("not started")
        })
        .count();
    assert!(
        not_started >= 8,
        "the files after Ctrl-C are not started: {all:?}"
    );
    for r in &rows {
        let state = text(r, "state");
        assert!(
            ["compacted", "cancelled"].contains(&state),
            "only finished or cancelled files: {r}"
        );
    }
    assert_eq!(python_rows(&report).len(), 12, "the report has them too");
    for (path, pristine) in &images {
        assert_same_and_valid(path, pristine);
    }
}

#[test]
fn links_inside_the_tree_are_not_followed_and_the_image_they_point_to_is_untouched() {
    let dir = tempdir();
    let root = dir.path().join("tree");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let target = outside.join("other.vhd");
    image(&target, "vpc", 8 * MIB);
    let inside = root.join("sub/mine.vhd");
    image(&inside, "vpc", 8 * MIB);
    std::os::unix::fs::symlink(&target, root.join("link.vhd")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("sub/outside-dir")).unwrap();
    let before = Snapshot::of(&target);
    let report = dir.path().join("r.csv");
    let out = batch_ok(&root, &report);
    before.assert_unchanged(&target, true, "an image reached only through links");
    let rows = python_rows(&report);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(field(&rows[0], "path"), inside.to_string_lossy());
    assert!(
        out.stderr
            .contains("link.vhd: note: a symbolic link: not followed"),
        "{}",
        out.stderr
    );
}

#[test]
fn two_batches_sharing_one_csv_report_write_one_header_and_whole_rows() {
    let dir = tempdir();
    let report = dir.path().join("shared.csv");
    let mut roots = Vec::new();
    for r in ["one", "two"] {
        let root = dir.path().join(r);
        fs::create_dir(&root).unwrap();
        for i in 0..4 {
            image(&root.join(format!("{r}-{i}.vhd")), "vpc", 4 * MIB);
        }
        roots.push(root);
    }
    let spawn = |root: &Path| {
        super::support::vdisk_cmd()
            .args(["compact", "--recursive", "--jobs", "2", "--report"])
            .arg(&report)
            .arg(root)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(&roots[0]), spawn(&roots[1]));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let text_report = fs::read_to_string(&report).unwrap();
    assert_eq!(
        text_report.matches("path,state,").count(),
        1,
        "one header:\n{text_report}"
    );
    let rows = python_rows(&report);
    assert_eq!(rows.len(), 8, "{text_report}");
    for r in &rows {
        assert_eq!(field(r, "state"), "compacted", "{r}");
        assert_eq!(field(r, "host"), field(&rows[0], "host"));
    }
}

#[test]
fn batch_options_without_a_batch_are_usage_errors_and_a_bad_report_stops_before_any_image() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    image(&disk, "vpc", 4 * MIB);
    let before = Snapshot::of(&disk);
    vdisk([
        OsStr::new("compact"),
        OsStr::new("--include"),
        OsStr::new("*.vhd"),
        disk.as_os_str(),
    ])
    .expect_code(2);
    vdisk([
        OsStr::new("compact"),
        OsStr::new("--jobs"),
        OsStr::new("0"),
        disk.as_os_str(),
    ])
    .expect_code(2);
    let out = vdisk([
        OsStr::new("compact"),
        OsStr::new("--min-savings"),
        OsStr::new("150%"),
        disk.as_os_str(),
    ]);
    out.expect_code(2);
    let out = vdisk([
        OsStr::new("compact"),
        OsStr::new("--report"),
        dir.path().join("r.txt").as_os_str(),
        disk.as_os_str(),
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("--report-format"), "{}", out.stderr);
    before.assert_unchanged(&disk, true, "a run refused before it started");
}
