//! The fleet example, `examples/ansible/compact.yml`, run by a real `ansible-playbook`
//! (ansible-core from PyPI) against localhost with connection local: vdisk compacts the images
//! of the host and the playbook gathers the host's JSON Lines report into one CSV table.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::batch::{assert_same_and_valid, field, image, python_rows};
use super::support::{require, run, tempdir};

const MIB: u64 = 1 << 20;

#[test]
fn the_ansible_example_compacts_a_hosts_images_and_gathers_its_report_into_one_table() {
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ansible/compact.yml");
    let dir = tempdir();
    let disks = dir.path().join("vms");
    fs::create_dir(&disks).unwrap();
    let mut images = Vec::new();
    for (name, format) in [("web.vhd", "vpc"), ("db.vhdx", "vhdx"), ("idle.vhd", "vpc")] {
        let path = disks.join(name);
        // idle.vhd has nothing to give back; the others 16 MiB of zeros.
        image(&path, format, if name == "idle.vhd" { 0 } else { 16 * MIB });
        let copy = dir.path().join(format!("pristine-{name}"));
        fs::copy(&path, &copy).unwrap();
        images.push((path, copy));
    }
    let table = dir.path().join("fleet.csv");
    let extra = serde_json::json!({
        "vdisk_hosts": "localhost",
        "vdisk_bin": env!("CARGO_BIN_EXE_vdisk"),
        "vdisk_dirs": [disks],
        "vdisk_report": dir.path().join("host-report.jsonl"),
        "vdisk_table": table,
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    });
    let out = run(Command::new(require(
        "ansible-playbook",
        "ansible-core (from PyPI: pip install ansible-core)",
    ))
    .args(["-i", "localhost,", "-c", "local"])
    .arg(&playbook)
    .arg("-e")
    .arg(extra.to_string())
    .env("ANSIBLE_NOCOLOR", "1")
    .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp")));
    out.ok();
    assert!(
        out.stdout.contains("3 files in ")
            && out.stdout.contains("2 compacted, 1 nothing-to-reclaim"),
        "the host's summary is shown:\n{}",
        out.stdout
    );
    let rows = python_rows(&table);
    assert_eq!(
        rows.len(),
        3,
        "one row per image:\n{}",
        fs::read_to_string(&table).unwrap()
    );
    for (path, pristine) in &images {
        let row = rows
            .iter()
            .find(|r| field(r, "path") == path.to_string_lossy())
            .unwrap_or_else(|| panic!("no row for {}: {rows:?}", path.display()));
        assert_eq!(field(row, "host"), "localhost");
        let idle = path.ends_with("idle.vhd");
        let state = if idle {
            "nothing-to-reclaim"
        } else {
            "compacted"
        };
        assert_eq!(field(row, "state"), state, "{row}");
        let saved: u64 = field(row, "bytes_saved").parse().unwrap();
        assert!(idle || saved >= 16 * MIB, "{row}");
        assert_same_and_valid(path, pristine);
    }
}
