//! NTFS test disks built with real tools: a raw disk of random bytes partitioned by `sfdisk`
//! (MBR with a logical partition, or GPT), NTFS volumes made by `mkntfs -Q` over random bytes
//! (free clusters keep garbage) with files copied in by `ntfscp`, each written into the disk at
//! its partition offset; the free clusters as ntfs-3g itself reads them (`ntfscat $Bitmap`);
//! and the check that a compacted image kept everything outside those free clusters.
//!
//! Tools (a missing one fails the test): `fdisk` (sfdisk), `ntfs-3g` (mkntfs, ntfscp,
//! ntfscat, ntfsresize), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::fs;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::guest::{
    assert_kept_outside, convert_allocated, noise, os, read_back, tool, whole_blocks_in,
};
use super::tempdir;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;

/// One NTFS volume of a test disk.
#[derive(Debug, Clone)]
pub struct Vol {
    /// Partition number as sfdisk and vdisk number it.
    pub index: u32,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// NTFS cluster size.
    pub cluster: u64,
    /// Marked dirty (by ntfsresize): must not be trusted.
    pub dirty: bool,
    /// Files copied in: (name, content).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Vol {
    pub fn bytes(&self) -> Range<u64> {
        self.start * SECTOR..(self.start + self.sectors) * SECTOR
    }
}

/// A raw test disk and what ntfs-3g says about it.
pub struct Disk {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    /// The raw disk's bytes.
    pub bytes: Vec<u8>,
    pub vols: Vec<Vol>,
    /// Free clusters of the clean volumes in disk offsets, from ntfs-3g's `$Bitmap`; coalesced.
    pub free: Vec<Range<u64>>,
    /// An all-zero region outside every partition (found by the zero scan only).
    pub zeros: Range<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Mbr,
    Gpt,
}

/// The volumes of each layout. Starts are in sectors; the logical partition (MBR) and the
/// second GPT partition start at odd sectors, so no block size divides their offset.
pub fn layout(table: Table, dirty: Option<u32>) -> (u64, Vec<Vol>, String) {
    let v = |index, start, sectors, cluster| Vol {
        index,
        start,
        sectors,
        cluster,
        dirty: dirty == Some(index),
        files: Vec::new(),
    };
    match table {
        Table::Mbr => (
            48 * MIB,
            vec![v(1, 2048, 30720, 4096), v(5, 34879, 40000, 1024)],
            "label: dos\n\
             start=2048, size=30720, type=7\n\
             start=34816, size=53248, type=5\n\
             start=34879, size=40000, type=7\n"
                .to_string(),
        ),
        Table::Gpt => {
            let basic = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
            (
                48 * MIB,
                vec![v(1, 2048, 20480, 65536), v(2, 22531, 45000, 512)],
                format!(
                    "label: gpt\n\
                     start=2048, size=20480, type={basic}\n\
                     start=22531, size=45000, type={basic}\n"
                ),
            )
        }
    }
}

/// Builds the raw disk of `table`; volume `dirty` (a partition number) is marked dirty.
pub fn build(table: Table, dirty: Option<u32>) -> Disk {
    let dir = tempdir();
    let (size, mut vols, script) = layout(table, dirty);
    let raw = dir.path().join("disk.raw");
    fs::write(&raw, noise(size as usize, 7)).unwrap();
    tool(
        "sfdisk",
        "fdisk",
        &[os("-q"), raw.as_os_str()],
        Some(&script),
    );
    let disk = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    // An all-zero region after the last partition (before the GPT backup), 2 MiB-aligned so
    // that whole blocks of every tested size are zero.
    let last_end = vols.iter().map(|v| v.bytes().end).max().unwrap_or(0);
    let zeros = last_end.next_multiple_of(2 * MIB)..size - 2 * MIB;
    disk.write_all_at(&vec![0u8; (zeros.end - zeros.start) as usize], zeros.start)
        .unwrap();
    let mut free = Vec::new();
    for v in &mut vols {
        let vol = dir.path().join(format!("vol{}", v.index));
        fs::write(
            &vol,
            noise((v.sectors * SECTOR) as usize, v.cluster + v.start),
        )
        .unwrap();
        tool(
            "mkntfs",
            "ntfs-3g",
            &[
                os("-Q"),
                os("-F"),
                os("-q"),
                os("-s"),
                os("512"),
                os("-c"),
                os(&v.cluster.to_string()),
                os("-p"),
                os(&v.start.to_string()),
                os("-L"),
                os("VDISK"),
                vol.as_os_str(),
            ],
            None,
        );
        for (i, len) in [100_000usize, 1_500_000, 3_000_000].into_iter().enumerate() {
            let name = format!("file{i}.bin");
            let data = noise(len, v.start * 10 + i as u64);
            let src = dir.path().join(format!("src-{}-{name}", v.index));
            fs::write(&src, &data).unwrap();
            tool(
                "ntfscp",
                "ntfs-3g",
                &[os("-q"), vol.as_os_str(), src.as_os_str(), os(&name)],
                None,
            );
            v.files.push((name, data));
        }
        if v.dirty {
            // ntfsresize schedules chkdsk: the volume is left marked dirty.
            let smaller = format!("{}k", v.sectors * SECTOR / 1024 - 2048);
            tool(
                "ntfsresize",
                "ntfs-3g",
                &[os("-f"), os("-f"), os("-s"), os(&smaller), vol.as_os_str()],
                None,
            );
        } else {
            free.extend(ntfs3g_free(&vol, v));
        }
        // dd conv=notrunc of the volume into the disk at its partition offset.
        disk.write_all_at(&fs::read(&vol).unwrap(), v.start * SECTOR)
            .unwrap();
    }
    drop(disk);
    free.sort_by_key(|r| r.start);
    let bytes = fs::read(&raw).unwrap();
    Disk {
        dir,
        raw,
        bytes,
        vols,
        free,
        zeros,
    }
}

/// Free clusters of the volume file `vol` in disk offsets, from the `$Bitmap` ntfs-3g reads.
pub fn ntfs3g_free(vol: &Path, v: &Vol) -> Vec<Range<u64>> {
    let bitmap = tool(
        "ntfscat",
        "ntfs-3g",
        &[vol.as_os_str(), os("$Bitmap")],
        None,
    );
    // NTFS covers all sectors but the last (the backup boot sector) with clusters.
    let clusters = (v.sectors - 1) * SECTOR / v.cluster;
    let base = v.start * SECTOR;
    let mut free: Vec<Range<u64>> = Vec::new();
    for c in 0..clusters {
        let used = bitmap
            .get((c / 8) as usize)
            .is_none_or(|b| b & (1 << (c % 8)) != 0);
        if used {
            continue;
        }
        let r = base + c * v.cluster..base + (c + 1) * v.cluster;
        match free.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => free.push(r),
        }
    }
    assert!(
        !free.is_empty(),
        "ntfs-3g reports no free cluster in volume {}",
        v.index
    );
    free
}

impl Disk {
    /// Converts the raw disk to `format` (`vpc`/`vhdx`/`vdi`) `subformat` (`dynamic`/`fixed`);
    /// returns the image path.
    pub fn image(&self, format: &str, subformat: &str) -> PathBuf {
        let ext = if format == "vpc" { "vhd" } else { format };
        let path = self.dir.path().join(format!("disk-{subformat}.{ext}"));
        let mut opts = format!("subformat={subformat}");
        if format == "vhdx" && subformat == "dynamic" {
            opts.push_str(",block_size=1M");
        }
        if format == "vdi" {
            opts = format!("static={}", if subformat == "fixed" { "on" } else { "off" });
        }
        if format == "qcow2" {
            // qemu-img create's defaults: version 3, 64 KiB clusters, 16-bit refcounts.
            opts = "cluster_size=64k".to_string();
        }
        // Every block allocated, so the zero region is in the image.
        convert_allocated(&self.raw, format, &opts, &path);
        path
    }

    /// Bytes of the blocks of `block` size that lie wholly in ntfs-3g's free clusters.
    pub fn whole_block_free(&self, block: u64) -> u64 {
        whole_blocks_in(&self.free, block)
    }

    /// Checks `image` after compaction: qemu checks it, every byte outside the clean volumes'
    /// free clusters reads as before, and ntfscat reads every file back identical.
    #[track_caller]
    pub fn assert_content_kept(&self, image: &Path, format: &str) {
        let back = self.dir.path().join("back.raw");
        let now = read_back(image, format, &back, self.bytes.len());
        assert_kept_outside(&self.bytes, &now, &self.free, "compacted image");
        for v in &self.vols {
            let vol = self.dir.path().join(format!("check-vol{}", v.index));
            let r = v.bytes();
            fs::write(&vol, &now[r.start as usize..r.end as usize]).unwrap();
            for (name, data) in &v.files {
                // ntfs-3g refuses a volume scheduled for chkdsk unless forced.
                let mut args = vec![vol.as_os_str(), os(name)];
                if v.dirty {
                    args.insert(0, os("--force"));
                }
                let read = tool("ntfscat", "ntfs-3g", &args, None);
                assert!(
                    read == *data,
                    "partition {}: {name} reads back different ({} bytes, wanted {})",
                    v.index,
                    read.len(),
                    data.len()
                );
            }
        }
    }

    pub fn copy(&self, image: &Path, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        fs::copy(image, &to).unwrap();
        to
    }
}

/// A raw disk of 24 MiB of random bytes with 4 MiB of zeros at 8 MiB, partitioned by
/// `table` (an sfdisk script) if given.
pub fn plain_raw(dir: &Path, table: Option<&str>) -> PathBuf {
    let raw = dir.join("plain.raw");
    let mut bytes = noise(24 << 20, 3);
    bytes[8 << 20..12 << 20].fill(0);
    fs::write(&raw, bytes).unwrap();
    if let Some(script) = table {
        tool(
            "sfdisk",
            "fdisk",
            &[os("-q"), raw.as_os_str()],
            Some(script),
        );
    }
    raw
}

/// `raw` converted to a dynamic VHD with every block allocated (zeros too).
pub fn to_vhd(raw: &Path) -> PathBuf {
    let image = raw.with_extension("vhd");
    convert_allocated(raw, "vpc", "subformat=dynamic", &image);
    image
}
