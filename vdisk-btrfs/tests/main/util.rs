//! Helpers: btrfs volumes made by mkfs.btrfs at test time, the analyser over them, and
//! editors that change a superblock or tree node and re-seal its checksum, as a hostile or
//! damaged image would be.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
pub use vdisk_core::testing::noise;

use tempfile::TempDir;
use vdisk_core::fs::MemDevice;
use vdisk_core::{FsAnalyzer, FsUsage, FsVerdict};

/// Byte offset of the primary superblock.
pub const SUPER: usize = 64 << 10;

/// A btrfs volume image in a temporary directory.
pub struct Volume {
    /// Holds the image (deleted on drop).
    pub _dir: TempDir,
    pub image: PathBuf,
}

impl Volume {
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.image).unwrap()
    }
}

/// A `size_mib` MiB btrfs made by `mkfs.btrfs [extra] --rootdir` holding `files` (name,
/// length) of random data.
pub fn mkfs(size_mib: u64, extra: &[&str], files: &[(&str, usize)]) -> Volume {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for (i, (name, len)) in files.iter().enumerate() {
        std::fs::write(root.join(name), noise(*len, i as u64 + 1)).unwrap();
    }
    let image = dir.path().join("btrfs.img");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(size_mib << 20).unwrap();
    drop(f);
    let out = Command::new("mkfs.btrfs")
        .args(["-q", "-f"])
        .args(extra)
        .arg("--rootdir")
        .arg(&root)
        .arg(&image)
        .output()
        .expect("mkfs.btrfs (btrfs-progs) must be installed");
    assert!(
        out.status.success(),
        "mkfs.btrfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Volume { _dir: dir, image }
}

/// The usual test volume: 128 MiB, a few files of a few hundred KiB up to 3 MiB.
pub fn small() -> Volume {
    mkfs(
        128,
        &[],
        &[
            ("a", 3 << 20),
            ("b", 700_000),
            ("c", 12_345),
            ("d", 1 << 20),
            ("e", 300),
        ],
    )
}

pub fn analyze(bytes: Vec<u8>) -> FsVerdict {
    vdisk_btrfs::ANALYZER
        .analyze(&MemDevice::new(bytes))
        .unwrap()
}

pub fn usage(bytes: Vec<u8>) -> FsUsage {
    match analyze(bytes) {
        FsVerdict::Analysed(u) => u,
        other => panic!("expected an analysed volume, got {other:?}"),
    }
}

/// The reason of an untrusted verdict.
pub fn untrusted(bytes: Vec<u8>) -> String {
    match analyze(bytes) {
        FsVerdict::Untrusted { fs, reason } => {
            assert_eq!(fs, "btrfs");
            reason
        }
        other => panic!("expected an untrusted volume, got {other:?}"),
    }
}

pub fn free_runs(u: &FsUsage) -> Vec<Range<u64>> {
    u.free.runs().collect()
}

fn crc_seal(block: &mut [u8]) {
    let c = crc32c::crc32c(&block[32..]);
    block[..32].fill(0);
    block[..4].copy_from_slice(&c.to_le_bytes());
}

pub fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Applies `edit` to the primary superblock and re-seals its checksum.
pub fn edit_super(bytes: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    let sb = &mut bytes[SUPER..SUPER + 4096];
    edit(sb);
    crc_seal(sb);
}

pub fn nodesize(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[SUPER + 0x94..SUPER + 0x98].try_into().unwrap()) as usize
}

/// Device offsets of every copy of the tree node at `logical` (found by its header).
pub fn node_copies(bytes: &[u8], logical: u64) -> Vec<usize> {
    let fsid = &bytes[SUPER + 0x20..SUPER + 0x30];
    let ns = nodesize(bytes);
    (1 << 20..bytes.len() - ns)
        .step_by(4096)
        .filter(|&at| get_u64(bytes, at + 0x30) == logical && &bytes[at + 0x20..at + 0x30] == fsid)
        .collect()
}

/// Applies `edit` to every copy of the node at `logical` and re-seals their checksums.
pub fn edit_node(bytes: &mut [u8], logical: u64, edit: impl Fn(&mut [u8])) {
    let ns = nodesize(bytes);
    let copies = node_copies(bytes, logical);
    assert!(!copies.is_empty(), "no node at {logical:#x}");
    for at in copies {
        let node = &mut bytes[at..at + ns];
        edit(node);
        crc_seal(node);
    }
}

/// A leaf item: key and the byte range of its data inside the node.
#[derive(Debug, Clone)]
pub struct LeafItem {
    pub kind: u8,
    pub data: Range<usize>,
}

/// The items of leaf `node`.
pub fn leaf_items(node: &[u8]) -> Vec<LeafItem> {
    assert_eq!(node[0x64], 0, "not a leaf");
    let n = u32::from_le_bytes(node[0x60..0x64].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let at = 101 + i * 25;
            let off = u32::from_le_bytes(node[at + 17..at + 21].try_into().unwrap()) as usize;
            let size = u32::from_le_bytes(node[at + 21..at + 25].try_into().unwrap()) as usize;
            LeafItem {
                kind: node[at + 8],
                data: 101 + off..101 + off + size,
            }
        })
        .collect()
}

/// Logical address of the chunk tree's root (a leaf on small volumes).
pub fn chunk_root(bytes: &[u8]) -> u64 {
    get_u64(bytes, SUPER + 0x58)
}

/// Logical address of the extent tree's root, from btrfs-progs.
pub fn extent_root(image: &Path) -> u64 {
    let out = Command::new("btrfs")
        .args(["inspect-internal", "dump-tree", "-t", "root"])
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.contains("key (EXTENT_TREE ROOT_ITEM") {
            for l in lines.by_ref() {
                if let Some(rest) = l.split("bytenr ").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
        }
    }
    panic!("no extent tree root in {text}");
}
