//! exFAT in a GPT partition, end to end: `mkfs.exfat` over random bytes on a 96 MiB disk,
//! 40 random files written through `mount.exfat-fuse` on a loop device (the kernel here has no
//! exfat driver; exfatprogs has no file writer), 34 of them removed (their clusters keep their
//! bytes), converted by `qemu-img` to a dynamic VHD and to VHDX with 1 MiB and 32 MiB
//! blocks, each compacted in full, quick and retrim.
//!
//! The free space is the allocation bitmap read where `dump.exfat` says it lies, its count
//! equal to `dump.exfat`'s free clusters. After `vdisk compact`: qemu checks the image, every
//! byte outside it is kept, `fsck.exfat -n` is clean, the kept files read back identical
//! through a read-only FUSE mount, and vdisk reclaimed at least 97% of the ceiling (image
//! blocks wholly inside the free clusters), the host file too.
//!
//! Tools (a missing one fails the test): `exfatprogs` (mkfs.exfat, fsck.exfat, dump.exfat),
//! `exfat-fuse` (mount.exfat-fuse), `mount` (losetup, umount), `fdisk` (sfdisk), `qemu-utils`.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::support::guest::{noise, os, tool};
use super::support::guest_fat::{GuestDisk, MIB, SECTOR, compact_copy_and_check};

const PART: Range<u64> = MIB..89 * MIB;
const FILES: usize = 40;
const KEPT: [usize; 6] = [0, 1, 2, 3, 4, 12];

fn content(i: usize) -> Vec<u8> {
    noise(1_600_000 + i * 4099, 300 + i as u64)
}

/// A FUSE mount of `vol` through a loop device, undone on drop (also when a test fails).
struct Mounted {
    dir: PathBuf,
    loopdev: String,
}

impl Mounted {
    fn new(vol: &Path, dir: &Path, read_only: bool) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let mut args = vec![os("-f"), os("--show")];
        if read_only {
            args.push(os("-r"));
        }
        args.push(vol.as_os_str());
        let dev = String::from_utf8(tool("losetup", "mount", &args, None)).unwrap();
        let loopdev = dev.trim().to_string();
        let mounted = Mounted {
            dir: dir.to_path_buf(),
            loopdev,
        };
        let mut m = vec![];
        if read_only {
            m.extend([os("-o"), os("ro")]);
        }
        m.extend([os(&mounted.loopdev), dir.as_os_str()]);
        tool("mount.exfat-fuse", "exfat-fuse", &m, None);
        mounted
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.loopdev])
            .status();
    }
}

/// A number from `dump.exfat`'s line starting with `key`.
fn dumped(dump: &str, key: &str) -> u64 {
    dump.lines()
        .find(|l| l.trim_start().starts_with(key))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {dump}"))
}

/// The free clusters of `vol` as byte ranges, from the bitmap where dump.exfat places it.
fn exfat_free(vol: &Path) -> Vec<Range<u64>> {
    let dump =
        String::from_utf8(tool("dump.exfat", "exfatprogs", &[vol.as_os_str()], None)).unwrap();
    let heap = dumped(&dump, "Cluster Heap Offset") * SECTOR;
    let clusters = dumped(&dump, "Cluster Count");
    let cluster = dumped(&dump, "Cluster size");
    let bitmap_at = heap + (dumped(&dump, "Bitmap start cluster") - 2) * cluster;
    let b = fs::read(vol).unwrap();
    let mut free: Vec<Range<u64>> = Vec::new();
    let mut count = 0;
    for i in 0..clusters {
        if b[(bitmap_at + i / 8) as usize] & (1 << (i % 8)) != 0 {
            continue;
        }
        count += 1;
        let r = heap + i * cluster..heap + (i + 1) * cluster;
        match free.last_mut() {
            Some(l) if l.end == r.start => l.end = r.end,
            _ => free.push(r),
        }
    }
    assert_eq!(
        count,
        dumped(&dump, "Free Clusters"),
        "vs dump.exfat: {dump}"
    );
    free
}

fn build() -> GuestDisk {
    let basic = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
    let script = format!(
        "label: gpt\nstart={}, size={}, type={basic}\n",
        PART.start / SECTOR,
        (PART.end - PART.start) / SECTOR
    );
    GuestDisk::build(96 * MIB, &script, PART, |dir, vol| {
        tool(
            "mkfs.exfat",
            "exfatprogs",
            &[os("-c"), os("4K"), os("-L"), os("VDISKEX"), vol.as_os_str()],
            None,
        );
        {
            let m = Mounted::new(vol, &dir.join("mnt"), false);
            for i in 0..FILES {
                fs::write(m.dir.join(format!("file{i:02}.bin")), content(i)).unwrap();
            }
            for i in (0..FILES).filter(|i| !KEPT.contains(i)) {
                fs::remove_file(m.dir.join(format!("file{i:02}.bin"))).unwrap();
            }
        }
        tool(
            "fsck.exfat",
            "exfatprogs",
            &[os("-n"), vol.as_os_str()],
            None,
        );
        exfat_free(vol)
    })
}

/// Compacts `disk` converted to each of `images` (format, qemu-img options, file name) in
/// full, quick and retrim; after each: the checks of [`compact_copy_and_check`], then
/// `fsck.exfat -n` is clean and every kept file reads back identical through a read-only
/// FUSE mount.
fn every_mode(disk: &GuestDisk, images: &[(&str, &str, &str)]) {
    for &(format, opts, name) in images {
        let image = disk.image(format, opts, name);
        for mode in ["full", "quick", "retrim"] {
            let (_, vol) = compact_copy_and_check(disk, &image, format, mode, "exfat");
            tool(
                "fsck.exfat",
                "exfatprogs",
                &[os("-n"), vol.as_os_str()],
                None,
            );
            let m = Mounted::new(&vol, &disk.dir.path().join("check"), true);
            for i in KEPT {
                let back = fs::read(m.dir.join(format!("file{i:02}.bin"))).unwrap();
                assert!(
                    back == content(i),
                    "{name} {mode}: file{i:02}.bin reads back different"
                );
            }
        }
        fs::remove_file(&image).unwrap();
    }
}

#[test]
fn exfat_in_gpt_in_a_1mib_block_vhdx_gives_back_deleted_files_in_full_quick_and_retrim() {
    let disk = build();
    every_mode(
        &disk,
        &[("vhdx", "subformat=dynamic,block_size=1M", "exfat.vhdx")],
    );
}

#[test]
fn exfat_in_gpt_in_a_dynamic_vhd_and_a_32mib_block_vhdx_gives_back_deleted_files_in_every_mode() {
    let disk = build();
    every_mode(
        &disk,
        &[
            ("vpc", "subformat=dynamic", "exfat.vhd"),
            ("vhdx", "subformat=dynamic,block_size=32M", "exfat32.vhdx"),
        ],
    );
}
