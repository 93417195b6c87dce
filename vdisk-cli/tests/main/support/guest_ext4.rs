//! ext4 guest disks built with e2fsprogs only: a volume of random bytes formatted by
//! `mkfs.ext4 -d` (free blocks keep garbage) from a directory of random files, most of which
//! `debugfs -w` then removes (their blocks keep the old data), either bare over the whole disk
//! (the WSL2 / Docker Desktop layout) or inside a GPT partition made by `sfdisk`. The free
//! space oracle is e2fsprogs' own (`dumpe2fs` free blocks, not our analyser); the checks after
//! compaction read every file back through `debugfs`, run `e2fsck -fn`, and compare every
//! byte outside the free blocks.
//!
//! Tools (a missing one fails the test): `e2fsprogs` (mkfs.ext4, debugfs, dumpe2fs, e2fsck),
//! `fdisk` (sfdisk), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::guest::{convert_allocated, noise, os, read_back_kept_outside, tool, whole_blocks_in};
use super::tempdir;

/// Files of a volume: (name in the root directory, content).
pub type Files = Vec<(String, Vec<u8>)>;

/// A guest disk holding one ext4 volume, and what e2fsprogs says about it.
pub struct Ext4Disk {
    pub dir: tempfile::TempDir,
    /// The raw disk.
    pub raw: PathBuf,
    /// The raw disk's bytes.
    pub bytes: Vec<u8>,
    /// Disk bytes of the volume.
    pub vol: Range<u64>,
    /// dumpe2fs's free blocks, in disk offsets, coalesced.
    pub free: Vec<Range<u64>>,
    /// The files left in the volume (name in the root directory, content).
    pub files: Vec<(String, Vec<u8>)>,
}

/// How the volume lies on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The whole disk, no partition table (WSL2's `ext4.vhdx`).
    Bare,
    /// One GPT partition starting at 1 MiB; the last MiB of the disk is outside it.
    Gpt,
}

/// The files written: `count` random files of `len` bytes; every `keep_every`-th is kept.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub count: usize,
    pub len: usize,
    pub keep_every: usize,
}

/// Runs an e2fsprogs tool (a missing one fails naming the package).
pub fn e2(program: &str, args: &[&Path], extra: &[&str]) -> Vec<u8> {
    let mut all: Vec<&std::ffi::OsStr> = extra.iter().map(|a| os(a)).collect();
    all.extend(args.iter().map(|p| p.as_os_str()));
    tool(program, "e2fsprogs", &all, None)
}

/// `mkfs.ext4` as WSL2 formats its disk: 4 KiB blocks, flex groups of 4096.
pub const WSL_MKFS: &[&str] = &["-t", "ext4", "-b", "4096", "-G", "4096"];

impl Ext4Disk {
    /// Builds a disk of `mib` MiB, see the module docs.
    pub fn build(placement: Placement, mib: u64, mkfs: &[&str], fill: Fill) -> Ext4Disk {
        let dir = tempdir();
        let disk_len = mib << 20;
        let vol = match placement {
            Placement::Bare => 0..disk_len,
            Placement::Gpt => (1 << 20)..disk_len - (1 << 20),
        };
        let volume = dir.path().join("vol.img");
        fs::write(&volume, noise((vol.end - vol.start) as usize, mib + 11)).unwrap();
        let (files, free) = format_volume(dir.path(), &volume, mkfs, fill);
        let free = free
            .into_iter()
            .map(|r| r.start + vol.start..r.end + vol.start)
            .collect();

        let raw = dir.path().join("disk.raw");
        let mut bytes = noise(disk_len as usize, mib + 12);
        if placement == Placement::Gpt {
            fs::write(&raw, &bytes).unwrap();
            let sectors = (vol.end - vol.start) / 512;
            let script = format!(
                "label: gpt\nstart={}, size={sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
                vol.start / 512
            );
            tool(
                "sfdisk",
                "fdisk",
                &[os("-q"), raw.as_os_str()],
                Some(&script),
            );
            bytes = fs::read(&raw).unwrap();
        }
        bytes[vol.start as usize..vol.end as usize].copy_from_slice(&fs::read(&volume).unwrap());
        fs::write(&raw, &bytes).unwrap();
        fs::remove_file(&volume).unwrap();
        Ext4Disk {
            dir,
            raw,
            bytes,
            vol,
            free,
            files,
        }
    }

    /// Converts the raw disk with `qemu-img convert -O FORMAT -o OPTIONS` (every block
    /// allocated); returns the image path.
    pub fn image(&self, format: &str, options: &str, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let _ = fs::remove_file(&path);
        convert_allocated(&self.raw, format, options, &path);
        path
    }

    /// The ceiling of file-system-aware reclaim: bytes of the disk's `block`-sized blocks that
    /// lie wholly in dumpe2fs's free blocks (every block of the image is allocated).
    pub fn ceiling(&self, block: u64) -> u64 {
        whole_blocks_in(&self.free, block)
    }

    /// Free bytes as dumpe2fs counts them.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }

    /// After compaction: qemu checks `image`, every byte outside dumpe2fs's free blocks reads
    /// as before, `e2fsck -fn` is clean on the volume, and `debugfs` reads every file back
    /// identical.
    #[track_caller]
    pub fn assert_content_kept(&self, image: &Path, format: &str) {
        let back = self.dir.path().join("back.raw");
        let now = read_back_kept_outside(
            image,
            format,
            &back,
            &self.bytes,
            &self.free,
            "compacted image",
        );
        self.assert_volume_sound(&now, "compacted image");
    }

    /// `e2fsck -fn` is clean on the volume inside `disk` and every file reads back identical.
    #[track_caller]
    pub fn assert_volume_sound(&self, disk: &[u8], what: &str) {
        let vol = self.dir.path().join("check.vol");
        fs::write(&vol, &disk[self.vol.start as usize..self.vol.end as usize]).unwrap();
        assert_files_read_back(&vol, &self.files, what);
        fs::remove_file(&vol).unwrap();
    }
}

/// Formats the volume file `volume` (whatever bytes it holds stay in its free blocks) with
/// `mkfs.ext4 -d` from `fill`'s random files made under `dir`, removes all but every
/// `keep_every`-th with `debugfs -w` (their blocks keep the old bytes) and checks it with
/// `e2fsck -fn`. Returns the files left (name in the root directory, content) and
/// dumpe2fs's free blocks as byte ranges of the volume.
pub fn format_volume(
    dir: &Path,
    volume: &Path,
    mkfs: &[&str],
    fill: Fill,
) -> (Files, Vec<Range<u64>>) {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    let mut all = Vec::new();
    for i in 0..fill.count {
        let name = format!("file{i:03}.bin");
        let data = noise(fill.len + i * 4099, 1000 + i as u64);
        fs::write(src.join(&name), &data).unwrap();
        all.push((name, data));
    }
    let mut args = vec!["-q", "-F", "-E", "nodiscard", "-L", "guest", "-d"];
    let src_s = src.to_string_lossy().into_owned();
    args.push(&src_s);
    args.extend_from_slice(mkfs);
    e2("mkfs.ext4", &[volume], &args);
    fs::remove_dir_all(&src).unwrap();
    let mut files = Vec::new();
    let mut rm = String::new();
    for (i, (name, data)) in all.into_iter().enumerate() {
        if i % fill.keep_every == 0 {
            files.push((name, data));
        } else {
            rm.push_str(&format!("rm /{name}\n"));
        }
    }
    let script = dir.join("rm.cmd");
    fs::write(&script, rm).unwrap();
    e2(
        "debugfs",
        &[volume],
        &["-w", "-f", &script.to_string_lossy()],
    );
    e2("e2fsck", &[volume], &["-fn"]);
    (files, dumpe2fs_free(volume))
}

/// Reads every file of `files` back through `debugfs` from the ext4 volume file `vol` and
/// compares it; `e2fsck -fn` must be clean first.
#[track_caller]
pub fn assert_files_read_back(vol: &Path, files: &[(String, Vec<u8>)], what: &str) {
    e2("e2fsck", &[vol], &["-fn"]);
    for (name, data) in files {
        let read = e2("debugfs", &[vol], &["-R", &format!("cat /{name}")]);
        assert!(
            read == *data,
            "{what}: {name} reads back different through debugfs ({} bytes, wanted {})",
            read.len(),
            data.len()
        );
    }
}

/// dumpe2fs's free blocks of the volume file `vol` as coalesced byte ranges of the volume.
pub fn dumpe2fs_free(vol: &Path) -> Vec<Range<u64>> {
    let out = String::from_utf8_lossy(&e2("dumpe2fs", &[vol], &[])).into_owned();
    let field = |name: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    let block = field("Block size").expect("dumpe2fs block size");
    // With bigalloc, ranges end with the first block of their last cluster.
    let cluster = field("Cluster size").unwrap_or(block);
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for line in out.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for item in list.split(", ").filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            let r = a * block..b * block + cluster;
            match ranges.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => ranges.push(r),
            }
        }
    }
    assert!(!ranges.is_empty(), "dumpe2fs lists no free block");
    ranges
}
