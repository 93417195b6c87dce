//! Volume Shadow Copies (issue 12, class 10) on real volumes made by Windows: a snapshot reads
//! the clusters of files deleted after it from the live volume's free space, so reclaiming
//! that space destroys the snapshot's copy. Fixtures (tests/fixtures/windows-ntfs, SOURCES.md):
//! dfvfs `vsstest` (1 GiB NTFS, 2 stores on the volume), dfir_ntfs `vss_1_vol` (GPT, 2 shadow
//! copies whose store is on another disk) and `vss_3_volstor` (MBR; volume 2's 2 shadow copies
//! are stored on volume 1), dfvfs `windows_volume` (no VSS).
//!
//! Oracles: libvshadow's `pyvshadow` (Debian `python3-libvshadow`) reads every store of the
//! raw disk exported by `qemu-img convert -O raw` before and after; `qemu-img compare`.
//! Tools: qemu-utils, python3-libvshadow, tar, gzip, coreutils (dd).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::support::{
    assert_qemu_identical_as, compact_ok, fixtures_dir, info_ok, qemu_img, require, run, tempdir,
    text,
};

const NOTE: &str = "volume has shadow copies (restore points); their data would be lost";

fn windows_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("../windows-ntfs").join(name)
}

/// A dynamic VHDX of the raw disk `raw`, in 1 MiB blocks (so free clusters fill whole blocks).
fn to_vhdx(raw: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    qemu_img([
        "convert".as_ref(),
        "-O".as_ref(),
        "vhdx".as_ref(),
        "-o".as_ref(),
        "subformat=dynamic,block_size=1M".as_ref(),
        raw.as_os_str(),
        out.as_os_str(),
    ])
    .ok();
    out
}

/// The raw disk of a qcow2 fixture.
fn raw_of_qcow2(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}.raw"));
    let src = windows_fixture(name);
    qemu_img([
        "convert".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        src.as_os_str(),
        out.as_os_str(),
    ])
    .ok();
    out
}

/// The one sparse raw disk inside a dfir_ntfs `.tar.gz` fixture (5 GiB, mostly holes).
fn raw_of_tar(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}.raw"));
    let mut tar = Command::new(require("tar", "tar"))
        .arg("-xzOf")
        .arg(windows_fixture(name))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let status = Command::new(require("dd", "coreutils"))
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .stdin(tar.stdout.take().expect("tar stdout"))
        .status()
        .expect("run dd");
    assert!(
        status.success() && tar.wait().expect("tar").success(),
        "unpacking {name}"
    );
    out
}

/// SHA-256 of every shadow copy of the NTFS volume at `offset` of `image`, read by libvshadow
/// from the raw disk `qemu-img` exports.
fn store_hashes(image: &Path, offset: u64) -> Vec<String> {
    let dir = tempdir();
    let raw = dir.path().join("export.raw");
    qemu_img([
        "convert".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        image.as_os_str(),
        raw.as_os_str(),
    ])
    .ok();
    let script = r#"
import sys, hashlib, pyvshadow
class Window:
    def __init__(s, path, off):
        s.f = open(path, 'rb'); s.off = off; s.f.seek(0, 2); s.size = s.f.tell() - off; s.pos = 0
    def read(s, n=-1):
        n = s.size - s.pos if n < 0 else n
        s.f.seek(s.off + s.pos); d = s.f.read(n); s.pos += len(d); return d
    def seek(s, o, w=0):
        s.pos = o if w == 0 else (s.pos + o if w == 1 else s.size + o)
    def tell(s): return s.pos
    def get_size(s): return s.size
v = pyvshadow.volume(); v.open_file_object(Window(sys.argv[1], int(sys.argv[2])))
for i in range(v.number_of_stores):
    st = v.get_store(i); h = hashlib.sha256(); size = st.get_size(); o = 0
    while o < size:
        d = st.read_buffer_at_offset(min(1 << 22, size - o), o); h.update(d); o += len(d)
    print(h.hexdigest())
"#;
    let python = require("/usr/bin/python3", "python3-libvshadow");
    let out = run(Command::new(python)
        .args(["-c", script])
        .arg(&raw)
        .arg(offset.to_string()));
    out.ok();
    let hashes: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert!(
        !hashes.is_empty(),
        "pyvshadow found no store in {}",
        image.display()
    );
    hashes
}

/// The `volumes` entry of `report` that starts at `start`.
fn volume_at(report: &Value, start: u64) -> &Value {
    report["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["start"].as_u64() == Some(start)))
        .unwrap_or_else(|| panic!("no volume at {start}: {report}"))
}

#[test]
fn compaction_in_every_file_system_mode_leaves_every_shadow_copy_reading_the_same() {
    let dir = tempdir();
    let raw = raw_of_qcow2("dfvfs_vsstest.qcow2", dir.path());
    let original = to_vhdx(&raw, dir.path(), "vsstest.vhdx");
    let before = store_hashes(&original, 0);
    assert_eq!(before.len(), 2);
    let info = info_ok(&original);
    let v = volume_at(&info, 0);
    assert_eq!(text(v, "state"), "untrusted", "{info}");
    assert_eq!(text(v, "reason"), NOTE);
    for mode in ["full", "quick", "retrim"] {
        let image = to_vhdx(&raw, dir.path(), &format!("{mode}.vhdx"));
        let notes = compact_ok(&image, mode, &[])["notes"].to_string();
        assert!(notes.contains(NOTE), "{mode}: {notes}");
        assert!(notes.contains("--discard-shadow-copies"), "{notes}");
        assert_eq!(
            store_hashes(&image, 0),
            before,
            "{mode}: a shadow copy changed"
        );
        assert_qemu_identical_as("vhdx", &original, &image);
    }
}

/// With the option the volume's free space is used (trusted, every free cluster offered) and
/// the note says the snapshot data is discarded. (In 1 MiB blocks no snapshot-read cluster
/// fills a whole block, so the stores happen to survive here; the loss itself is shown with
/// cluster-sized blocks in `with_cluster_sized_blocks_only_the_guard_keeps_the_shadow_copies_from_changing`.)
#[test]
fn discard_shadow_copies_reclaims_their_space_and_says_the_snapshot_data_is_discarded() {
    let dir = tempdir();
    let raw = raw_of_qcow2("dfvfs_vsstest.qcow2", dir.path());
    let image = to_vhdx(&raw, dir.path(), "vsstest.vhdx");
    let r = compact_ok(&image, "full", &["--discard-shadow-copies"]);
    assert!(
        r["notes"].to_string().contains("that data is discarded"),
        "{r}"
    );
    let v = volume_at(&r, 0);
    assert_eq!(
        (text(v, "state"), text(v, "hazard")),
        ("trusted", "shadow-copies")
    );
    assert!(v["free_bytes"].as_u64() > Some(600 << 20), "{r}");
}

#[test]
fn snapshots_stored_on_another_volume_still_guard_the_live_volume() {
    let dir = tempdir();
    // vss_1_vol: GPT, NTFS at sector 67584; its store is on another disk.
    let raw = raw_of_tar("dfir_ntfs_vss_1_vol.tar.gz", dir.path());
    let original = to_vhdx(&raw, dir.path(), "vol.vhdx");
    let image = to_vhdx(&raw, dir.path(), "vol-full.vhdx");
    let r = compact_ok(&image, "full", &[]);
    let v = volume_at(&r, 67584 * 512);
    assert_eq!((text(v, "state"), text(v, "reason")), ("untrusted", NOTE));
    assert_qemu_identical_as("vhdx", &original, &image);
}

#[test]
fn a_volume_holding_another_volumes_store_is_trusted_and_keeps_the_store_files() {
    let dir = tempdir();
    // vss_3_volstor: MBR; volume 1 at sector 2048 holds the store of volume 2 (sector 4196352).
    let raw = raw_of_tar("dfir_ntfs_vss_3_volstor.tar.gz", dir.path());
    let vol1 = 2048 * 512;
    let image = to_vhdx(&raw, dir.path(), "volstor.vhdx");
    let r = compact_ok(&image, "full", &[]);
    assert_eq!(text(volume_at(&r, vol1), "state"), "trusted", "{r}");
    let v2 = volume_at(&r, 4_196_352 * 512);
    assert_eq!((text(v2, "state"), text(v2, "reason")), ("untrusted", NOTE));
    // The store's header, block list, range list and bitmap (from volume 1's catalog) read
    // as before: the store files are allocated in volume 1's $Bitmap.
    let after = dir.path().join("after.raw");
    qemu_img([
        "convert".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        image.as_os_str(),
        after.as_os_str(),
    ])
    .ok();
    let (before, after) = (
        std::fs::File::open(&raw).unwrap(),
        std::fs::File::open(&after).unwrap(),
    );
    for at in [0x5fe8_0000u64, 0x5fe8_4000, 0x5fe8_8000, 0x5fe9_0000] {
        let (mut x, mut y) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
        before.read_exact_at(&mut x, vol1 + at).unwrap();
        after.read_exact_at(&mut y, vol1 + at).unwrap();
        assert!(
            x.iter().any(|&b| b != 0),
            "store record at {at:#x} is empty"
        );
        assert_eq!(x, y, "store record at {at:#x} changed");
    }
}

#[test]
fn a_volume_without_shadow_copies_is_still_analysed() {
    let dir = tempdir();
    let raw = raw_of_qcow2("dfvfs_windows_volume.qcow2", dir.path());
    let image = to_vhdx(&raw, dir.path(), "winvol.vhdx");
    let r = compact_ok(&image, "full", &["--dry-run"]);
    let v = volume_at(&r, 0);
    assert_eq!(text(v, "state"), "trusted", "{r}");
    assert!(v["hazard"].is_null(), "{r}");
}

/// The loss the guard prevents, shown on real data: in a dynamic VHD of 4 KiB blocks (one NTFS
/// cluster each), clusters that `$Bitmap` calls free but the snapshots of `vsstest` still read
/// fill whole blocks. `full` without the option keeps every shadow copy reading the same; with
/// `--discard-shadow-copies` the same run changes what the snapshots read, so the first half
/// of this test would fail without the guard.
#[test]
fn with_cluster_sized_blocks_only_the_guard_keeps_the_shadow_copies_from_changing() {
    let dir = tempdir();
    let raw = raw_of_qcow2("dfvfs_vsstest.qcow2", dir.path());
    let before = store_hashes(&raw, 0);
    assert_eq!(before.len(), 2);
    let guarded = dir.path().join("guarded.vhd");
    run(super::support::vdisk_cmd()
        .args(["create", "--format", "vhd", "--type", "dynamic"])
        .args(["--block-size", "4K", "--size", "1G"])
        .arg(&guarded))
    .ok();
    qemu_img([
        "convert".as_ref(),
        "-n".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        "vpc".as_ref(),
        raw.as_os_str(),
        guarded.as_os_str(),
    ])
    .ok();
    let discarded = dir.path().join("discarded.vhd");
    std::fs::copy(&guarded, &discarded).unwrap();

    let r = compact_ok(&guarded, "full", &[]);
    assert!(r["notes"].to_string().contains(NOTE), "{r}");
    assert_eq!(
        store_hashes(&guarded, 0),
        before,
        "a shadow copy changed although the volume was guarded"
    );

    let r = compact_ok(&discarded, "full", &["--discard-shadow-copies"]);
    assert!(r["blocks_reclaimed_fs"].as_u64() > Some(0), "{r}");
    assert_ne!(
        store_hashes(&discarded, 0),
        before,
        "reclaiming the free clusters with the guard lifted should change a snapshot; if it \
         does not, this fixture no longer shows what the guard protects"
    );
}
