//! Guest disks for the FAT, exFAT and swap end-to-end tests: a raw disk of random bytes with
//! one partition (sfdisk), a volume built in its own file by the file system's tools and
//! written at the partition's offset, the free space as the file system's own map says, and
//! the checks after compaction (every byte outside that free space kept, the ceiling of
//! reclaimable bytes per image block size).
//!
//! Tools (a missing one fails the test): `fdisk` (sfdisk), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::guest::{
    compact_to_ceiling, convert_allocated, noise, os, read_back_kept_outside, tool, whole_blocks_in,
};
use super::{num, tempdir};

pub const MIB: u64 = 1 << 20;
pub const SECTOR: u64 = 512;

/// A raw disk with one partition holding the volume under test.
pub struct GuestDisk {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    /// The raw disk's bytes.
    pub bytes: Vec<u8>,
    /// The partition's bytes on the disk.
    pub part: Range<u64>,
    /// Free space of the volume in disk offsets, coalesced, from the file system's own map.
    pub free: Vec<Range<u64>>,
}

/// Deterministic random bytes of `len` written to `path`.
pub fn noise_file(path: &Path, len: u64, seed: u64) {
    fs::write(path, noise(len as usize, seed)).unwrap();
}

impl GuestDisk {
    /// A disk of `size` random bytes, partitioned by the sfdisk `script` whose only partition
    /// covers `part`; the volume is built by `make(dir, volume_file)` in a file of the
    /// partition's size filled with random bytes, and returns its free ranges relative to the
    /// volume.
    pub fn build(
        size: u64,
        script: &str,
        part: Range<u64>,
        make: impl FnOnce(&Path, &Path) -> Vec<Range<u64>>,
    ) -> GuestDisk {
        let dir = tempdir();
        let raw = dir.path().join("disk.raw");
        noise_file(&raw, size, 11);
        tool(
            "sfdisk",
            "fdisk",
            &[os("-q"), raw.as_os_str()],
            Some(script),
        );
        let vol = dir.path().join("volume");
        noise_file(&vol, part.end - part.start, 12);
        let mut free: Vec<Range<u64>> = make(dir.path(), &vol)
            .into_iter()
            .map(|r| r.start + part.start..r.end + part.start)
            .collect();
        free.sort_by_key(|r| r.start);
        let disk = fs::OpenOptions::new().write(true).open(&raw).unwrap();
        disk.write_all_at(&fs::read(&vol).unwrap(), part.start)
            .unwrap();
        drop(disk);
        let bytes = fs::read(&raw).unwrap();
        GuestDisk {
            dir,
            raw,
            bytes,
            part,
            free,
        }
    }

    /// Converts the raw disk to `format` (`vpc`/`vhdx`) with qemu-img options `opts`; every
    /// block is allocated (`-S 0`), so the ceiling counts every free block.
    pub fn image(&self, format: &str, opts: &str, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let _ = fs::remove_file(&path);
        convert_allocated(&self.raw, format, opts, &path);
        path
    }

    /// The ceiling: bytes of the `block`-sized image blocks that lie wholly in the free space.
    pub fn whole_block_free(&self, block: u64) -> u64 {
        whole_blocks_in(&self.free, block)
    }

    /// Checks `image` after compaction: qemu checks it, every byte outside the free space
    /// reads as before; returns the volume's bytes as they read now, for the file system's
    /// own checker and readers.
    #[track_caller]
    pub fn assert_kept_outside_free(&self, image: &Path, format: &str) -> PathBuf {
        let back = self.dir.path().join("back.raw");
        let what = "the file system's free space";
        let now = read_back_kept_outside(image, format, &back, &self.bytes, &self.free, what);
        let vol = self.dir.path().join("volume-after");
        fs::write(&vol, &now[self.part.start as usize..self.part.end as usize]).unwrap();
        vol
    }
}

/// The volume entry of partition `index` in a JSON report.
#[track_caller]
pub fn volume(report: &Value, index: u64) -> &Value {
    report["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["partition"].as_u64() == Some(index)))
        .unwrap_or_else(|| panic!("no volume for partition {index}: {report}"))
}

/// Asserts vdisk reclaimed at least 97% of the ceiling and no more than it.
#[track_caller]
pub fn assert_reclaimed_near_ceiling(disk: &GuestDisk, report: &Value, what: &str) -> (u64, u64) {
    let block = num(report, "block_size");
    let ceiling = disk.whole_block_free(block);
    let fs_bytes = num(report, "bytes_reclaimed_fs");
    eprintln!(
        "{what}: ceiling {} MiB in whole {block}-byte blocks, vdisk reclaimed {} MiB by the file \
         system's map",
        ceiling as f64 / MIB as f64,
        fs_bytes as f64 / MIB as f64
    );
    assert!(
        ceiling > 0,
        "{what}: the test disk has no whole free block: {report}"
    );
    assert!(
        fs_bytes * 100 >= ceiling * 97 && fs_bytes <= ceiling,
        "{what}: reclaimed {fs_bytes} bytes by the file system's map; its free space holds \
         {ceiling} bytes of whole {block}-byte blocks: {report}"
    );
    (ceiling, fs_bytes)
}

/// Compacts a copy of `image` (`format`: `vpc`, `vhdx`) in `mode` and checks it: partition 1
/// is a trusted `fs`; the bytes reclaimed by the file system's map reach 97% of the ceiling
/// and no more, and so do the host bytes given back (the file shrank, or for `retrim` kept
/// its length and lost that much storage); `quick` read no block for zeros; every byte outside
/// the free space reads as before (see [`GuestDisk::assert_kept_outside_free`]). The copy is
/// removed; returns the report and the volume file as it reads now, for the file system's
/// own checker and readers.
#[track_caller]
pub fn compact_copy_and_check(
    disk: &GuestDisk,
    image: &Path,
    format: &str,
    mode: &str,
    fs: &str,
) -> (Value, PathBuf) {
    let name = image.file_name().unwrap().to_string_lossy();
    let copy = disk.dir.path().join(format!("{mode}-{name}"));
    fs::copy(image, &copy).unwrap();
    let what = format!("{fs} in {name}");
    let (r, _) = compact_to_ceiling(&copy, mode, &what, |block| disk.whole_block_free(block));
    let v = volume(&r, 1);
    assert_eq!(
        (v["fs"].as_str(), v["state"].as_str()),
        (Some(fs), Some("trusted")),
        "{r}"
    );
    let vol = disk.assert_kept_outside_free(&copy, format);
    fs::remove_file(&copy).unwrap();
    (r, vol)
}
