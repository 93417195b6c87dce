//! btrfs guest disks built with btrfs's own tools: a volume file of random bytes, formatted
//! by `mkfs.btrfs -K --rootdir` (no discard: unallocated space keeps its garbage), mounted
//! through a loop device to delete most files and write new ones (mount `nodiscard`, so freed
//! extents keep their bytes), unmounted cleanly, then placed bare or in a GPT partition of a
//! raw disk of random bytes. The free space oracle is btrfs-progs' own dumps (shared with
//! vdisk-btrfs's tests); the checks after compaction are `btrfs check --readonly`, a
//! read-only loop mount reading every file back, and every byte outside the free ranges.
//!
//! Tools (a missing one fails the test): `btrfs-progs` (mkfs.btrfs, btrfs), `mount`
//! (mount, umount; root and loop devices), `fdisk` (sfdisk), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are hundreds of MiB and tests run on 64-bit hosts"
)]

use std::ffi::OsStr;
use std::fs;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::guest::{noise, os, read_back_kept_outside, tool, whole_blocks_in};
use super::qemu_img;

#[path = "../../../../vdisk-btrfs/tests/main/dump_tree.rs"]
mod dump_tree;

const MIB: u64 = 1 << 20;
/// Where the GPT partition starts.
const PART_START: u64 = MIB;

/// A mount point that is unmounted when dropped, even if the test failed.
struct Mounted(PathBuf);

impl Mounted {
    fn new(volume: &Path, at: &Path, opts: &str) -> Mounted {
        fs::create_dir_all(at).unwrap();
        tool(
            "mount",
            "mount",
            &[os("-o"), os(opts), volume.as_os_str(), at.as_os_str()],
            None,
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A raw disk holding one btrfs volume and what btrfs-progs says about it.
pub struct Disk {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    pub bytes: Vec<u8>,
    /// The volume's bytes on the disk.
    pub volume: Range<u64>,
    /// Files left on the volume: (name, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// Free bytes in disk offsets, from btrfs-progs' dumps; sorted, disjoint.
    pub free: Vec<Range<u64>>,
}

/// Builds a guest: bare (the disk is the volume) or in a GPT partition at 1 MiB, on a volume
/// file of `size_mib` MiB (mkfs.btrfs may grow it to fit the files).
pub fn build(gpt: bool, size_mib: u64) -> Disk {
    let dir = super::tempdir();
    let vol = dir.path().join("volume.btrfs");
    fs::write(&vol, noise((size_mib * MIB) as usize, 11)).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut all = Vec::new();
    for i in 0..24u64 {
        let len = ((i * 677 + 13) % 5 + 1) as usize * 900_000 + i as usize * 4097;
        let data = noise(len, 100 + i);
        fs::write(root.join(format!("f{i:02}")), &data).unwrap();
        all.push((format!("f{i:02}"), data));
    }
    tool(
        "mkfs.btrfs",
        "btrfs-progs",
        &[
            os("-q"),
            os("-f"),
            os("-K"),
            os("--rootdir"),
            root.as_os_str(),
            vol.as_os_str(),
        ],
        None,
    );
    let mnt = dir.path().join("mnt");
    let mut files = Vec::new();
    {
        let m = Mounted::new(&vol, &mnt, "loop,nodiscard");
        for (i, (name, data)) in all.into_iter().enumerate() {
            if i % 4 == 0 {
                files.push((name, data));
            } else {
                fs::remove_file(m.0.join(&name)).unwrap();
            }
        }
        for i in 0..3u64 {
            let data = noise(700_000 + i as usize * 333, 900 + i);
            let name = format!("new{i}");
            fs::write(m.0.join(&name), &data).unwrap();
            files.push((name, data));
        }
        tool("sync", "coreutils", &[], None);
    }
    let vol_free = dump_tree::free_ranges(&vol);
    // mkfs.btrfs --rootdir may grow the file to fit the files: the volume is what it made.
    let vol_len = fs::metadata(&vol).unwrap().len();
    let (raw, volume) = if gpt {
        let raw = dir.path().join("disk.raw");
        let disk_len = vol_len + 3 * MIB;
        fs::write(&raw, noise(disk_len as usize, 12)).unwrap();
        let script = format!(
            "label: gpt\nstart={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
            PART_START / 512,
            vol_len / 512
        );
        tool(
            "sfdisk",
            "fdisk",
            &[os("-q"), raw.as_os_str()],
            Some(&script),
        );
        let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&fs::read(&vol).unwrap(), PART_START)
            .unwrap();
        (raw, PART_START..PART_START + vol_len)
    } else {
        (vol.clone(), 0..vol_len)
    };
    let free = vol_free
        .iter()
        .map(|r| r.start + volume.start..r.end + volume.start)
        .collect();
    let bytes = fs::read(&raw).unwrap();
    Disk {
        dir,
        raw,
        bytes,
        volume,
        files,
        free,
    }
}

impl Disk {
    /// `qemu-img convert -S 0` of the raw disk to `format` (`vpc`/`vhdx`) `subformat`, with
    /// `block_mib` MiB blocks for dynamic VHDX.
    pub fn image(&self, format: &str, subformat: &str, block_mib: u64) -> PathBuf {
        let ext = if format == "vpc" { "vhd" } else { "vhdx" };
        let path = self.dir.path().join(format!("disk-{subformat}.{ext}"));
        let mut opts = format!("subformat={subformat}");
        if format == "vhdx" && subformat == "dynamic" {
            opts.push_str(&format!(",block_size={block_mib}M"));
        }
        let args: Vec<&OsStr> = vec![
            os("convert"),
            os("-S"),
            os("0"),
            os("-f"),
            os("raw"),
            os("-O"),
            os(format),
            os("-o"),
            os(&opts),
            self.raw.as_os_str(),
            path.as_os_str(),
        ];
        qemu_img(args).ok();
        path
    }

    /// The ceiling: bytes of whole `block`-byte blocks inside btrfs's free ranges.
    pub fn whole_block_free(&self, block: u64) -> u64 {
        whole_blocks_in(&self.free, block)
    }

    /// After compaction: qemu checks `image`, every byte outside btrfs's free ranges reads as
    /// before, `btrfs check --readonly` is clean and a read-only mount reads every file back.
    #[track_caller]
    pub fn assert_content_kept(&self, image: &Path, format: &str) {
        let back = self.dir.path().join("back.raw");
        let now = read_back_kept_outside(image, format, &back, &self.bytes, &self.free, "btrfs");
        let vol = self.dir.path().join("check.btrfs");
        let r = &self.volume;
        fs::write(&vol, &now[r.start as usize..r.end as usize]).unwrap();
        drop(now);
        tool(
            "btrfs",
            "btrfs-progs",
            &[os("check"), os("--readonly"), vol.as_os_str()],
            None,
        );
        let m = Mounted::new(&vol, &self.dir.path().join("ro"), "ro,loop");
        for (name, data) in &self.files {
            let read = fs::read(m.0.join(name)).unwrap();
            assert!(read == *data, "{name} reads back different");
        }
    }
}
