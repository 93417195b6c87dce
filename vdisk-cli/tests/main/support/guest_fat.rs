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

use super::guest::{noise, os, tool};
use super::{num, qemu_img, tempdir};

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
        qemu_img([
            os("convert"),
            os("-S"),
            os("0"),
            os("-f"),
            os("raw"),
            os("-O"),
            os(format),
            os("-o"),
            os(opts),
            self.raw.as_os_str(),
            path.as_os_str(),
        ])
        .ok();
        path
    }

    /// The ceiling: bytes of the `block`-sized image blocks that lie wholly in the free space.
    pub fn whole_block_free(&self, block: u64) -> u64 {
        let mut total = 0;
        for r in &self.free {
            let first = r.start.next_multiple_of(block);
            let last = r.end / block * block;
            if last > first {
                total += last - first;
            }
        }
        total
    }

    /// Checks `image` after compaction: qemu checks it, every byte outside the free space
    /// reads as before; returns the volume's bytes as they read now, for the file system's
    /// own checker and readers.
    #[track_caller]
    pub fn assert_kept_outside_free(&self, image: &Path, format: &str) -> PathBuf {
        let check = qemu_img([os("check"), os("-f"), os(format), image.as_os_str()]);
        let all = format!("{}{}", check.stdout, check.stderr);
        assert!(
            check.code == 0 || (check.code == 63 && all.contains("does not support checks")),
            "qemu-img check -f {format} failed ({}):\n{all}",
            check.code
        );
        let back = self.dir.path().join("back.raw");
        let _ = fs::remove_file(&back);
        qemu_img([
            os("convert"),
            os("-f"),
            os(format),
            os("-O"),
            os("raw"),
            image.as_os_str(),
            back.as_os_str(),
        ])
        .ok();
        let mut now = fs::read(&back).unwrap();
        assert!(now.len() >= self.bytes.len(), "virtual size shrank");
        assert!(
            now[self.bytes.len()..].iter().all(|&b| b == 0),
            "padding past the disk is not zero"
        );
        now.truncate(self.bytes.len());
        let mut i = 0usize;
        while i < now.len() {
            if now[i] == self.bytes[i] {
                i += 1;
                continue;
            }
            let at = i as u64;
            let k = self.free.partition_point(|r| r.end <= at);
            let inside = self.free.get(k).is_some_and(|r| r.start <= at);
            assert!(
                inside,
                "byte {at:#x} changed outside the file system's free space"
            );
            i = self.free[k].end as usize;
        }
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
