//! Shared helpers: XFS file systems made by mkfs.xfs in temp files, xfs_db's view of their
//! free space, loop mounts that always unmount.
//!
//! Every helper that runs an external tool panics when the tool is missing or fails: tests
//! fail, never skip.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vdisk_core::fs::MemDevice;
use vdisk_core::testing::{tool_output, tool_succeeds};
use vdisk_core::{FsAnalyzer, FsUsage, FsVerdict};

/// Runs `program` with `args`; panics with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Output {
    tool_succeeds(&mut xfs_command(program, args), "xfsprogs")
}

/// Runs `program`; panics only if it cannot be started (missing tool).
pub fn try_run(program: &str, args: &[&str]) -> Output {
    tool_output(&mut xfs_command(program, args), "xfsprogs")
}

fn xfs_command(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    // mkfs.xfs refuses file systems under 300 MB unless it runs under the XFS test suite.
    cmd.env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .args(args);
    cmd
}

/// Makes a `size`-byte file at `dir/name` holding an XFS file system made with `args`.
pub fn mkfs(dir: &Path, name: &str, size: u64, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut all = vec!["-q", "-f"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    run("mkfs.xfs", &all);
    path
}

/// The analyser's verdict on the file at `path`, read into memory.
pub fn verdict(path: &Path) -> FsVerdict {
    let dev = MemDevice::new(std::fs::read(path).unwrap());
    vdisk_xfs::ANALYZER.analyze(&dev).unwrap()
}

/// The usage of a trusted volume; panics otherwise.
pub fn usage(path: &Path) -> FsUsage {
    match verdict(path) {
        FsVerdict::Analysed(u) => u,
        other => panic!("expected a trusted XFS volume, got {other:?}"),
    }
}

/// The reason of an untrusted volume; panics otherwise.
pub fn untrusted_reason(path: &Path) -> String {
    match verdict(path) {
        FsVerdict::Untrusted { fs: "xfs", reason } => reason,
        other => panic!("expected an untrusted XFS volume, got {other:?}"),
    }
}

/// `xfs_db -r` running `commands` on `path`; its standard output.
pub fn xfs_db(path: &Path, commands: &[&str]) -> String {
    let mut args = vec!["-r"];
    for c in commands {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(path.to_str().unwrap());
    String::from_utf8(run("xfs_db", &args).stdout).unwrap()
}

/// The value of `field = value` in xfs_db output.
pub fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .to_owned()
}

/// Block size, blocks per AG and AG count from xfs_db.
pub fn geometry(path: &Path) -> (u64, u64, u64) {
    let sb = xfs_db(path, &["sb 0", "print blocksize agblocks agcount"]);
    let n = |f| field(&sb, f).parse::<u64>().unwrap();
    (n("blocksize"), n("agblocks"), n("agcount"))
}

/// The free space xfs_db's `freesp -d` walks, without the free list (AGFL) blocks it also
/// lists (they are reserved for btree growth), as sorted, coalesced byte ranges.
pub fn xfs_db_free(path: &Path) -> Vec<Range<u64>> {
    let (bs, agblocks, agcount) = geometry(path);
    let mut agfl = BTreeSet::new();
    for ag in 0..agcount {
        let agf = xfs_db(
            path,
            &[&format!("agf {ag}"), "print flfirst fllast flcount"],
        );
        let n = |f| field(&agf, f).parse::<u64>().unwrap();
        let (first, count) = (n("flfirst"), n("flcount"));
        let list = xfs_db(path, &[&format!("agfl {ag}"), "print bno"]);
        let line = list.lines().find(|l| l.starts_with("bno[")).unwrap();
        let entries: Vec<&str> = line
            .split_once("= ")
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let size = entries.len() as u64;
        for i in 0..count {
            let entry = entries[((first + i) % size) as usize];
            let bno: u64 = entry.split_once(':').unwrap().1.parse().unwrap();
            agfl.insert(ag * agblocks + bno);
        }
    }
    let out = xfs_db(path, &["freesp -d"]);
    let mut ranges: Vec<Range<u64>> = Vec::new();
    // One line per extent after the heading, then a histogram with its own heading.
    for line in out.lines().skip(1).take_while(|l| !l.contains("from")) {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let [ag, agbno, len] = v[..] else {
            continue;
        };
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
    ranges
}

/// A loop mount of an XFS image, unmounted (and its loop device detached) when dropped, even
/// when the test panics.
pub struct Mounted {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Mounts `image` at a new directory under `parent` with `options`.
    pub fn new(image: &Path, parent: &Path, options: &str) -> Mounted {
        let dir = parent.join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "xfs",
                "-o",
                &format!("loop,{options}"),
                image.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        Mounted { dir, mounted: true }
    }

    /// Unmounts now, checking that it worked.
    pub fn unmount(mut self) {
        self.mounted = false;
        run("umount", &[self.dir.to_str().unwrap()]);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            // `umount` of a loop mount also detaches the loop device it set up.
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}
