//! XFS-aware compaction end to end, with real tools only: `mkfs.xfs` on a file, files of
//! random bytes written through a loop mount, most of them deleted (their blocks keep the
//! bytes), the file system unmounted and placed in a raw disk (bare, as WSL does with ext4, or
//! in a GPT partition made by `sfdisk`), converted to VHD/VHDX by `qemu-img`, compacted.
//!
//! The oracle for free space is xfsprogs' own view: `xfs_db -r -c 'freesp -d'` (which walks the
//! free-space btrees itself), without the free-list (AGFL) blocks it also lists. After
//! `vdisk compact`: qemu checks the image, every byte outside xfs_db's free space reads as
//! before, `xfs_repair -n` finds nothing to fix, a read-only loop mount reads every remaining
//! file back identical, and the reclaimed bytes reach 97% of the ceiling: the image blocks
//! that held data and lie entirely in xfs_db's free space.
//!
//! Tools (CI installs them; a missing one fails the test): `xfsprogs` (mkfs.xfs, xfs_db,
//! xfs_repair, xfs_io), `fdisk` (sfdisk), `qemu-utils` (qemu-img), `mount` (loop mounts: the
//! tests run as root).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are tens of MiB and tests run on 64-bit hosts"
)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::support::guest::{noise, read_back_kept_outside};
use super::support::{Out, compact_ok, num, qemu_img, require, run, tempdir, text};

const MIB: u64 = 1 << 20;
/// Virtual size of every test disk.
const DISK: u64 = 128 * MIB;
/// Where the GPT partition starts.
const PART_START: u64 = MIB;
/// Files written and their size.
const FILES: u64 = 44;
const FILE_LEN: usize = 2 << 20;

/// Every sixth file survives: the deleted files' space is scattered between them.
fn every_sixth(i: u64) -> bool {
    i.is_multiple_of(6)
}

/// A tool run with mkfs.xfs' test-suite escape (it refuses file systems under 300 MB
/// otherwise); panics if the tool is missing or fails.
fn tool(name: &str, args: &[&OsStr]) -> Out {
    let mut cmd = Command::new(require(name, "xfsprogs"));
    cmd.env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .args(args);
    let out = run(&mut cmd);
    out.ok();
    out
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// A loop mount, unmounted when dropped (even when the test panics).
struct Mounted(PathBuf);

impl Mounted {
    fn new(image: &Path, at: &Path, options: &str) -> Mounted {
        fs::create_dir_all(at).unwrap();
        let out = run(Command::new(require("mount", "mount")).args([
            os("-t"),
            os("xfs"),
            os("-o"),
            os(&format!("loop,{options}")),
            image.as_os_str(),
            at.as_os_str(),
        ]));
        out.ok();
        Mounted(at.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status();
        assert!(
            ok.is_ok_and(|s| s.success()) || std::thread::panicking(),
            "umount {}",
            self.0.display()
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The file system over the whole disk, no partition table.
    Bare,
    /// One GPT partition (Linux filesystem type) from 1 MiB to 1 MiB before the end.
    Gpt,
}

/// A guest disk holding one XFS file system with a few surviving files.
struct Guest {
    dir: tempfile::TempDir,
    raw: PathBuf,
    /// Where the file system starts on the disk, and its length.
    fs: Range<u64>,
    /// Disk byte ranges xfs_db calls free (AGFL excluded).
    free: Vec<Range<u64>>,
    /// Seeds of the files kept (file `f{seed}` holds `noise(FILE_LEN, seed)`).
    kept: Vec<u64>,
}

impl Guest {
    /// Builds the disk; `mkfs_args` go to mkfs.xfs; files `i` with `keep(i)` survive; `dirty`
    /// leaves the log dirty (shutdown).
    fn build(layout: Layout, mkfs_args: &[&str], keep: fn(u64) -> bool, dirty: bool) -> Guest {
        let dir = tempdir();
        let fs_range = match layout {
            Layout::Bare => 0..DISK,
            Layout::Gpt => PART_START..DISK - MIB,
        };
        let volume = dir.path().join("fs.img");
        fs::File::create(&volume)
            .unwrap()
            .set_len(fs_range.end - fs_range.start)
            .unwrap();
        let mut args: Vec<&OsStr> = vec![os("-q"), os("-f"), os("-L"), os("guest")];
        args.extend(mkfs_args.iter().map(os));
        args.push(volume.as_os_str());
        tool("mkfs.xfs", &args);
        let kept: Vec<u64> = (0..FILES).filter(|&i| keep(i)).collect();
        {
            let m = Mounted::new(&volume, &dir.path().join("mnt"), "rw");
            for i in 0..FILES {
                fs::write(m.0.join(format!("f{i}")), noise(FILE_LEN, i)).unwrap();
            }
            run(Command::new("sync").arg("-f").arg(&m.0)).ok();
            for i in (0..FILES).filter(|i| !kept.contains(i)) {
                fs::remove_file(m.0.join(format!("f{i}"))).unwrap();
            }
            if dirty {
                let m = m.0.to_str().unwrap();
                tool("xfs_io", &[os("-x"), os("-c"), os("shutdown -f"), os(m)]);
            }
        }
        let mut free: Vec<Range<u64>> = xfs_db_free(&volume)
            .into_iter()
            .map(|r| r.start + fs_range.start..r.end + fs_range.start)
            .collect();
        free.sort_by_key(|r| r.start);
        let raw = dir.path().join("disk.raw");
        {
            let disk = fs::File::create(&raw).unwrap();
            disk.set_len(DISK).unwrap();
            if layout == Layout::Gpt {
                let script = format!(
                    "label: gpt\nstart={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
                    PART_START / 512,
                    (fs_range.end - fs_range.start) / 512
                );
                super::support::guest::tool(
                    "sfdisk",
                    "fdisk",
                    &[os("-q"), raw.as_os_str()],
                    Some(&script),
                );
            }
            let src = fs::File::open(&volume).unwrap();
            copy_range(
                &src,
                0,
                &disk,
                fs_range.start,
                fs_range.end - fs_range.start,
            );
        }
        fs::remove_file(&volume).unwrap();
        Guest {
            dir,
            raw,
            fs: fs_range,
            free,
            kept,
        }
    }

    /// The disk converted to `format` (`vpc`, `vhdx`) `subformat` with `block` bytes per
    /// block (VHDX only; qemu's VHD blocks are 2 MiB).
    fn image(&self, format: &str, subformat: &str, block: u64) -> PathBuf {
        let ext = if format == "vpc" { "vhd" } else { "vhdx" };
        let path = self.dir.path().join(format!("disk.{ext}"));
        let mut opts = format!("subformat={subformat}");
        if format == "vhdx" {
            opts.push_str(&format!(",block_size={}M", block / MIB));
        }
        qemu_img([
            os("convert"),
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

    /// Bytes of the `block`-sized disk blocks that hold data (not all zeros) and lie wholly
    /// in xfs_db's free space: what an ideal file-system-aware compaction reclaims.
    fn ceiling(&self, block: u64) -> u64 {
        let mut f = fs::File::open(&self.raw).unwrap();
        let mut buf = vec![0u8; block as usize];
        let mut total = 0;
        for b in 0..DISK / block {
            let r = b * block..(b + 1) * block;
            f.read_exact(&mut buf).unwrap();
            let free = self
                .free
                .iter()
                .any(|f| f.start <= r.start && r.end <= f.end);
            if free && buf.iter().any(|&x| x != 0) {
                total += block;
            }
        }
        total
    }

    /// After compaction of `image`: qemu checks it; every byte outside xfs_db's free space
    /// reads as before; `xfs_repair -n` is clean; every kept file reads back identical
    /// through a read-only mount.
    fn assert_content_kept(&self, image: &Path, format: &str) {
        let back = self.dir.path().join("back.raw");
        let before = fs::read(&self.raw).unwrap();
        let what = "xfs_db's free space";
        let now = read_back_kept_outside(image, format, &back, &before, &self.free, what);
        drop(before);
        // The file system alone, for xfs_repair and the mount.
        let volume = self.dir.path().join("back-fs.img");
        fs::write(&volume, &now[self.fs.start as usize..self.fs.end as usize]).unwrap();
        drop(now);
        // force_geometry: a one-group file system has no backup superblock to compare with.
        let repair = [os("-n"), os("-o"), os("force_geometry"), volume.as_os_str()];
        tool("xfs_repair", &repair);
        let m = Mounted::new(&volume, &self.dir.path().join("ro"), "ro,norecovery");
        let mut names = BTreeSet::new();
        for e in fs::read_dir(&m.0).unwrap() {
            names.insert(e.unwrap().file_name().into_string().unwrap());
        }
        let want: BTreeSet<String> = self.kept.iter().map(|i| format!("f{i}")).collect();
        assert_eq!(names, want);
        for &i in &self.kept {
            let got = fs::read(m.0.join(format!("f{i}"))).unwrap();
            assert!(got == noise(FILE_LEN, i), "file f{i} changed");
        }
        drop(m);
        fs::remove_file(&volume).unwrap();
    }
}

/// Copies `len` bytes from `src` at `from` to `dst` at `to`, leaving all-zero MiBs unwritten
/// (the files stay sparse).
fn copy_range(src: &fs::File, from: u64, dst: &fs::File, to: u64, len: u64) {
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = MIB.min(len - done) as usize;
        src.read_exact_at(&mut buf[..n], from + done).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], to + done).unwrap();
        }
        done += n as u64;
    }
}

/// xfs_db's free space of the file system in `volume` (AGFL blocks excluded), as byte ranges.
fn xfs_db_free(volume: &Path) -> Vec<Range<u64>> {
    let db = |cmds: &[&str]| -> String {
        let mut args: Vec<&OsStr> = vec![os("-r")];
        for c in cmds {
            args.push(os("-c"));
            args.push(os(c));
        }
        args.push(volume.as_os_str());
        tool("xfs_db", &args).stdout
    };
    let field = |out: &str, name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .parse()
            .unwrap()
    };
    let sb = db(&["sb 0", "print blocksize agblocks agcount"]);
    let (bs, agblocks, agcount) = (
        field(&sb, "blocksize"),
        field(&sb, "agblocks"),
        field(&sb, "agcount"),
    );
    let mut agfl = BTreeSet::new();
    for ag in 0..agcount {
        let agf = db(&[&format!("agf {ag}"), "print flfirst flcount"]);
        let (first, count) = (field(&agf, "flfirst"), field(&agf, "flcount"));
        let list = db(&[&format!("agfl {ag}"), "print bno"]);
        let line = list.lines().find(|l| l.starts_with("bno[")).unwrap();
        let entries: Vec<&str> = line
            .split_once("= ")
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        for i in 0..count {
            let entry = entries[((first + i) % entries.len() as u64) as usize];
            agfl.insert(ag * agblocks + entry.split_once(':').unwrap().1.parse::<u64>().unwrap());
        }
    }
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let out = db(&["freesp -d"]);
    for line in out.lines().skip(1).take_while(|l| !l.contains("from")) {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let [ag, agbno, len] = v[..] else { continue };
        for b in ag * agblocks + agbno..ag * agblocks + agbno + len {
            if agfl.contains(&b) {
                continue;
            }
            match ranges.last_mut() {
                Some(r) if r.end == b * bs => r.end += bs,
                _ => ranges.push(b * bs..(b + 1) * bs),
            }
        }
    }
    assert!(!ranges.is_empty(), "xfs_db lists no free space: {out}");
    ranges
}

/// The one volume of a report: XFS, in the given state.
fn xfs_volume<'a>(report: &'a Value, state: &str) -> &'a Value {
    let vols = report["volumes"].as_array().expect("volumes in the report");
    assert_eq!(vols.len(), 1, "{report}");
    assert_eq!(vols[0]["fs"], "xfs", "{report}");
    assert_eq!(vols[0]["state"], state, "{report}");
    &vols[0]
}

/// Compacts a fresh conversion of `guest` with `mode` and checks content and reclaim.
fn compacts_to_the_ceiling(guest: &Guest, format: &str, block: u64, mode: &str) {
    let subformat = if mode == "retrim" { "fixed" } else { "dynamic" };
    let image = guest.image(format, subformat, block);
    let before = fs::metadata(&image).unwrap();
    let r = compact_ok(&image, mode, &[]);
    let after = fs::metadata(&image).unwrap();
    xfs_volume(&r, "trusted");
    assert_eq!(num(&r, "block_size"), block, "{r}");
    let ceiling = guest.ceiling(block);
    let reclaimed = if mode == "retrim" {
        assert_eq!(after.len(), before.len(), "retrim keeps the length: {r}");
        (before.blocks() - after.blocks()) * 512
    } else {
        num(&r, "blocks_reclaimed_fs") * block
    };
    eprintln!(
        "xfs {format} {}M {mode}: ceiling {} MiB, reclaimed {} MiB, file {} -> {} bytes",
        block / MIB,
        ceiling / MIB,
        reclaimed / MIB,
        before.len(),
        after.len()
    );
    assert!(
        ceiling >= 40 * MIB,
        "the test deletes most files: {ceiling}"
    );
    assert!(
        reclaimed * 100 >= ceiling * 97,
        "{mode}: reclaimed {reclaimed} bytes, want 97% of the ceiling {ceiling}: {r}"
    );
    if mode == "quick" {
        assert_eq!(num(&r, "blocks_reclaimed_zero"), 0, "{r}");
    }
    guest.assert_content_kept(&image, format);
}

#[test]
fn bare_xfs_in_a_dynamic_vhdx_with_1m_blocks_gives_back_deleted_files_space_in_full_mode() {
    let guest = Guest::build(Layout::Bare, &[], every_sixth, false);
    compacts_to_the_ceiling(&guest, "vhdx", MIB, "full");
}

#[test]
fn xfs_in_gpt_in_a_dynamic_vhd_gives_back_deleted_files_space_in_full_and_quick_mode() {
    let guest = Guest::build(Layout::Gpt, &[], every_sixth, false);
    compacts_to_the_ceiling(&guest, "vpc", 2 * MIB, "full");
    compacts_to_the_ceiling(&guest, "vpc", 2 * MIB, "quick");
}

#[test]
fn xfs_with_2k_blocks_in_vhdx_with_32m_blocks_and_retrim_of_a_fixed_vhdx_reach_the_ceiling() {
    // Version 4 is covered by vdisk-xfs' own tests: this kernel cannot mount it to write files.
    // One allocation group and the first four files kept, so that whole 32 MiB blocks are
    // free (with four groups, XFS spreads the files over the disk).
    let guest = Guest::build(
        Layout::Gpt,
        &["-b", "size=2048", "-d", "agcount=1"],
        |i| i < 4,
        false,
    );
    compacts_to_the_ceiling(&guest, "vhdx", 32 * MIB, "quick");
    compacts_to_the_ceiling(&guest, "vhdx", MIB, "retrim");
}

#[test]
fn xfs_with_a_dirty_log_is_untrusted_and_its_disk_reads_exactly_as_before() {
    let guest = Guest::build(Layout::Gpt, &[], every_sixth, true);
    let image = guest.image("vhdx", "dynamic", MIB);
    let r = compact_ok(&image, "full", &[]);
    let vol = xfs_volume(&r, "untrusted");
    assert!(text(vol, "reason").contains("not unmounted cleanly"), "{r}");
    assert_eq!(num(&r, "blocks_reclaimed_fs"), 0, "{r}");
    let back = guest.dir.path().join("dirty-back.raw");
    qemu_img([
        os("convert"),
        os("-f"),
        os("vhdx"),
        os("-O"),
        os("raw"),
        image.as_os_str(),
        back.as_os_str(),
    ])
    .ok();
    let out = qemu_img([
        os("compare"),
        os("-f"),
        os("raw"),
        os("-F"),
        os("raw"),
        guest.raw.as_os_str(),
        back.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}
