//! qcow2 seeds, made by qemu-img and written by qemu-io: v3 with 64 KiB clusters holding
//! data, zero clusters and discarded clusters (and a copy with its zero runs punched out of
//! the host file); v2 (compat=0.10); 4 KiB clusters with 1-bit and 64-bit refcounts; a
//! compressed copy (`qemu-img convert -c`); one with an internal snapshot taken between two
//! rounds of writes (clusters shared with the snapshot and clusters copied on write); one made
//! by `vdisk create`; and a child over a qcow2 backing file named relative to the child.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::layout::Format;
use super::{DYNAMIC_8M_PATTERN, dig_holes, qemu_io, require, sh, vdisk_create};

/// The v3 seed's writes past [`DYNAMIC_8M_PATTERN`]: a zero cluster written with `-z` and a
/// written cluster discarded by the guest.
const ZERO_AND_DISCARD: &[&str] = &["write -z 3M 64k", "write -P 0x70 6M 128k", "discard 6M 64k"];

fn create(qemu_img: &Path, opts: &str, file: &Path, size: &str) -> Result<(), String> {
    sh(Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-o", opts])
        .arg(file)
        .arg(size))
}

/// Makes the qcow2 seeds in `dir`, naming each to `add`.
pub(super) fn make(
    vdisk: &Path,
    dir: &Path,
    add: &mut dyn FnMut(&str, Format, Option<PathBuf>),
) -> Result<(), String> {
    let f = Format::Qcow2;
    let p = |name: &str| dir.join(format!("{name}.qcow2"));
    let qemu_img = require("qemu-img", "qemu-utils")?;

    let v3 = p("qcow2-v3");
    create(&qemu_img, "compat=1.1,cluster_size=64k", &v3, "8M")?;
    qemu_io(f, &v3, DYNAMIC_8M_PATTERN)?;
    qemu_io(f, &v3, ZERO_AND_DISCARD)?;
    add("qcow2-v3", f, None);

    let holes = p("qcow2-v3-holes");
    std::fs::copy(&v3, &holes).map_err(|e| e.to_string())?;
    dig_holes(&holes)?;
    add("qcow2-v3-holes", f, None);

    let v2 = p("qcow2-v2");
    create(&qemu_img, "compat=0.10", &v2, "4M")?;
    qemu_io(
        f,
        &v2,
        &[
            "write -P 0x33 0 100k",
            "write -P 0 1M 128k",
            "write -P 0x44 3M 4k",
        ],
    )?;
    add("qcow2-v2", f, None);

    for bits in ["1", "64"] {
        let name = format!("qcow2-4k-refcount{bits}");
        let file = p(&name);
        let opts = format!("cluster_size=4096,refcount_bits={bits}");
        create(&qemu_img, &opts, &file, "2M")?;
        qemu_io(
            f,
            &file,
            &[
                "write -P 0x21 0 20k",
                "write -z 64k 8k",
                "write -P 0 128k 4k",
                "write -P 0x22 1M 12k",
                "discard 1M 4k",
            ],
        )?;
        add(&name, f, None);
    }

    let compressed = p("qcow2-compressed");
    sh(Command::new(&qemu_img)
        .args(["convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2"])
        .arg(&v3)
        .arg(&compressed))?;
    // One cluster rewritten uncompressed among the compressed ones.
    qemu_io(f, &compressed, &["write -P 0x71 64k 64k"])?;
    add("qcow2-compressed", f, None);

    let snap = p("qcow2-snapshot");
    create(&qemu_img, "cluster_size=64k", &snap, "4M")?;
    qemu_io(f, &snap, &["write -P 0x41 0 256k", "write -P 0x42 2M 64k"])?;
    sh(Command::new(&qemu_img)
        .args(["snapshot", "-c", "before"])
        .arg(&snap))?;
    qemu_io(
        f,
        &snap,
        &[
            "write -P 0x43 64k 64k",
            "write -z 128k 64k",
            "discard 2M 64k",
            "write -P 0x44 3M 64k",
        ],
    )?;
    add("qcow2-snapshot", f, None);

    let made = p("qcow2-vdisk");
    vdisk_create(
        vdisk,
        &["--format", "qcow2", "--type", "dynamic", "--size", "4M"],
        &made,
    )?;
    qemu_io(f, &made, &["write -P 0x51 0 70k", "write -P 0 1M 64k"])?;
    add("qcow2-vdisk", f, None);

    // The child names its backing file relative to itself, so a worker's copies of both
    // (and the oracle's) form the same chain.
    let base = p("qcow2-base");
    create(&qemu_img, "cluster_size=64k", &base, "8M")?;
    qemu_io(
        f,
        &base,
        &[
            "write -P 0x5a 0 100k",
            "write -P 0x5b 1M 1M",
            "write -P 0x5c 5M 4k",
        ],
    )?;
    let child = p("qcow2-child");
    sh(Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg("qcow2-base.qcow2")
        .arg(&child)
        .current_dir(dir))?;
    qemu_io(
        f,
        &child,
        &[
            "write -P 0x88 0 4k",
            "write -P 0 1M 64k",
            "write -z 1088k 64k",
            "discard 1152k 64k",
            "write -P 0x99 6M 8k",
        ],
    )?;
    add("qcow2-child", f, Some(base));
    Ok(())
}
