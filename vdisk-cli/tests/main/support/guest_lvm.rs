//! LVM2 guest disks built with LVM's own tools: a raw disk of random bytes with one GPT
//! partition of type "Linux LVM", made a physical volume by `pvcreate` through a loop device,
//! a volume group and logical volumes made by `vgcreate`/`lvcreate`/`lvextend`/`lvremove`
//! without device-mapper (`global/activation = 0`, `-Zn`: there is none here). A logical
//! volume's file system is made in a file by its own tools and written into the disk at the
//! LV's extents as LVM reports them (`pvs --segments`); LVM's own view also gives the free
//! extents. The test oracle for free space is therefore LVM's map plus each file system's.
//!
//! Tools (a missing one fails the test): `lvm2`, `fdisk` (sfdisk), `mount` (losetup),
//! `qemu-utils`, and the file systems' own: `ntfs-3g`, `e2fsprogs`.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use super::guest::{noise, os, read_back_kept_outside, tool, whole_blocks_in};
use super::guest_ext4::{Files, Fill, assert_files_read_back, format_volume};
use super::ntfs::{MIB, SECTOR};
use super::{require, run, tempdir};

/// The GPT type of a Linux LVM partition.
const LVM_TYPE: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
/// Options every LVM command gets: no device-mapper, no zeroing through it, no devices file.
const NO_DM: &str = "global { activation = 0 } devices { use_devicesfile = 0 }";

/// A loop device over a byte range of a file, detached when dropped (also on failure).
pub struct Loop(pub String);

impl Loop {
    /// Attaches `len` bytes of `file` at `offset`, read-only if `ro`.
    pub fn attach(file: &Path, offset: u64, len: u64, ro: bool) -> Loop {
        let mut cmd = Command::new(require("losetup", "mount"));
        cmd.args([
            "-f",
            "--show",
            "-o",
            &offset.to_string(),
            "--sizelimit",
            &len.to_string(),
        ]);
        if ro {
            cmd.arg("-r");
        }
        let out = run(cmd.arg(file));
        out.ok();
        Loop(out.stdout.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Runs the LVM command `args` on the single device `dev` only; returns stdout.
#[track_caller]
pub fn lvm(dev: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(require("lvm", "lvm2"));
    cmd.args(args)
        .args(["--devices", dev, "--config", NO_DM])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1");
    let out = run(&mut cmd);
    out.ok();
    out.stdout
}

/// One LV's pieces: (first logical extent, disk bytes).
type Pieces = Vec<(u64, Range<u64>)>;

/// What a logical volume of the test disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Random bytes: no file system; nothing in it may change.
    Noise,
    /// NTFS made by `mkntfs -Q` over random bytes, with files copied in by `ntfscp`.
    Ntfs,
    /// ext4 made by `mkfs.ext4 -d` over random bytes from random files, most of them then
    /// removed by `debugfs -w` (their blocks keep the old bytes).
    Ext4,
}

/// One logical volume of the test disk.
#[derive(Debug, Clone)]
pub struct Lv {
    pub name: String,
    pub content: Content,
    /// Its bytes on the disk, in logical order (from LVM's own report).
    pub extents: Vec<Range<u64>>,
    /// Files written into its file system: (name, content).
    pub files: Files,
}

/// A raw LVM test disk and what LVM and the file systems' own tools say about it.
pub struct LvmDisk {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    pub bytes: Vec<u8>,
    pub vg: String,
    /// The physical volume's partition, in disk bytes.
    pub part: Range<u64>,
    pub lvs: Vec<Lv>,
    /// Bytes of the extents no logical volume uses, as LVM reports them.
    pub unused: u64,
    /// Disk bytes the oracle calls free: unused extents (LVM's map) and free clusters of the
    /// file systems inside LVs (their tools' maps); sorted, coalesced.
    pub free: Vec<Range<u64>>,
}

/// A volume group name no concurrent test uses.
fn vg_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "vdisktest{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds a 160 MiB disk: GPT, one LVM partition from 1 MiB, 4 MiB extents; LV `data`
/// (64 MiB, holding `data`) made in two segments around a removed LV (whose freed extents
/// keep random bytes), LV `raw` (16 MiB of random bytes) between them.
pub fn build(data: Content) -> LvmDisk {
    let dir = tempdir();
    let size = 160 * MIB;
    let raw = dir.path().join("disk.raw");
    fs::write(&raw, noise(size as usize, 11)).unwrap();
    let part = MIB..size - MIB;
    let script = format!(
        "label: gpt\nstart={}, size={}, type={LVM_TYPE}\n",
        part.start / SECTOR,
        (part.end - part.start) / SECTOR
    );
    tool(
        "sfdisk",
        "fdisk",
        &[os("-q"), raw.as_os_str()],
        Some(&script),
    );
    let vg = vg_name();
    let lv_specs = {
        let dev = Loop::attach(&raw, part.start, part.end - part.start, false);
        let d = dev.0.as_str();
        lvm(d, &["pvcreate", "-q", "-y", "-ff", d]);
        lvm(d, &["vgcreate", "-q", "-s", "4m", &vg, d]);
        let create = |name: &str, size: &str| {
            lvm(
                d,
                &[
                    "lvcreate", "-q", "-an", "-Zn", "-y", "-L", size, "-n", name, &vg,
                ],
            );
        };
        create("data", "24m");
        create("gap", "8m");
        create("raw", "16m");
        lvm(d, &["lvextend", "-q", "-L", "+40m", &format!("{vg}/data")]);
        lvm(d, &["lvremove", "-q", "-y", &format!("{vg}/gap")]);
        lvm(d, &["vgck", &vg]);
        segments(d, part.start)
    };
    let (lv_extents, mut free) = lv_specs;
    let unused = free.iter().map(|r| r.end - r.start).sum();
    let disk = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    let mut lvs = Vec::new();
    for (name, content) in [("data", data), ("raw", Content::Noise)] {
        let extents = lv_extents
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("lvm reports no segments for {name}"));
        let len: u64 = extents.iter().map(|e| e.end - e.start).sum();
        let file = dir.path().join(format!("lv-{name}"));
        fs::write(&file, noise(len as usize, len + name.len() as u64)).unwrap();
        let (files, fs_free) = match content {
            Content::Noise => (Vec::new(), Vec::new()),
            Content::Ntfs => ntfs(&dir, &file, len),
            Content::Ext4 => {
                let fill = Fill {
                    count: 36,
                    len: 1 << 20,
                    keep_every: 4,
                };
                format_volume(dir.path(), &file, &["-t", "ext4", "-b", "4096"], fill)
            }
        };
        // The file system's free clusters, mapped through the LV's extents to the disk.
        free.extend(map_through(&extents, &fs_free));
        let bytes = fs::read(&file).unwrap();
        let mut at = 0usize;
        for e in &extents {
            let n = (e.end - e.start) as usize;
            disk.write_all_at(&bytes[at..at + n], e.start).unwrap();
            at += n;
        }
        lvs.push(Lv {
            name: name.to_string(),
            content,
            extents,
            files,
        });
    }
    drop(disk);
    free.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in free {
        match merged.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let bytes = fs::read(&raw).unwrap();
    LvmDisk {
        dir,
        raw,
        bytes,
        vg,
        part,
        lvs,
        unused,
        free: merged,
    }
}

/// LVM's map of the PV on `dev` (whose partition starts at disk byte `base`): each LV's disk
/// extents in logical order, and the free extents.
type Segments = (Vec<(String, Vec<Range<u64>>)>, Vec<Range<u64>>);

fn segments(dev: &str, base: u64) -> Segments {
    let out = lvm(
        dev,
        &[
            "pvs",
            "--segments",
            "--units",
            "b",
            "--nosuffix",
            "--reportformat",
            "json",
            "-o",
            "pe_start,vg_extent_size,pvseg_start,pvseg_size,lv_name,seg_start_pe",
        ],
    );
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let n = |v: &Value, k: &str| -> u64 {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {v}"))
    };
    let mut lvs: Vec<(String, Pieces)> = Vec::new();
    let mut free = Vec::new();
    for s in json["report"][0]["pvseg"].as_array().expect("pvseg list") {
        let es = n(s, "vg_extent_size");
        let start = base + n(s, "pe_start") + n(s, "pvseg_start") * es;
        let r = start..start + n(s, "pvseg_size") * es;
        let lv = s["lv_name"].as_str().unwrap_or_default().to_string();
        if lv.is_empty() {
            free.push(r);
            continue;
        }
        let le = n(s, "seg_start_pe");
        match lvs.iter_mut().find(|(name, _)| *name == lv) {
            Some((_, segs)) => segs.push((le, r)),
            None => lvs.push((lv, vec![(le, r)])),
        }
    }
    let lvs = lvs
        .into_iter()
        .map(|(name, mut segs)| {
            segs.sort_by_key(|(le, _)| *le);
            (name, segs.into_iter().map(|(_, r)| r).collect())
        })
        .collect();
    (lvs, free)
}

/// Volume byte ranges `ranges` mapped to the disk through `extents` (volume order).
pub fn map_through(extents: &[Range<u64>], ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut vo = 0;
    for e in extents {
        let len = e.end - e.start;
        for f in ranges {
            let (a, b) = (f.start.max(vo), f.end.min(vo + len));
            if a < b {
                out.push(e.start + a - vo..e.start + b - vo);
            }
        }
        vo += len;
    }
    out
}

/// The LV's bytes gathered from a raw disk image `disk`.
pub fn gather(disk: &[u8], extents: &[Range<u64>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in extents {
        out.extend_from_slice(&disk[e.start as usize..e.end as usize]);
    }
    out
}

/// Makes NTFS in the LV image `file` (`len` bytes of random bytes) and copies files in;
/// returns them and the free clusters (volume offsets) from ntfs-3g's `$Bitmap`.
fn ntfs(dir: &tempfile::TempDir, file: &Path, len: u64) -> (Files, Vec<Range<u64>>) {
    let cluster = 4096u64;
    tool(
        "mkntfs",
        "ntfs-3g",
        &[
            os("-Q"),
            os("-F"),
            os("-q"),
            os("-c"),
            os(&cluster.to_string()),
            os("-L"),
            os("LVDATA"),
            file.as_os_str(),
        ],
        None,
    );
    let mut files = Vec::new();
    for (i, size) in [300_000usize, 2_000_000, 5_000_000].into_iter().enumerate() {
        let name = format!("file{i}.bin");
        let data = noise(size, 1000 + i as u64);
        let src = dir.path().join(format!("src-{name}"));
        fs::write(&src, &data).unwrap();
        tool(
            "ntfscp",
            "ntfs-3g",
            &[os("-q"), file.as_os_str(), src.as_os_str(), os(&name)],
            None,
        );
        files.push((name, data));
    }
    let bitmap = tool(
        "ntfscat",
        "ntfs-3g",
        &[file.as_os_str(), os("$Bitmap")],
        None,
    );
    // NTFS covers all sectors but the last (the backup boot sector) with clusters.
    let clusters = (len - SECTOR) / cluster;
    let mut free: Vec<Range<u64>> = Vec::new();
    for c in 0..clusters {
        let used = bitmap
            .get((c / 8) as usize)
            .is_none_or(|b| b & (1 << (c % 8)) != 0);
        if !used {
            let r = c * cluster..(c + 1) * cluster;
            match free.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => free.push(r),
            }
        }
    }
    assert!(!free.is_empty(), "ntfs-3g reports no free cluster");
    (files, free)
}

impl LvmDisk {
    /// Bytes of the blocks of `block` size wholly inside the oracle's free space: the ceiling.
    pub fn whole_block_free(&self, block: u64) -> u64 {
        whole_blocks_in(&self.free, block)
    }

    /// After compaction of `image`: qemu checks it, every byte it reads outside the oracle's
    /// free space is unchanged; LVM's own check of the volume group passes and it lists the
    /// same logical volumes; every file reads back identical through the file system's tools
    /// (for ext4, after a clean `e2fsck -fn`).
    #[track_caller]
    pub fn assert_content_kept(&self, image: &Path, format: &str) {
        let back = self.dir.path().join("back.raw");
        let what = "the free space of lvm and its file systems";
        let now = read_back_kept_outside(image, format, &back, &self.bytes, &self.free, what);
        fs::write(&back, &now).unwrap();
        let back = self.dir.path().join("back.raw");
        let dev = Loop::attach(
            &back,
            self.part.start,
            self.part.end - self.part.start,
            true,
        );
        lvm(&dev.0, &["vgck", &self.vg]);
        let names = lvm(&dev.0, &["lvs", "--noheadings", "-o", "lv_name", &self.vg]);
        let mut names: Vec<&str> = names.split_whitespace().collect();
        names.sort_unstable();
        assert_eq!(names, vec!["data", "raw"]);
        for lv in &self.lvs {
            let bytes = gather(&now, &lv.extents);
            let vol = self.dir.path().join(format!("check-{}", lv.name));
            fs::write(&vol, &bytes).unwrap();
            match lv.content {
                Content::Ext4 => assert_files_read_back(&vol, &lv.files, &lv.name),
                Content::Ntfs => {
                    for (name, data) in &lv.files {
                        let read = tool("ntfscat", "ntfs-3g", &[vol.as_os_str(), os(name)], None);
                        assert!(read == *data, "{}: {name} reads back different", lv.name);
                    }
                }
                Content::Noise => assert!(lv.files.is_empty()),
            }
            fs::remove_file(&vol).unwrap();
        }
    }
}
