//! `vdisk map` against qemu: the extents tile the virtual disk; every `data` extent's file
//! bytes are the guest bytes qemu reads there (so the mapping is right); for VHD, qemu's own
//! `qemu-img map` names the same file offsets (qemu's VHDX driver does not map blocks).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vdisk_core::{Access, FormatDriver, OpenOptions, StdFile};

use crate::main::support::{qemu_img, require, run, tempdir, vdisk};

/// Creates `file` as `format` (`vpc` or `vhdx`) dynamic with 1 MiB blocks... (VHD: 2 MiB, its
/// only block size in qemu) and writes the given blocks, in that order, so the host order
/// differs from the guest order.
fn make(file: &Path, format: &str, size: u64, writes: &[(u64, u64)]) {
    let opts = if format == "vhdx" {
        "subformat=dynamic,block_size=1M"
    } else {
        "subformat=dynamic"
    };
    qemu_img([
        "create",
        "-q",
        "-f",
        format,
        "-o",
        opts,
        file.to_str().unwrap(),
        &size.to_string(),
    ])
    .ok();
    let mut cmd = Command::new(require("qemu-io", "qemu-utils"));
    cmd.args(["-f", format]);
    for (i, &(offset, len)) in writes.iter().enumerate() {
        cmd.arg("-c")
            .arg(format!("write -P {} {offset} {len}", 0x30 + i));
    }
    run(cmd.arg(file)).ok();
}

/// The guest disk as qemu reads it.
fn qemu_raw(file: &Path, format: &str, dir: &Path) -> Vec<u8> {
    let raw = dir.join("guest.raw");
    qemu_img([
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        file.to_str().unwrap(),
        raw.to_str().unwrap(),
    ])
    .ok();
    std::fs::read(raw).unwrap()
}

/// Guest byte → host byte for every stored 64 KiB granule, from qemu's map.
fn qemu_data(file: &Path, format: &str) -> BTreeMap<u64, u64> {
    let out = qemu_img(["map", "--output=json", "-f", format, file.to_str().unwrap()]);
    out.ok();
    let mut map = BTreeMap::new();
    for e in out.json().as_array().unwrap() {
        if e["data"] == Value::Bool(true) {
            let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            let host = e["offset"]
                .as_u64()
                .expect("qemu gives the host offset of data");
            for g in (0..len).step_by(64 << 10) {
                map.insert(start + g, host + g);
            }
        }
    }
    map
}

/// The same from `vdisk map --json`, checking that extents tile the disk.
fn vdisk_data(file: &Path) -> (Value, BTreeMap<u64, u64>) {
    let out = vdisk(["map", "--json", file.to_str().unwrap()]);
    out.ok();
    let v = out.json();
    let size = v["virtual_size"].as_u64().unwrap();
    let mut at = 0;
    let mut map = BTreeMap::new();
    for e in v["extents"].as_array().unwrap() {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        assert_eq!(start, at, "extents must tile the disk: {v}");
        assert!(len > 0);
        at += len;
        if e["state"] == "data" {
            let host = e["host_offset"].as_u64().unwrap();
            for g in (0..len).step_by(64 << 10) {
                map.insert(start + g, host + g);
            }
        }
    }
    assert_eq!(at, size, "extents must end at the virtual size");
    (v, map)
}

#[test]
fn map_shows_the_same_stored_ranges_at_the_same_file_offsets_as_qemu_img_map() {
    let dir = tempdir();
    for (format, block) in [("vhdx", 1u64 << 20), ("vpc", 2 << 20)] {
        let file = dir.path().join(format!("m.{format}"));
        let writes = [
            (5 * block, block),
            (0, 4096),
            (block, block),
            (9 * block + 512, 512),
        ];
        make(&file, format, 12 * block, &writes);
        let (v, got) = vdisk_data(&file);
        if format == "vpc" {
            let want = qemu_data(&file, format);
            assert!(!want.is_empty());
            for (g, h) in &want {
                assert_eq!(got.get(g), Some(h), "{format}: guest {g:#x} in {v}");
            }
        }
        // The file holds, at each mapped offset, what qemu reads at that guest offset.
        let guest = qemu_raw(&file, format, dir.path());
        let host = std::fs::read(&file).unwrap();
        for (g, h) in &got {
            let (g, h) = (usize::try_from(*g).unwrap(), usize::try_from(*h).unwrap());
            assert!(
                host[h..h + (64 << 10)] == guest[g..g + (64 << 10)],
                "{format}: file offset {h:#x} does not hold guest {g:#x}"
            );
        }
        // And vdisk's data extents are exactly the written blocks.
        let stored: Vec<u64> = v["extents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state"] == "data")
            .flat_map(|e| {
                let s = e["start"].as_u64().unwrap();
                let l = e["length"].as_u64().unwrap();
                (s / block..(s + l) / block).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(stored, vec![0, 1, 5, 9], "{format}: {v}");
        let human = vdisk(["map", file.to_str().unwrap()]);
        human.ok();
        assert!(
            human.stdout.contains("file offset") && human.stdout.contains("data"),
            "{}",
            human.stdout
        );
    }
}

#[test]
fn a_differencing_image_maps_what_it_does_not_hold_to_its_parent() {
    let dir = tempdir();
    let base = dir.path().join("base.vhdx");
    make(&base, "vhdx", 8 << 20, &[(0, 8 << 20)]);
    let child = dir.path().join("child.vhdx");
    vdisk([
        "create",
        "--type",
        "differencing",
        "--parent",
        base.to_str().unwrap(),
        child.to_str().unwrap(),
    ])
    .ok();
    // qemu cannot open VHDX children: write through vdisk's own writer.
    let file = StdFile::open(&child, Access::ReadWrite).unwrap();
    let img = vdisk_vhdx::DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap();
    img.write_at(&[7; 1 << 20], 3 << 20).unwrap();
    img.flush().unwrap();
    drop(img);
    let (v, _) = vdisk_data(&child);
    let states: Vec<&str> = v["extents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["parent", "data", "parent"], "{v}");
    assert_eq!(v["kind"], "differencing");
}
