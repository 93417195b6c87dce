//! File-system-aware compaction end to end, with real tools only: a raw disk full of random
//! bytes, partitioned by `sfdisk` (MBR with a logical partition, or GPT), NTFS volumes made by
//! `mkntfs -Q` over random bytes (so free clusters hold garbage), files copied in with `ntfscp`,
//! each volume written into the disk at its partition offset (one at an offset that is not a
//! multiple of any block size), then converted to VHD/VHDX by `qemu-img`.
//!
//! The oracle for free space is ntfs-3g's own view: `ntfscat VOLUME '$Bitmap'` (not our
//! analyser). After `vdisk compact`: qemu opens and checks the image, every byte outside the
//! free clusters of clean NTFS volumes reads as before (so the tables, the gaps between
//! partitions and dirty volumes are untouched), `ntfscat` reads every file back identical, and
//! the file shrank by at least 90% of the free space that lies in whole blocks.
//!
//! Tools (CI installs them; a missing one fails the test): `fdisk` (sfdisk), `ntfs-3g`
//! (mkntfs, ntfscp, ntfscat, ntfsresize), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::ffi::OsStr;
use std::fs;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::support::{compact_ok, num, qemu_img, require, tempdir, text};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// One NTFS volume of a test disk.
#[derive(Debug, Clone)]
struct Vol {
    /// Partition number as sfdisk and vdisk number it.
    index: u32,
    /// First sector.
    start: u64,
    /// Length in sectors.
    sectors: u64,
    /// NTFS cluster size.
    cluster: u64,
    /// Marked dirty (by ntfsresize): must not be trusted.
    dirty: bool,
    /// Files copied in: (name, content).
    files: Vec<(String, Vec<u8>)>,
}

impl Vol {
    fn bytes(&self) -> Range<u64> {
        self.start * SECTOR..(self.start + self.sectors) * SECTOR
    }
}

/// A raw test disk and what ntfs-3g says about it.
struct Disk {
    dir: tempfile::TempDir,
    raw: PathBuf,
    /// The raw disk's bytes.
    bytes: Vec<u8>,
    vols: Vec<Vol>,
    /// Free clusters of the clean volumes in disk offsets, from ntfs-3g's `$Bitmap`; coalesced.
    free: Vec<Range<u64>>,
    /// An all-zero region outside every partition (found by the zero scan only).
    zeros: Range<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Mbr,
    Gpt,
}

/// Deterministic pseudo-random bytes (xorshift64), different per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs a tool of `package`, feeding `stdin`; returns stdout; panics with its output on failure.
#[track_caller]
fn tool(program: &str, package: &str, args: &[&OsStr], stdin: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new(require(program, package));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("feeding stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for the tool");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The volumes of each layout. Starts are in sectors; the logical partition (MBR) and the
/// second GPT partition start at odd sectors, so no block size divides their offset.
fn layout(table: Table, dirty: Option<u32>) -> (u64, Vec<Vol>, String) {
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
fn build(table: Table, dirty: Option<u32>) -> Disk {
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
fn ntfs3g_free(vol: &Path, v: &Vol) -> Vec<Range<u64>> {
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
    /// Converts the raw disk to `format` (`vpc`/`vhdx`) `subformat`; returns the image path.
    fn image(&self, format: &str, subformat: &str) -> PathBuf {
        let ext = if format == "vpc" { "vhd" } else { "vhdx" };
        let path = self.dir.path().join(format!("disk-{subformat}.{ext}"));
        let mut opts = format!("subformat={subformat}");
        if format == "vhdx" && subformat == "dynamic" {
            opts.push_str(",block_size=1M");
        }
        // -S 0: write every block, zeros too, so the zero region is allocated in the image.
        qemu_img([
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
        ])
        .ok();
        path
    }

    /// Bytes of the blocks of `block` size that lie wholly in ntfs-3g's free clusters.
    fn whole_block_free(&self, block: u64) -> u64 {
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

    /// Checks `image` after compaction: qemu checks it, every byte outside the clean volumes'
    /// free clusters reads as before, and ntfscat reads every file back identical.
    #[track_caller]
    fn assert_content_kept(&self, image: &Path, format: &str) {
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
        // qemu rounds a VHD's size to its CHS geometry: the padding reads zeros.
        assert!(now.len() >= self.bytes.len(), "virtual size shrank");
        assert!(
            now[self.bytes.len()..].iter().all(|&b| b == 0),
            "padding past the disk is not zero"
        );
        now.truncate(self.bytes.len());
        let mut changed = 0u64;
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
                "byte {at:#x} changed outside the free clusters of clean ntfs volumes"
            );
            // Skip to the end of this free range (any content is allowed there).
            let end = self.free[k].end as usize;
            changed += (end - i) as u64;
            i = end;
        }
        let _ = changed;
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

    fn copy(&self, image: &Path, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        fs::copy(image, &to).unwrap();
        to
    }
}

/// The volume entry of partition `index` in a JSON report.
fn volume(report: &Value, index: u32) -> &Value {
    report["volumes"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["partition"].as_u64() == Some(u64::from(index)))
        })
        .unwrap_or_else(|| panic!("no volume for partition {index}: {report}"))
}

/// Full compaction of a dynamic image: dry run predicts the run, content kept, the file
/// shrank by at least 90% of the whole-block free space, zero blocks outside partitions
/// reclaimed by the zero scan.
fn full_compaction_reclaims_ntfs_free_space(table: Table, format: &str) {
    let disk = build(table, None);
    let image = disk.image(format, "dynamic");
    let dry = compact_ok(&image, "full", &["--dry-run"]);
    let r = compact_ok(&image, "full", &[]);
    assert_eq!(text(&r, "mode"), "full");
    assert_eq!(
        text(&r, "partition_table"),
        if table == Table::Mbr { "mbr" } else { "gpt" }
    );
    for field in [
        "bytes_after",
        "blocks_reclaimed",
        "blocks_reclaimed_fs",
        "blocks_reclaimed_zero",
    ] {
        assert_eq!(num(&dry, field), num(&r, field), "dry run vs run: {field}");
    }
    for v in &disk.vols {
        let j = volume(&r, v.index);
        assert_eq!(j["fs"], "ntfs", "{j}");
        assert_eq!(j["state"], "trusted", "{j}");
        assert_eq!(j["cluster_size"].as_u64(), Some(v.cluster), "{j}");
    }
    let block = num(&r, "block_size");
    let expected = disk.whole_block_free(block);
    let fs_bytes = num(&r, "bytes_reclaimed_fs");
    assert!(
        fs_bytes * 10 >= expected * 9 && fs_bytes <= expected,
        "reclaimed {fs_bytes} bytes by ntfs knowledge; ntfs-3g's free space holds {expected} bytes of whole {block}-byte blocks: {r}"
    );
    let zero_blocks = (disk.zeros.end - disk.zeros.start) / block;
    assert!(
        num(&r, "blocks_reclaimed_zero") >= zero_blocks,
        "the zero region outside the partitions is found by the zero scan: {r}"
    );
    let shrink = num(&r, "bytes_before") - num(&r, "bytes_after");
    eprintln!(
        "{table:?} {format}: ntfs-3g free {} bytes, {expected} in whole {block}-byte blocks; \
         reclaimed by fs {fs_bytes}, file {} -> {} (shrank {shrink})",
        disk.free.iter().map(|r| r.end - r.start).sum::<u64>(),
        num(&r, "bytes_before"),
        num(&r, "bytes_after")
    );
    assert!(
        shrink * 10 >= expected * 9,
        "file shrank by {shrink} bytes, want at least 90% of {expected}: {r}"
    );
    assert_eq!(fs::metadata(&image).unwrap().len(), num(&r, "bytes_after"));
    disk.assert_content_kept(&image, format);
}

#[test]
fn full_compaction_of_a_dynamic_vhd_with_mbr_and_logical_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Mbr, "vpc");
}

#[test]
fn full_compaction_of_a_dynamic_vhdx_with_mbr_and_logical_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Mbr, "vhdx");
}

#[test]
fn full_compaction_of_a_dynamic_vhd_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "vpc");
}

#[test]
fn full_compaction_of_a_dynamic_vhdx_with_gpt_ntfs_reclaims_free_clusters() {
    full_compaction_reclaims_ntfs_free_space(Table::Gpt, "vhdx");
}

#[test]
fn quick_reclaims_the_same_ntfs_free_space_as_full_but_no_zero_blocks() {
    let disk = build(Table::Mbr, None);
    let image = disk.image("vpc", "dynamic");
    let twin = disk.copy(&image, "twin.vhd");
    let quick = compact_ok(&image, "quick", &[]);
    let full = compact_ok(&twin, "full", &["--dry-run"]);
    assert_eq!(num(&quick, "blocks_reclaimed_zero"), 0, "{quick}");
    assert!(num(&full, "blocks_reclaimed_zero") > 0, "{full}");
    assert!(num(&quick, "blocks_reclaimed_fs") > 0, "{quick}");
    assert_eq!(
        num(&quick, "blocks_reclaimed_fs"),
        num(&full, "blocks_reclaimed_fs")
    );
    disk.assert_content_kept(&image, "vpc");
    // The zero region outside the partitions was not reclaimed: a second full run finds it.
    let again = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(
        num(&again, "blocks_reclaimed_zero"),
        num(&full, "blocks_reclaimed_zero")
    );
}

/// Retrim of a fixed image: same length, fewer host blocks, content kept.
fn retrim_punches_ntfs_free_space(table: Table, format: &str) {
    let disk = build(table, None);
    let image = disk.image(format, "fixed");
    let before = fs::metadata(&image).unwrap();
    let r = compact_ok(&image, "retrim", &[]);
    let after = fs::metadata(&image).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "retrim keeps the file length: {r}"
    );
    assert!(num(&r, "blocks_reclaimed_fs") > 0, "{r}");
    let expected = disk.whole_block_free(num(&r, "block_size"));
    let dropped = (before.blocks() - after.blocks()) * 512;
    assert!(
        before.blocks() > after.blocks() && dropped * 10 >= expected * 9,
        "host blocks {} -> {} ({dropped} bytes); ntfs-3g free space in whole blocks {expected}: {r}",
        before.blocks(),
        after.blocks()
    );
    disk.assert_content_kept(&image, format);
}

#[test]
fn retrim_of_a_fixed_vhd_punches_ntfs_free_space_and_keeps_its_length() {
    retrim_punches_ntfs_free_space(Table::Mbr, "vpc");
}

#[test]
fn retrim_of_a_fixed_vhdx_punches_ntfs_free_space_and_keeps_its_length() {
    retrim_punches_ntfs_free_space(Table::Gpt, "vhdx");
}

#[test]
fn a_dirty_ntfs_volume_is_not_trusted_and_only_zero_scanned() {
    let disk = build(Table::Mbr, Some(5));
    let image = disk.image("vhdx", "dynamic");
    let twin = disk.copy(&image, "twin.vhdx");
    let out = super::support::vdisk_compact(&image, "full", &[]);
    out.ok();
    let r = out.json();
    let dirty = volume(&r, 5);
    assert_eq!(dirty["state"], "untrusted", "{r}");
    assert!(
        dirty["reason"].as_str().unwrap_or("").contains("dirty"),
        "{r}"
    );
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        notes.iter().any(|n| n.starts_with("partition 5 (ntfs): ")
            && n.contains("dirty")
            && n.ends_with("; zero scan only")),
        "{notes:?}"
    );
    assert_eq!(volume(&r, 1)["state"], "trusted", "{r}");
    // Only partition 1's free clusters were used (disk.free holds clean volumes only), so the
    // dirty volume reads exactly as before.
    assert!(num(&r, "blocks_reclaimed_fs") > 0, "{r}");
    disk.assert_content_kept(&image, "vhdx");
    // The human output says the same (notes on stderr), and splits what was reclaimed.
    let human = super::support::run(
        super::support::vdisk_cmd()
            .args(["compact", "--dry-run"])
            .arg(&twin),
    );
    human.ok();
    assert!(
        human
            .stderr
            .contains("partition 5 (ntfs): volume is marked dirty"),
        "{}",
        human.stderr
    );
    assert!(
        human.stdout.contains("by file-system knowledge"),
        "{}",
        human.stdout
    );
}

/// A raw disk of 24 MiB of random bytes with 4 MiB of zeros at 8 MiB, partitioned by
/// `table` (an sfdisk script) if given.
fn plain_raw(dir: &Path, table: Option<&str>) -> PathBuf {
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
fn to_vhd(raw: &Path) -> PathBuf {
    let image = raw.with_extension("vhd");
    qemu_img([
        os("convert"),
        os("-S"),
        os("0"),
        os("-f"),
        os("raw"),
        os("-O"),
        os("vpc"),
        os("-o"),
        os("subformat=dynamic"),
        raw.as_os_str(),
        image.as_os_str(),
    ])
    .ok();
    image
}

fn notes(r: &Value) -> Vec<String> {
    r["notes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn quick_without_a_trusted_file_system_says_so_and_reclaims_no_zero_blocks() {
    let dir = tempdir();
    let image = to_vhd(&plain_raw(dir.path(), None));
    let before = fs::read(&image).unwrap();
    let r = compact_ok(&image, "quick", &[]);
    assert_eq!(text(&r, "partition_table"), "none", "{r}");
    assert_eq!(num(&r, "blocks_reclaimed"), 0, "{r}");
    let n = notes(&r);
    assert!(
        n.iter()
            .any(|n| n.starts_with("quick: no trusted file system")),
        "{n:?}"
    );
    assert!(
        n.iter()
            .any(|n| n.contains("no partition table and no known file system")),
        "{n:?}"
    );
    assert!(
        fs::read(&image).unwrap() == before,
        "quick changed the file"
    );
    // full on the same disk finds the zero blocks.
    let full = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(num(&full, "blocks_reclaimed_zero"), 2, "{full}");
}

#[test]
fn an_inconsistent_partition_table_is_unknown_and_the_disk_gets_the_zero_scan_only() {
    let dir = tempdir();
    // Two overlapping primaries: sfdisk refuses to write them, so patch the second entry's
    // start LBA (entry 2 at 462, field at +8) to 4096, inside partition 1.
    let raw = plain_raw(
        dir.path(),
        Some("label: dos\nstart=2048, size=10000, type=7\nstart=20480, size=8192, type=7\n"),
    );
    let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&4096u32.to_le_bytes(), 462 + 8).unwrap();
    drop(f);
    let image = to_vhd(&raw);
    let r = compact_ok(&image, "full", &["--dry-run"]);
    assert_eq!(text(&r, "partition_table"), "unknown", "{r}");
    assert_eq!(r["volumes"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_zero"), 2, "{r}");
    let n = notes(&r);
    assert!(
        n.iter()
            .any(|n| n.starts_with("partition table not understood (")
                && n.contains("overlaps")
                && n.ends_with("file-system free space is not used on this disk")),
        "{n:?}"
    );
}
