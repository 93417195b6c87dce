//! Differencing chains from the command line: `create --type differencing`, `info` showing
//! the chain, `--parent` / `--parent-dir`, and compaction of every member checked with
//! libvhdi reading the whole chain.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdisk_core::{Access, FormatDriver, OpenOptions, StdFile};

use super::support::{
    EXIT_INVALID, EXIT_USAGE, compact_ok, file_len, info_ok, num, qemu_io, require, run, tempdir,
    text, vdisk_cmd,
};

/// Bytes libvhdi reads through `chain[0]` with `chain[1..]` as its parents.
pub fn libvhdi_chain(chain: &[&Path]) -> Vec<u8> {
    const SCRIPT: &str = "
import sys, pyvhdi
fs = []
for p in sys.argv[1:]:
    f = pyvhdi.file(); f.open(p); fs.append(f)
for i in reversed(range(len(fs) - 1)):
    fs[i].set_parent(fs[i + 1])
sys.stdout.buffer.write(fs[0].read_buffer_at_offset(fs[0].get_media_size(), 0))
";
    let python = require("/usr/bin/python3", "python3-libvhdi");
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libvhdi on {chain:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn vdisk_create(args: &[&str], file: &Path) -> super::support::Out {
    run(vdisk_cmd().arg("create").args(args).arg(file))
}

/// Writes `data` at `offset` through vdisk's own writer (qemu cannot open VHD chains).
fn write(path: &Path, offset: u64, data: &[u8]) {
    let file = StdFile::open(path, Access::ReadWrite).unwrap();
    let img = vdisk_vhd::DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    img.write_at(data, offset).unwrap();
    img.flush().unwrap();
}

const MIB: u64 = 1 << 20;

/// base (8 MiB dynamic, data from qemu-io) ← mid ← top, made by `vdisk create`.
fn chain(dir: &Path) -> [PathBuf; 3] {
    let base = dir.join("base.vhd");
    vdisk_create(
        &["--format", "vhd", "--type", "dynamic", "--size", "8M"],
        &base,
    )
    .ok();
    qemu_io(
        &base,
        &[
            format!("write -P 0x11 0 {}", 3 * MIB),
            format!("write -P 0x22 {} {}", 4 * MIB, 2 * MIB),
        ],
    );
    let mid = dir.join("mid.vhd");
    let out = run(vdisk_cmd()
        .args(["create", "--type", "differencing", "--parent"])
        .arg(&base)
        .arg(&mid));
    out.ok();
    assert!(out.stdout.contains("over parent"), "{}", out.stdout);
    let top = dir.join("top.vhd");
    run(vdisk_cmd()
        .args([
            "create",
            "--type",
            "differencing",
            "--format",
            "vhd",
            "--parent",
        ])
        .arg(&mid)
        .arg(&top))
    .ok();
    [base, mid, top]
}

#[test]
fn created_children_read_their_parent_and_info_shows_the_chain() {
    let dir = tempdir();
    let [base, mid, top] = chain(dir.path());
    let want = libvhdi_chain(&[&base]);
    assert!(
        libvhdi_chain(&[&mid, &base]) == want,
        "libvhdi: child reads its parent"
    );
    assert!(libvhdi_chain(&[&top, &mid, &base]) == want);
    let info = info_ok(&top);
    assert_eq!(text(&info, "type"), "differencing", "{info}");
    assert_eq!(num(&info, "virtual_size"), 8 * MIB);
    let chain = info["chain"].as_array().expect("chain");
    assert_eq!(chain.len(), 2, "{info}");
    assert!(text(&chain[0], "path").ends_with("mid.vhd"), "{info}");
    assert_eq!(text(&chain[0], "type"), "differencing");
    assert!(text(&chain[1], "path").ends_with("base.vhd"), "{info}");
    assert_eq!(text(&chain[1], "type"), "dynamic");
    assert_eq!(text(&chain[1], "format"), "vhd");
    assert!(info_ok(&base)["chain"].as_array().unwrap().is_empty());
    let human = run(vdisk_cmd().arg("info").arg(&top));
    human.ok();
    assert!(human.stdout.contains("parent chain:"), "{}", human.stdout);
    assert!(human.stdout.contains("2. "), "{}", human.stdout);
}

#[test]
fn compacting_each_member_keeps_what_libvhdi_reads_through_the_chain() {
    let dir = tempdir();
    let [base, mid, top] = chain(dir.path());
    // mid: a block equal to its parent, zeros over data, new data; top: zeros over zeros,
    // data equal to mid's view. Block size 2 MiB (the default).
    write(&mid, 0, &vec![0x11; 2 << 20]);
    write(&mid, 4 * MIB, &vec![0; 2 << 20]);
    write(&mid, 6 * MIB + 100, &[0x33; 1000]);
    write(&top, 2 * MIB, &vec![0x11; 1 << 20]);
    write(&top, 6 * MIB, &vec![0; 512]);
    let views = |_: ()| {
        [
            libvhdi_chain(&[&base]),
            libvhdi_chain(&[&mid, &base]),
            libvhdi_chain(&[&top, &mid, &base]),
        ]
    };
    let before = views(());
    let mid_len = file_len(&mid);
    for mode in ["pretrimmed", "prezeroed", "full"] {
        for member in [&top, &mid, &base] {
            let r = compact_ok(member, mode, &[]);
            assert!(views(()) == before, "{mode} on {}: {r}", member.display());
        }
    }
    // mid's copy of its parent's block went; its zeros over parent data stayed.
    assert!(file_len(&mid) < mid_len, "mid shrinks");
    let report = compact_ok(&mid, "prezeroed", &["--dry-run"]);
    assert_eq!(num(&report, "blocks_reclaimed"), 0, "{report}");
    assert_eq!(num(&report, "blocks_allocated_before"), 2, "{report}");
}

#[test]
fn parents_outside_the_folder_need_parent_dir_or_parent() {
    let dir = tempdir();
    let [base, mid, _top] = chain(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let moved = elsewhere.join("base.vhd");
    std::fs::rename(&base, &moved).unwrap();
    // The W2ku locator names the old absolute path: not found now.
    let out = run(vdisk_cmd().args(["info", "--json"]).arg(&mid));
    assert_eq!(out.code, 9, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("base.vhd"), "{}", out.stdout);
    let out = run(vdisk_cmd()
        .args(["info", "--json", "--parent"])
        .arg(&moved)
        .arg(&mid));
    out.ok();
    assert!(text(&out.json()["chain"][0], "path").contains("elsewhere"));
    // A parent that exists only outside the child's folder is refused without consent.
    let outside_dir = tempdir();
    let outside = outside_dir.path().join("base.vhd");
    std::fs::rename(&moved, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join("base.vhd")).unwrap();
    // It is the image's content that names it: exit 4, not a usage error.
    let out = run(vdisk_cmd().args(["info", "--json"]).arg(&mid));
    assert_eq!(out.code, EXIT_INVALID, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("--parent-dir"), "{}", out.stdout);
    let out = run(vdisk_cmd()
        .args(["info", "--json", "--parent-dir"])
        .arg(outside_dir.path())
        .arg(&mid));
    out.ok();
    // check follows the same policy.
    run(vdisk_cmd()
        .args(["check", "--parent-dir"])
        .arg(outside_dir.path())
        .arg(&mid))
    .ok();
    let out = run(vdisk_cmd().arg("check").arg(&mid));
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
}

#[test]
fn create_differencing_refuses_missing_parent_size_and_stray_parent() {
    let dir = tempdir();
    let d = dir.path();
    let child = d.join("c.vhd");
    let out = vdisk_create(&["--type", "differencing"], &child);
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    assert!(out.stderr.contains("--parent"), "{}", out.stderr);
    let out = run(vdisk_cmd()
        .args([
            "create",
            "--type",
            "differencing",
            "--size",
            "1M",
            "--parent",
        ])
        .arg(d.join("p.vhd"))
        .arg(&child));
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    let out = run(vdisk_cmd()
        .args(["create", "--type", "differencing", "--parent"])
        .arg(d.join("missing.vhd"))
        .arg(&child));
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(out.stderr.contains("missing.vhd"), "{}", out.stderr);
    assert!(!child.exists(), "no file left behind");
    let out = run(vdisk_cmd()
        .args([
            "create", "--format", "vhd", "--type", "dynamic", "--size", "1M", "--parent",
        ])
        .arg(d.join("p.vhd"))
        .arg(&child));
    assert_eq!(out.code, EXIT_USAGE, "{}", out.stderr);
    assert!(!child.exists());
}
