//! Seed images, made at run time by qemu-img/qemu-io and by `vdisk create` (+ qemu-io writes,
//! or vdisk's own writer for differencing children, which qemu cannot open): small, with data,
//! zero blocks and trimmed blocks. VHD, VHDX, VDI and qcow2; the VDI ones are in [`vdi`], the
//! qcow2 ones in [`qcow2`].

use std::path::{Path, PathBuf};
use std::process::Command;

use vdisk_core::{Access, FormatDriver, OpenOptions, StdFile};

use super::layout::{self, Format};

mod qcow2;
mod vdi;

/// One seed image.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Short name (`vhd-dynamic`, ...).
    pub name: String,
    /// Its format.
    pub format: Format,
    /// The image file.
    pub path: PathBuf,
    /// For a differencing child: the parent (its file name is what the child's locators name).
    pub parent: Option<PathBuf>,
}

/// Finds `tool` on PATH, or says which Debian package to install.
/// What the 8 MiB dynamic seeds of every format hold: data at the start, a block written as
/// zeros, and three small writes in later blocks (the last one in the last block), so each
/// format's seed has allocated, zero-written and untouched blocks in the same places.
pub(crate) const DYNAMIC_8M_PATTERN: &[&str] = &[
    "write -P 0x55 0 100k",
    "write -P 0 1M 1M",
    "write -P 0x66 2M 4k",
    "write -P 0x67 5M 4k",
    "write -P 0x68 7M 4k",
];

pub fn require(tool: &str, package: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{tool}` is not on PATH: install the Debian package `{package}`"))
}

pub(super) fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || all.contains("failed") {
        return Err(format!("{cmd:?} failed ({}):\n{all}", out.status));
    }
    Ok(())
}

pub(super) fn qemu_io(format: Format, file: &Path, cmds: &[&str]) -> Result<(), String> {
    let mut c = Command::new(require("qemu-io", "qemu-utils")?);
    c.args(["-f", format.qemu()]);
    for x in cmds {
        c.arg("-c").arg(x);
    }
    sh(c.arg(file))
}

pub(super) fn vdisk_create(vdisk: &Path, args: &[&str], file: &Path) -> Result<(), String> {
    sh(Command::new(vdisk).arg("create").args(args).arg(file))
}

/// `vdisk create` of a differencing `child` over `base`, then writes through the library over
/// the parent's data: a block of its own, a whole block and a sector of zeros over parent
/// data, and a block past the parent's data.
pub(super) fn differencing_child(
    vdisk: &Path,
    format: Format,
    base: &Path,
    child: &Path,
) -> Result<(), String> {
    sh(Command::new(vdisk)
        .args(["create", "--type", "differencing", "--parent"])
        .arg(base)
        .arg(child))?;
    write(
        format,
        child,
        &[
            (0, 0x88, 4096),
            (1 << 20, 0, 1 << 20),
            (2 << 20, 0, 4096),
            (6 << 20, 0x99, 8192),
        ],
    )
}

/// Writes `(offset, byte, len)` through vdisk's own driver (qemu cannot write differencing
/// VHD, VHDX or VDI chains).
pub fn write(format: Format, file: &Path, writes: &[(u64, u8, usize)]) -> Result<(), String> {
    let driver: &dyn FormatDriver = match format {
        Format::Vhd => &vdisk_vhd::DRIVER,
        Format::Vhdx => &vdisk_vhdx::DRIVER,
        Format::Vdi => &vdisk_vdi::DRIVER,
        Format::Qcow2 => &vdisk_qcow2::DRIVER,
    };
    let f = StdFile::open(file, Access::ReadWrite).map_err(|e| e.to_string())?;
    let img = driver
        .open(Box::new(f), &OpenOptions::read_write())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    for &(at, byte, len) in writes {
        img.write_at(&vec![byte; len], at)
            .map_err(|e| e.to_string())?;
    }
    img.flush().map_err(|e| e.to_string())
}

/// Sets VHDX BAT entries `(payload index, state, keep offset)`: trimmed blocks as Hyper-V
/// leaves them (UNMAPPED keeping its own offset) and as the spec writes ZERO (offset 0).
fn set_vhdx_states(file: &Path, states: &[(u64, u64, bool)]) -> Result<(), String> {
    let mut b = std::fs::read(file).map_err(|e| e.to_string())?;
    let bat = layout::spans(Format::Vhdx, &b)
        .into_iter()
        .find(|s| s.name == "bat")
        .ok_or("no bat in seed")?;
    for &(i, state, keep) in states {
        let at = usize::try_from(bat.start + 8 * i).map_err(|e| e.to_string())?;
        let old = u64::from_le_bytes(b[at..at + 8].try_into().map_err(|_| "bat")?);
        let off = if keep { old & !0xFFFFF } else { 0 };
        b[at..at + 8].copy_from_slice(&(off | state).to_le_bytes());
    }
    std::fs::write(file, b).map_err(|e| e.to_string())
}

pub(super) fn dig_holes(file: &Path) -> Result<(), String> {
    sh(Command::new(require("fallocate", "util-linux")?)
        .arg("--dig-holes")
        .arg(file))
}

/// Makes the seeds of `formats` in `dir` (created; must be empty or absent).
pub fn make(vdisk: &Path, dir: &Path, formats: &[Format]) -> Result<Vec<Seed>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut seeds = Vec::new();
    let mut add = |name: &str, format: Format, parent: Option<PathBuf>| {
        seeds.push(Seed {
            name: name.to_string(),
            format,
            path: dir.join(format!("{name}.{}", format.ext())),
            parent,
        });
    };
    let p = |name: &str, f: Format| dir.join(format!("{name}.{}", f.ext()));
    if formats.contains(&Format::Vhd) {
        let f = Format::Vhd;
        sh(Command::new(require("qemu-img", "qemu-utils")?)
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(p("vhd-fixed", f))
            .arg("3M"))?;
        qemu_io(
            f,
            &p("vhd-fixed", f),
            &["write -P 0x11 0 64k", "write -P 0x22 1M 4k"],
        )?;
        add("vhd-fixed", f, None);

        sh(Command::new(require("qemu-img", "qemu-utils")?)
            .args(["create", "-q", "-f", "vpc"])
            .arg(p("vhd-dynamic-qemu", f))
            .arg("6M"))?;
        qemu_io(
            f,
            &p("vhd-dynamic-qemu", f),
            &[
                "write -P 0x33 0 100k",
                "write -P 0 2M 2M",
                "write -P 0x44 4M 512",
            ],
        )?;
        add("vhd-dynamic-qemu", f, None);

        let dynamic = p("vhd-dynamic", f);
        vdisk_create(
            vdisk,
            &[
                "--format",
                "vhd",
                "--type",
                "dynamic",
                "--size",
                "2M",
                "--block-size",
                "64K",
            ],
            &dynamic,
        )?;
        qemu_io(
            f,
            &dynamic,
            &[
                "write -P 0x55 0 100k",
                "write -P 0 128k 64k",
                "write -P 0x66 320k 4k",
                "write -P 0 512k 64k",
                "write -P 0x77 1600k 64k",
            ],
        )?;
        add("vhd-dynamic", f, None);

        let holes = p("vhd-dynamic-holes", f);
        std::fs::copy(&dynamic, &holes).map_err(|e| e.to_string())?;
        dig_holes(&holes)?;
        add("vhd-dynamic-holes", f, None);

        let base = p("vhd-base", f);
        std::fs::copy(&dynamic, &base).map_err(|e| e.to_string())?;
        let child = p("vhd-child", f);
        sh(Command::new(vdisk)
            .args(["create", "--type", "differencing", "--parent"])
            .arg(&base)
            .arg(&child))?;
        write(
            f,
            &child,
            &[
                (0, 0x88, 4096),
                (128 << 10, 0, 65536),
                (64 << 10, 0, 4096),
                (600 << 10, 0x99, 8192),
            ],
        )?;
        add("vhd-child", f, Some(base));
    }
    if formats.contains(&Format::Vhdx) {
        let f = Format::Vhdx;
        let fixed = p("vhdx-fixed", f);
        sh(Command::new(require("qemu-img", "qemu-utils")?)
            .args([
                "create",
                "-q",
                "-f",
                "vhdx",
                "-o",
                "subformat=fixed,block_size=1M,log_size=1M",
            ])
            .arg(&fixed)
            .arg("4M"))?;
        qemu_io(f, &fixed, &["write -P 0x11 0 64k", "write -P 0x22 2M 4k"])?;
        set_vhdx_states(&fixed, &[(3, 3, true)])?;
        add("vhdx-fixed", f, None);

        let q = p("vhdx-dynamic-qemu", f);
        sh(Command::new(require("qemu-img", "qemu-utils")?)
            .args([
                "create",
                "-q",
                "-f",
                "vhdx",
                "-o",
                "block_size=1M,log_size=1M",
            ])
            .arg(&q)
            .arg("6M"))?;
        qemu_io(
            f,
            &q,
            &[
                "write -P 0x33 0 100k",
                "write -P 0 1M 1M",
                "write -P 0x44 3M 4k",
                "write -P 0x45 4M 4k",
            ],
        )?;
        // Block 4 trimmed by the guest (UNMAPPED, own offset kept), block 5 marked ZERO.
        set_vhdx_states(&q, &[(4, 3, true), (5, 2, false)])?;
        add("vhdx-dynamic-qemu", f, None);

        let dynamic = p("vhdx-dynamic", f);
        vdisk_create(
            vdisk,
            &[
                "--format",
                "vhdx",
                "--type",
                "dynamic",
                "--size",
                "8M",
                "--block-size",
                "1M",
            ],
            &dynamic,
        )?;
        qemu_io(f, &dynamic, DYNAMIC_8M_PATTERN)?;
        set_vhdx_states(&dynamic, &[(5, 3, false)])?;
        add("vhdx-dynamic", f, None);

        let holes = p("vhdx-dynamic-holes", f);
        std::fs::copy(&dynamic, &holes).map_err(|e| e.to_string())?;
        dig_holes(&holes)?;
        add("vhdx-dynamic-holes", f, None);

        let base = p("vhdx-base", f);
        std::fs::copy(&dynamic, &base).map_err(|e| e.to_string())?;
        let child = p("vhdx-child", f);
        differencing_child(vdisk, f, &base, &child)?;
        add("vhdx-child", f, Some(base));
    }
    if formats.contains(&Format::Vdi) {
        vdi::make(vdisk, dir, &mut add)?;
    }
    if formats.contains(&Format::Qcow2) {
        qcow2::make(vdisk, dir, &mut add)?;
    }
    Ok(seeds)
}
