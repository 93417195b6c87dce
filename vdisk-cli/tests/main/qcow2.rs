//! qcow2 through the `vdisk` binary: detected, described, checked and compacted.

use super::support::{
    EXIT_INVALID, Snapshot, info_ok, qemu_create_as, qemu_io_as, run, tempdir, text, vdisk_cmd,
    vdisk_compact,
};

#[test]
fn a_qcow2_is_detected_described_checked_clean_and_compacted_to_an_image_qemu_checks_clean() {
    let dir = tempdir();
    let file = dir.path().join("disk.img");
    qemu_create_as(&file, "qcow2", "cluster_size=4096,refcount_bits=8", "8M");
    let writes = ["write -P 3 0 1M", "write -P 0 0 512k", "write -P 4 7M 64k"];
    qemu_io_as("qcow2", &file, &writes.map(String::from));
    let v = info_ok(&file);
    assert_eq!(text(&v, "format"), "qcow2");
    assert_eq!(text(&v, "type"), "dynamic");
    let details = &v["details"];
    assert_eq!(details["cluster size"].as_str(), Some("4096"), "{v}");
    assert_eq!(details["refcount width"].as_str(), Some("8 bits"), "{v}");
    assert_eq!(details["version"].as_str(), Some("3"), "{v}");
    let out = run(vdisk_cmd().args(["check"]).arg(&file));
    assert!(out.stdout.contains("no problems found"), "{}", out.stdout);
    out.expect_code(0);
    let original = dir.path().join("original.qcow2");
    std::fs::copy(&file, &original).unwrap();
    let before = std::fs::metadata(&file).unwrap().len();
    let out = vdisk_compact(&file, "prezeroed", &[]);
    out.expect_code(0);
    // The 128 clusters written with zeros are freed and the rest packed down.
    assert!(
        std::fs::metadata(&file).unwrap().len() + (512 << 10) <= before,
        "{}",
        out.stdout
    );
    let check = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&file)
        .output()
        .expect("qemu-img is needed for this test");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let cmp = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .arg(&original)
        .arg(&file)
        .output()
        .expect("qemu-img is needed for this test");
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

#[test]
fn a_qcow2_with_a_lowered_refcount_fails_check_and_a_dirty_one_names_qemu_img_check() {
    use std::os::unix::fs::FileExt;
    let dir = tempdir();
    let file = dir.path().join("d.qcow2");
    qemu_create_as(&file, "qcow2", "cluster_size=65536", "8M");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    // Refcount of the header cluster (entry 0 of the first refcount block) set to 0.
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 48).unwrap();
    let reftable = u64::from_be_bytes(b);
    f.read_exact_at(&mut b, reftable).unwrap();
    f.write_all_at(&[0, 0], u64::from_be_bytes(b)).unwrap();
    let out = run(vdisk_cmd().args(["check"]).arg(&file));
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("refcount 0 but 1 references"),
        "{}",
        out.stdout
    );
    f.write_all_at(&1u64.to_be_bytes(), 72).unwrap();
    let pristine = Snapshot::of(&file);
    let out = run(vdisk_cmd().args(["info"]).arg(&file));
    assert_ne!(
        out.code, EXIT_INVALID,
        "a dirty image is unsupported, not damaged"
    );
    assert!(
        out.stderr.contains("qemu-img check -r all"),
        "{}",
        out.stderr
    );
    pristine.assert_unchanged(&file, true, "dirty qcow2");
}

#[test]
fn vdisk_create_makes_a_qcow2_that_qemu_img_checks_clean_with_the_cluster_size_asked() {
    let dir = tempdir();
    let file = dir.path().join("new.qcow2");
    run(vdisk_cmd()
        .args([
            "create", "--format", "qcow2", "--type", "dynamic", "--size", "64M",
        ])
        .args(["--block-size", "4096"])
        .arg(&file))
    .ok();
    let out = super::support::qemu_img([
        std::ffi::OsStr::new("check"),
        std::ffi::OsStr::new("-f"),
        std::ffi::OsStr::new("qcow2"),
        file.as_os_str(),
    ]);
    out.ok();
    let info = super::support::qemu_img([
        std::ffi::OsStr::new("info"),
        std::ffi::OsStr::new("--output=json"),
        file.as_os_str(),
    ]);
    assert!(
        info.stdout.contains("\"cluster-size\": 4096"),
        "{}",
        info.stdout
    );
    assert!(
        info.stdout.contains("\"virtual-size\": 67108864"),
        "{}",
        info.stdout
    );
    let v = info_ok(&file);
    assert_eq!(text(&v, "format"), "qcow2");
}

#[test]
fn vdisk_create_makes_a_qcow2_child_of_a_qcow2_that_qemu_reads_through() {
    let dir = tempdir();
    let base = dir.path().join("base.qcow2");
    let child = dir.path().join("child.qcow2");
    qemu_create_as(&base, "qcow2", "cluster_size=65536", "8M");
    qemu_io_as("qcow2", &base, &["write -P 7 0 1M".to_string()]);
    run(vdisk_cmd()
        .args(["create", "--type", "differencing", "--parent"])
        .arg(&base)
        .arg(&child))
    .ok();
    let info = super::support::qemu_img([
        std::ffi::OsStr::new("info"),
        std::ffi::OsStr::new("--output=json"),
        child.as_os_str(),
    ]);
    assert!(
        info.stdout.contains("\"backing-filename\": \"base.qcow2\""),
        "{}",
        info.stdout
    );
    let cmp = super::support::qemu_img([
        std::ffi::OsStr::new("compare"),
        base.as_os_str(),
        child.as_os_str(),
    ]);
    cmp.ok();
    let v = info_ok(&child);
    assert_eq!(text(&v, "type"), "differencing");
}

/// `vdisk create --format qcow2 --type differencing` over a VHD, a VHDX and a VDI: qemu reads
/// the child as its parent, with the format recorded under qemu's name, and the child then
/// compacts to an image qemu checks clean and reads unchanged.
#[test]
fn vdisk_create_makes_qcow2_children_of_vhd_vhdx_and_vdi_parents_that_qemu_reads_and_vdisk_compacts()
 {
    use std::ffi::OsStr;
    let dir = tempdir();
    for (fmt, options) in [
        ("vpc", "subformat=dynamic"),
        ("vhdx", "block_size=1048576"),
        ("vdi", "static=off"),
    ] {
        let base = dir.path().join(format!("base-{fmt}.img"));
        let child = dir.path().join(format!("child-of-{fmt}.qcow2"));
        qemu_create_as(&base, fmt, options, "8M");
        qemu_io_as(fmt, &base, &["write -P 7 0 2M".to_string()]);
        run(vdisk_cmd()
            .args(["create", "--format", "qcow2", "--block-size", "4096"])
            .args(["--type", "differencing", "--parent"])
            .arg(&base)
            .arg(&child))
        .ok();
        let info = super::support::qemu_img([
            OsStr::new("info"),
            OsStr::new("--output=json"),
            child.as_os_str(),
        ]);
        assert!(
            info.stdout
                .contains(&format!("\"backing-filename-format\": \"{fmt}\"")),
            "{}",
            info.stdout
        );
        super::support::qemu_img([OsStr::new("check"), child.as_os_str()]).ok();
        super::support::qemu_img([OsStr::new("compare"), base.as_os_str(), child.as_os_str()]).ok();
        // The child's own clusters: data, zeros over the parent's data, data again.
        let writes = [
            "write -P 8 1M 1M",
            "write -P 0 0 512k",
            "write -P 9 6M 256k",
        ];
        qemu_io_as("qcow2", &child, &writes.map(String::from));
        let original = dir.path().join(format!("original-of-{fmt}.qcow2"));
        std::fs::copy(&child, &original).unwrap();
        let before = std::fs::metadata(&child).unwrap().len();
        vdisk_compact(&child, "prezeroed", &[]).expect_code(0);
        // The 128 zero-written 4 KiB clusters become zero clusters and the file shrinks.
        assert!(
            std::fs::metadata(&child).unwrap().len() + (512 << 10) <= before,
            "{fmt}"
        );
        super::support::qemu_img([OsStr::new("check"), child.as_os_str()]).ok();
        super::support::qemu_img([
            OsStr::new("compare"),
            original.as_os_str(),
            child.as_os_str(),
        ])
        .ok();
        let v = info_ok(&child);
        assert_eq!(text(&v, "type"), "differencing", "{fmt}");
    }
}

/// A snapshot id 65535 bytes long holding terminal escape sequences (what a hostile image can
/// store): `info` prints it escaped and cut, `check` and `compact` quote it escaped, nothing
/// panics and the file is unchanged.
#[test]
fn a_snapshot_id_of_65535_bytes_with_escape_sequences_is_shown_escaped_and_cut() {
    use std::io::Write;
    let dir = tempdir();
    let file = dir.path().join("s.qcow2");
    qemu_create_as(&file, "qcow2", "cluster_size=65536", "4M");
    qemu_io_as("qcow2", &file, &["write -P 3 0 64k".to_string()]);
    super::support::qemu_img([
        std::ffi::OsStr::new("snapshot"),
        std::ffi::OsStr::new("-c"),
        std::ffi::OsStr::new("s1"),
        file.as_os_str(),
    ])
    .ok();
    let bytes = std::fs::read(&file).unwrap();
    let table = usize::try_from(u64::from_be_bytes(bytes[64..72].try_into().unwrap())).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let mut edited = bytes.clone();
    edited[table + 12..table + 14].copy_from_slice(&0xffffu16.to_be_bytes());
    edited.extend(b"\x1b]0;owned\x07\x1b[2J\r\xe2\x80\xae".repeat(5000));
    f.write_all(&edited).unwrap();
    drop(f);
    let pristine = Snapshot::of(&file);
    let info = run(vdisk_cmd().arg("info").arg(&file));
    info.expect_code(0);
    let check = run(vdisk_cmd().arg("check").arg(&file));
    let compact = vdisk_compact(&file, "full", &["--dry-run"]);
    for (what, out) in [("info", &info), ("check", &check), ("compact", &compact)] {
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains(['\u{1b}', '\u{7}', '\r', '\u{202e}']),
                "{what} printed a control character: {text:?}"
            );
        }
    }
    let line = info
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("snapshot 1"))
        .unwrap_or_else(|| panic!("no snapshot line: {}", info.stdout));
    assert!(line.contains("\\u{1b}") && line.contains('…'), "{line}");
    assert!(line.chars().count() < 4300, "{line}");
    pristine.assert_unchanged(&file, true, "hostile snapshot id");
}
