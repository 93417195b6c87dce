//! Real ext2/3/4 volumes made by e2fsprogs (`mkfs.ext4 -d`, `debugfs -w`), read into a
//! `MemDevice`, and e2fsprogs' own view of their free blocks (`dumpe2fs`). A missing tool
//! fails the test (package `e2fsprogs`).

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
pub use vdisk_core::testing::noise;

use vdisk_core::fs::MemDevice;
use vdisk_core::{FsAnalyzer, FsUsage, FsVerdict};

/// Runs an e2fsprogs tool; panics with its output on failure.
pub fn e2(program: &str, args: &[&str]) -> String {
    vdisk_core::testing::run_tool(program, "e2fsprogs", args)
}

/// A volume image in a temporary directory.
pub struct Volume {
    /// Holds the files; removed on drop.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Volume {
    /// `mkfs.ext4` with `options` over `mib` MiB of noise (free blocks keep garbage), filled
    /// from a directory of `files` random files of `file_kib` KiB each, then every file whose
    /// index is not a multiple of `keep_every` removed with `debugfs -w`.
    pub fn make(
        options: &[&str],
        mib: usize,
        files: usize,
        file_kib: usize,
        keep_every: usize,
    ) -> Volume {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol.img");
        fs::write(&path, noise(mib << 20, mib as u64)).unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..files {
            fs::write(
                src.join(format!("f{i}")),
                noise(file_kib << 10, i as u64 + 7),
            )
            .unwrap();
        }
        let mut args: Vec<&str> = vec!["-q", "-F", "-E", "nodiscard", "-d"];
        let src_s = src.to_str().unwrap().to_owned();
        args.push(&src_s);
        args.extend_from_slice(options);
        let path_s = path.to_str().unwrap().to_owned();
        args.push(&path_s);
        e2("mkfs.ext4", &args);
        let rm: Vec<String> = (0..files)
            .filter(|i| i % keep_every != 0)
            .map(|i| format!("rm /f{i}"))
            .collect();
        if !rm.is_empty() {
            let script = dir.path().join("rm.cmd");
            fs::write(&script, rm.join("\n")).unwrap();
            e2("debugfs", &["-w", "-f", script.to_str().unwrap(), &path_s]);
        }
        Volume { _dir: dir, path }
    }

    /// Runs `debugfs -w -R request` on the volume.
    pub fn debugfs(&self, request: &str) {
        e2(
            "debugfs",
            &["-w", "-R", request, self.path.to_str().unwrap()],
        );
    }

    /// The volume's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap()
    }

    /// The block size `dumpe2fs -h` reports.
    pub fn block_size(&self) -> u64 {
        header_field(&self.path, "Block size")
    }

    /// The cluster size (`Cluster size` with bigalloc, else the block size).
    pub fn cluster_size(&self) -> u64 {
        let out = e2("dumpe2fs", &["-h", self.path.to_str().unwrap()]);
        if out.contains("Cluster size:") {
            header_field(&self.path, "Cluster size")
        } else {
            self.block_size()
        }
    }

    /// Free blocks as `dumpe2fs` lists them, as byte ranges, coalesced.
    pub fn dumpe2fs_free(&self) -> Vec<Range<u64>> {
        dumpe2fs_free(&self.path, self.block_size(), self.cluster_size())
    }

    /// `e2fsck -fn` is clean.
    pub fn assert_fsck_clean(&self) {
        e2("e2fsck", &["-fn", self.path.to_str().unwrap()]);
    }
}

/// A numeric field of `dumpe2fs -h`.
pub fn header_field(path: &Path, name: &str) -> u64 {
    let out = e2("dumpe2fs", &["-h", path.to_str().unwrap()]);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("dumpe2fs has no {name}: {out}"))
}

/// The free blocks of `dumpe2fs` (its `Free blocks:` lines) as coalesced byte ranges. With
/// bigalloc, dumpe2fs lists free clusters by their first blocks: `a-b` ends with the cluster
/// starting at block `b`.
pub fn dumpe2fs_free(path: &Path, block: u64, cluster: u64) -> Vec<Range<u64>> {
    let out = e2("dumpe2fs", &[path.to_str().unwrap()]);
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for line in out.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for item in list.split(", ").filter(|s| !s.is_empty()) {
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => {
                    let a = item.parse::<u64>().unwrap();
                    (a, a)
                }
            };
            let r = a * block..b * block + cluster;
            match ranges.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => ranges.push(r),
            }
        }
    }
    ranges.sort_by_key(|r| r.start);
    ranges
}

/// The analyser's verdict on `bytes`.
pub fn analyse(bytes: Vec<u8>) -> FsVerdict {
    vdisk_ext4::ANALYZER
        .analyze(&MemDevice::new(bytes))
        .expect("no device error")
}

/// The usage of a trusted volume; panics otherwise.
pub fn trusted(bytes: Vec<u8>) -> FsUsage {
    match analyse(bytes) {
        FsVerdict::Analysed(u) => u,
        other => panic!("expected a trusted volume: {other:?}"),
    }
}

/// The reason of an untrusted volume; panics otherwise.
pub fn untrusted(bytes: Vec<u8>) -> String {
    match analyse(bytes) {
        FsVerdict::Untrusted { fs, reason } => {
            assert_eq!(fs, "ext4");
            reason
        }
        other => panic!("expected an untrusted volume: {other:?}"),
    }
}

/// A detail of a usage report.
pub fn detail<'a>(u: &'a FsUsage, key: &str) -> &'a str {
    u.details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no detail {key}: {:?}", u.details))
}
