//! Linux guest disks for the bench, built at full size with each file system's own tools and
//! the kernel (loop devices, mounts): a sparse raw disk, the file system made on it (bare, in
//! GPT or MBR, or in an LVM2 logical volume), filled with random files through a mount (mtools
//! for FAT32, which this kernel cannot mount), most of them deleted so their blocks keep the
//! old bytes, unmounted cleanly.
//!
//! The ceiling of reclaim on them is [`super::ceiling`]'s; [`verify`] checks a compacted one.
//!
//! The test suite builds small guests in memory (vdisk-cli/tests/main/support/guest*.rs); these
//! are gigabytes, so they stream through files and mounts instead.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::host::{Loop, Mount, sparse_file, tool};
use super::ntfs::{random_bytes, write_random};

const MIB: u64 = 1 << 20;
/// Where a partition starts (and how much the disk keeps after it, for the GPT backup).
const GAP: u64 = MIB;
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const LVM_TYPE: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
/// LVM without device-mapper (there is none here): metadata only, no zeroing through it.
const NO_DM: &str = "global { activation = 0 } devices { use_devicesfile = 0 }";

/// One row of the guest table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// ext4 over the whole disk, no partition table, `mkfs.ext4 -G 4096` (WSL2's ext4.vhdx).
    Ext4Bare,
    Ext4Gpt,
    XfsGpt,
    BtrfsGpt,
    Fat32Mbr,
    ExfatGpt,
    /// GPT partition of type Linux LVM, one PV, a VG with a linear LV holding ext4.
    LvmExt4,
}

impl Guest {
    pub const ALL: [Guest; 7] = [
        Guest::Ext4Bare,
        Guest::Ext4Gpt,
        Guest::XfsGpt,
        Guest::BtrfsGpt,
        Guest::Fat32Mbr,
        Guest::ExfatGpt,
        Guest::LvmExt4,
    ];

    /// The guest's part of the case name (`--only f-linux-guests/xfs` runs that row alone).
    pub fn id(self) -> &'static str {
        match self {
            Guest::Ext4Bare => "ext4-bare",
            Guest::Ext4Gpt => "ext4-gpt",
            Guest::XfsGpt => "xfs",
            Guest::BtrfsGpt => "btrfs",
            Guest::Fat32Mbr => "fat32",
            Guest::ExfatGpt => "exfat",
            Guest::LvmExt4 => "lvm",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Guest::Ext4Bare => "ext4, bare (WSL)",
            Guest::Ext4Gpt => "ext4 in GPT",
            Guest::XfsGpt => "XFS in GPT",
            Guest::BtrfsGpt => "btrfs in GPT",
            Guest::Fat32Mbr => "FAT32 in MBR",
            Guest::ExfatGpt => "exFAT in GPT",
            Guest::LvmExt4 => "LVM2 + ext4",
        }
    }

    /// The tools building and checking this guest needs: (program, Debian package).
    pub fn tools(self) -> Vec<(&'static str, &'static str)> {
        let mut t = vec![
            ("sfdisk", "fdisk"),
            ("losetup", "mount"),
            ("fstrim", "util-linux"),
        ];
        t.extend(match self {
            Guest::Ext4Bare | Guest::Ext4Gpt => {
                vec![("mkfs.ext4", "e2fsprogs"), ("e2fsck", "e2fsprogs")]
            }
            Guest::XfsGpt => vec![("mkfs.xfs", "xfsprogs"), ("xfs_repair", "xfsprogs")],
            Guest::BtrfsGpt => vec![("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs")],
            Guest::Fat32Mbr => vec![
                ("mkfs.fat", "dosfstools"),
                ("fsck.fat", "dosfstools"),
                ("mcopy", "mtools"),
                ("mdel", "mtools"),
            ],
            Guest::ExfatGpt => vec![
                ("mkfs.exfat", "exfatprogs"),
                ("fsck.exfat", "exfatprogs"),
                ("dump.exfat", "exfatprogs"),
                ("mount.exfat-fuse", "exfat-fuse"),
            ],
            Guest::LvmExt4 => vec![
                ("lvm", "lvm2"),
                ("mkfs.ext4", "e2fsprogs"),
                ("e2fsck", "e2fsprogs"),
            ],
        });
        t
    }
}

/// A file written into a guest: its name in the root directory, length and data seed.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub name: String,
    pub len: u64,
    pub seed: u64,
}

/// The files of a fill of `total` bytes: lengths of 1 to 24 MiB plus an odd tail; every
/// `keep_every`-th is kept, the others are deleted.
pub fn plan_files(total: u64, keep_every: usize) -> (Vec<FileSpec>, Vec<FileSpec>) {
    let (mut kept, mut deleted) = (Vec::new(), Vec::new());
    let mut done = 0;
    let mut i = 0u64;
    while done < total {
        let len = ((1 + (i * 7919) % 24) * MIB + i * 4099).min(total - done);
        let f = FileSpec {
            name: format!("file{i:04}.bin"),
            len,
            seed: 5000 + i,
        };
        done += len;
        if usize::try_from(i).unwrap_or(0) % keep_every == 0 {
            kept.push(f);
        } else {
            deleted.push(f);
        }
        i += 1;
    }
    (kept, deleted)
}

/// A built guest: the raw disk and where its file system lies.
pub struct Built {
    pub guest: Guest,
    pub raw: PathBuf,
    /// The file system's bytes on the disk (for LVM: the logical volume, one segment).
    pub volume: Range<u64>,
    /// Extents of the volume group that no logical volume uses (LVM's own report).
    pub unused: Vec<Range<u64>>,
    pub kept: Vec<FileSpec>,
}

/// Builds `guest` on a `size`-byte raw disk at `raw`, writing `fill` bytes of files of which
/// one in `keep_every` stays.
pub fn build(
    guest: Guest,
    raw: &Path,
    size: u64,
    fill: u64,
    keep_every: usize,
    work: &Path,
) -> Result<Built, String> {
    sparse_file(raw, size)?;
    let r = raw.to_string_lossy().into_owned();
    let part = GAP..size - GAP;
    let script = |label: &str, ty: &str| {
        format!(
            "label: {label}\nstart={}, size={}, type={ty}\n",
            part.start / 512,
            (part.end - part.start) / 512
        )
    };
    let (volume, unused) = match guest {
        Guest::Ext4Bare => (0..size, Vec::new()),
        Guest::Fat32Mbr => {
            tool("sfdisk", "fdisk", &["-q", &r], Some(&script("dos", "c")))?;
            (part, Vec::new())
        }
        Guest::ExfatGpt => {
            tool(
                "sfdisk",
                "fdisk",
                &["-q", &r],
                Some(&script("gpt", BASIC_DATA)),
            )?;
            (part, Vec::new())
        }
        Guest::LvmExt4 => {
            tool(
                "sfdisk",
                "fdisk",
                &["-q", &r],
                Some(&script("gpt", LVM_TYPE)),
            )?;
            lvm_volume(raw, part)?
        }
        _ => {
            tool("sfdisk", "fdisk", &["-q", &r], Some(&script("gpt", LINUX)))?;
            (part, Vec::new())
        }
    };
    let (kept, deleted) = plan_files(fill, keep_every);
    let dev = Loop::attach(raw, volume.start, volume.end - volume.start)?;
    let d = dev.0.as_str();
    let mnt = work.join("guest-mnt");
    match guest {
        Guest::Ext4Bare => {
            tool(
                "mkfs.ext4",
                "e2fsprogs",
                &[
                    "-q",
                    "-F",
                    "-E",
                    "nodiscard",
                    "-b",
                    "4096",
                    "-G",
                    "4096",
                    "-L",
                    "wsl",
                    d,
                ],
                None,
            )?;
        }
        Guest::Ext4Gpt | Guest::LvmExt4 => {
            tool(
                "mkfs.ext4",
                "e2fsprogs",
                &["-q", "-F", "-E", "nodiscard", "-L", "guest", d],
                None,
            )?;
        }
        Guest::XfsGpt => {
            tool(
                "mkfs.xfs",
                "xfsprogs",
                &["-q", "-f", "-K", "-L", "guest", d],
                None,
            )?;
        }
        Guest::BtrfsGpt => {
            tool(
                "mkfs.btrfs",
                "btrfs-progs",
                &["-q", "-f", "-K", "-L", "guest", d],
                None,
            )?;
        }
        Guest::Fat32Mbr => {
            tool(
                "mkfs.fat",
                "dosfstools",
                &["-F", "32", "-n", "GUEST", d],
                None,
            )?;
            fill_fat(d, &kept, &deleted, work)?;
        }
        Guest::ExfatGpt => {
            tool("mkfs.exfat", "exfatprogs", &["-L", "GUEST", d], None)?;
        }
    }
    if guest != Guest::Fat32Mbr {
        let m = mount(guest, d, &mnt)?;
        fill_mounted(&m.0, &kept, &deleted)?;
        tool("sync", "coreutils", &[], None)?;
        m.unmount()?;
    }
    drop(dev);
    Ok(Built {
        guest,
        raw: raw.to_path_buf(),
        volume,
        unused,
        kept,
    })
}

/// Mounts the file system on `dev` at `at`, never discarding on its own (freed blocks keep
/// their bytes until the bench asks).
pub(super) fn mount(guest: Guest, dev: &str, at: &Path) -> Result<Mount, String> {
    match guest {
        Guest::ExfatGpt => Mount::new("mount.exfat-fuse", "exfat-fuse", dev, at, "rw"),
        Guest::Ext4Bare | Guest::Ext4Gpt | Guest::LvmExt4 => {
            Mount::new("mount", "mount", dev, at, "nodiscard,noinit_itable")
        }
        Guest::Fat32Mbr => Err("this kernel cannot mount FAT; the bench uses mtools".into()),
        Guest::XfsGpt | Guest::BtrfsGpt => Mount::new("mount", "mount", dev, at, "nodiscard"),
    }
}

/// Writes every file, then deletes the ones not kept.
fn fill_mounted(dir: &Path, kept: &[FileSpec], deleted: &[FileSpec]) -> Result<(), String> {
    let mut all: Vec<&FileSpec> = kept.iter().chain(deleted).collect();
    all.sort_by_key(|f| f.seed);
    for f in &all {
        write_random(&dir.join(&f.name), f.len, f.seed)?;
    }
    for f in deleted {
        let p = dir.join(&f.name);
        std::fs::remove_file(&p).map_err(|e| format!("cannot delete {}: {e}", p.display()))?;
    }
    Ok(())
}

/// FAT32 through mtools: files copied in batches from scratch files, then `mdel`.
fn fill_fat(dev: &str, kept: &[FileSpec], deleted: &[FileSpec], work: &Path) -> Result<(), String> {
    let mut all: Vec<&FileSpec> = kept.iter().chain(deleted).collect();
    all.sort_by_key(|f| f.seed);
    let scratch = work.join("fat-scratch");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    for batch in all.chunks(16) {
        let mut args = vec!["-i".to_string(), dev.to_string()];
        for f in batch {
            let p = scratch.join(&f.name);
            write_random(&p, f.len, f.seed)?;
            args.push(p.to_string_lossy().into_owned());
        }
        args.push("::".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tool("mcopy", "mtools", &refs, None)?;
        for f in batch {
            let _ = std::fs::remove_file(scratch.join(&f.name));
        }
    }
    for batch in deleted.chunks(64) {
        let mut args = vec!["-i".to_string(), dev.to_string()];
        args.extend(batch.iter().map(|f| format!("::{}", f.name)));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tool("mdel", "mtools", &refs, None)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Runs LVM on the single device `dev` without device-mapper; returns stdout.
fn lvm(dev: &str, args: &[&str]) -> Result<String, String> {
    let mut all = args.to_vec();
    all.extend(["--devices", dev, "--config", NO_DM]);
    super::host::tool_env(
        "lvm",
        "lvm2",
        &all,
        None,
        &[("LVM_SUPPRESS_FD_WARNINGS", "1")],
    )
}

/// Makes the partition `part` of `raw` a PV with one VG (4 MiB extents) and one linear LV
/// leaving an eighth of the VG unused; returns the LV's disk bytes and the unused extents.
fn lvm_volume(raw: &Path, part: Range<u64>) -> Result<(Range<u64>, Vec<Range<u64>>), String> {
    let dev = Loop::attach(raw, part.start, part.end - part.start)?;
    let d = dev.0.as_str();
    let vg = format!("vdiskbench{}", std::process::id());
    lvm(d, &["pvcreate", "-q", "-y", "-ff", d])?;
    lvm(d, &["vgcreate", "-q", "-s", "4m", &vg, d])?;
    lvm(
        d,
        &[
            "lvcreate", "-q", "-an", "-Zn", "-y", "-l", "87%VG", "-n", "data", &vg,
        ],
    )?;
    let out = lvm(
        d,
        &[
            "pvs",
            "--segments",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ",",
            "-o",
            "pe_start,vg_extent_size,pvseg_start,pvseg_size,lv_name",
        ],
    )?;
    let (mut lv, mut unused) = (Vec::new(), Vec::new());
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.trim().split(',').collect();
        let n = |i: usize| -> Result<u64, String> {
            f.get(i)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("cannot read `lvm pvs` line {line:?}"))
        };
        let start = part.start + n(0)? + n(2)? * n(1)?;
        let r = start..start + n(3)? * n(1)?;
        if f.get(4).is_some_and(|s| !s.trim().is_empty()) {
            lv.push(r);
        } else {
            unused.push(r);
        }
    }
    match lv[..] {
        [ref one] => Ok((one.clone(), unused)),
        _ => Err(format!("expected one LV segment, lvm says: {out}")),
    }
}

/// Checks a guest after compaction with the file system's own checker on the raw disk `raw`
/// (read back from the compacted image), and reads every kept file back byte for byte.
pub fn verify(built: &Built, raw: &Path, work: &Path) -> Result<(), String> {
    let vol = &built.volume;
    let dev = Loop::attach(raw, vol.start, vol.end - vol.start)?;
    let d = dev.0.as_str();
    match built.guest {
        Guest::Ext4Bare | Guest::Ext4Gpt | Guest::LvmExt4 => {
            tool("e2fsck", "e2fsprogs", &["-fn", d], None)?;
        }
        Guest::XfsGpt => {
            tool("xfs_repair", "xfsprogs", &["-n", d], None)?;
        }
        Guest::BtrfsGpt => {
            tool("btrfs", "btrfs-progs", &["check", "--readonly", d], None)?;
        }
        Guest::Fat32Mbr => {
            tool("fsck.fat", "dosfstools", &["-n", d], None)?;
        }
        Guest::ExfatGpt => {
            tool("fsck.exfat", "exfatprogs", &["-n", d], None)?;
        }
    }
    let mismatch = |f: &FileSpec, got: usize| {
        format!(
            "CONTENT MISMATCH: {} of the compacted {} guest does not read back as written ({got} of {} bytes)",
            f.name,
            built.guest.name(),
            f.len
        )
    };
    if built.guest == Guest::Fat32Mbr {
        let out = work.join("fat-verify");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        for f in &built.kept {
            let p = out.join(&f.name);
            let ps = p.to_string_lossy().into_owned();
            tool(
                "mcopy",
                "mtools",
                &["-n", "-i", d, &format!("::{}", f.name), &ps],
                None,
            )?;
            let got = std::fs::read(&p).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&p);
            if got != random_bytes(f.len, f.seed) {
                return Err(mismatch(f, got.len()));
            }
        }
        return Ok(());
    }
    let m = match built.guest {
        Guest::ExfatGpt => Mount::new(
            "mount.exfat-fuse",
            "exfat-fuse",
            d,
            &work.join("verify-mnt"),
            "ro",
        )?,
        _ => Mount::new("mount", "mount", d, &work.join("verify-mnt"), "ro")?,
    };
    for f in &built.kept {
        let got = std::fs::read(m.0.join(&f.name)).map_err(|e| format!("{}: {e}", f.name))?;
        if got != random_bytes(f.len, f.seed) {
            return Err(mismatch(f, got.len()));
        }
    }
    m.unmount()
}
