//! VDI seeds: dynamic and static images made by qemu-img (written by qemu-io), dynamic and
//! fixed images made by `vdisk create` (written by qemu-io; one with a block marked zero, one
//! with its zero runs punched out of the host file), and a differencing child made by
//! `vdisk create --type differencing` over a base of its own and written by vdisk's driver
//! (qemu opens no VDI child).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::layout::{Format, vdi};
use super::{differencing_child, dig_holes, qemu_io, require, sh, vdisk_create};

/// Sets map entries `(block, raw entry)` of a VDI as the file's header places the map.
fn set_entries(file: &Path, entries: &[(u64, u32)]) -> Result<(), String> {
    let mut b = std::fs::read(file).map_err(|e| e.to_string())?;
    let h = vdi::Header::read(&b);
    for &(i, raw) in entries {
        let at = usize::try_from(h.bmap + 4 * i).map_err(|e| e.to_string())?;
        b[at..at + 4].copy_from_slice(&raw.to_le_bytes());
    }
    std::fs::write(file, b).map_err(|e| e.to_string())
}

/// Makes the VDI seeds in `dir`, naming each to `add`.
pub(super) fn make(
    vdisk: &Path,
    dir: &Path,
    add: &mut dyn FnMut(&str, Format, Option<PathBuf>),
) -> Result<(), String> {
    let f = Format::Vdi;
    let p = |name: &str| dir.join(format!("{name}.vdi"));
    let qemu_img = require("qemu-img", "qemu-utils")?;

    let q = p("vdi-dynamic-qemu");
    sh(Command::new(&qemu_img)
        .args(["create", "-q", "-f", "vdi"])
        .arg(&q)
        .arg("6M"))?;
    qemu_io(
        f,
        &q,
        &[
            "write -P 0x33 0 100k",
            "write -P 0 2M 1M",
            "write -P 0x44 4M 512",
        ],
    )?;
    add("vdi-dynamic-qemu", f, None);

    let st = p("vdi-static-qemu");
    sh(Command::new(&qemu_img)
        .args(["create", "-q", "-f", "vdi", "-o", "static=on"])
        .arg(&st)
        .arg("4M"))?;
    qemu_io(f, &st, &["write -P 0x11 0 64k", "write -P 0x22 2M 4k"])?;
    add("vdi-static-qemu", f, None);

    let dynamic = p("vdi-dynamic");
    vdisk_create(
        vdisk,
        &["--format", "vdi", "--type", "dynamic", "--size", "8M"],
        &dynamic,
    )?;
    qemu_io(f, &dynamic, super::DYNAMIC_8M_PATTERN)?;
    // Block 6 reads zeros without data (as a discard leaves it).
    set_entries(&dynamic, &[(6, vdi::ZERO)])?;
    add("vdi-dynamic", f, None);

    let holes = p("vdi-dynamic-holes");
    std::fs::copy(&dynamic, &holes).map_err(|e| e.to_string())?;
    dig_holes(&holes)?;
    add("vdi-dynamic-holes", f, None);

    let fixed = p("vdi-fixed");
    vdisk_create(
        vdisk,
        &["--format", "vdi", "--type", "fixed", "--size", "3M"],
        &fixed,
    )?;
    qemu_io(f, &fixed, &["write -P 0x77 0 64k", "write -P 0 1M 4k"])?;
    add("vdi-fixed", f, None);

    // A base of its own (a copy of another seed would share its UUID).
    let base = p("vdi-base");
    vdisk_create(
        vdisk,
        &["--format", "vdi", "--type", "dynamic", "--size", "8M"],
        &base,
    )?;
    qemu_io(
        f,
        &base,
        &[
            "write -P 0x5a 0 100k",
            "write -P 0x5b 1M 1M",
            "write -P 0x5c 2M 4k",
            "write -P 0x5d 5M 4k",
        ],
    )?;
    let child = p("vdi-child");
    differencing_child(vdisk, f, &base, &child)?;
    add("vdi-child", f, Some(base));
    Ok(())
}
