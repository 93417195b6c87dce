//! # vdisk-btrfs
//!
//! The btrfs implementation of [`vdisk_core::FsAnalyzer`], for single-device file systems:
//! which bytes of the device hold nothing btrfs will read back.
//!
//! ```text
//!   ANALYZER.analyze(volume)          volume offset 0 = the volume's first byte
//!     superblock    magic "_BHRfS_M" at 64 KiB + 0x40 ── absent ───────────► NotMine
//!                   crc32c, bytenr, sector/node size, levels, sizes bounded;
//!                   more than one device, an unreplayed log tree, unknown
//!                   features or flags, another checksum type ──────────────► Untrusted
//!                   mirrors at 64 MiB / 256 GiB newer than the primary ────► Untrusted
//!     chunk         sys_chunk_array → SYSTEM chunks → chunk tree (tree) → every chunk:
//!                   SINGLE or DUP on this device only (RAID, missing device ► Untrusted)
//!     tree / node   every node: checksum, fsid, bytenr, level, owner, generation, key
//!                   order and range, item bounds; a budget of nodes per walk
//!     root tree     ROOT_ITEMs of the extent tree (and of the block group tree)
//!     extent        EXTENT_ITEM / METADATA_ITEM in address order: the gaps inside each
//!                   chunk are free; BLOCK_GROUP_ITEM used bytes must equal the extents
//!     device        free logical gaps mapped to every copy (both for DUP); device bytes no
//!                   chunk holds are free; the first MiB and the superblock copies never are
//!     ────────────────────────────────────────────────────────────────────► Analysed
//! ```
//!
//! Damage anywhere after the signature is a reason ([`vdisk_core::FsVerdict::Untrusted`]), not
//! an error; `Err` means the device failed a read. The free space is the committed state the
//! superblock points to: btrfs never overwrites that state in place, so after a clean unmount
//! (or a crash without a log tree) nothing outside the extent tree's extents is read back.
//!
//! Why no crate: none on crates.io reads btrfs's allocation state (the chunk and extent
//! trees) over an arbitrary block device with bounded reads; the readers that exist walk
//! files. The analyser reads only the superblocks, the chunk tree, the root tree, the extent
//! tree and (with `block_group_tree`) the block group tree.
//!
//! [`vdisk_core::FsUsage::details`] keys: `label`, `generation`, `nodesize`, `sectorsize`,
//! `csum`, `chunks`, `used_bytes`.
#![forbid(unsafe_code)]

mod checksum;
mod chunk;
mod extent;
mod node;
mod superblock;
mod tree;

use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged, examine_guarded};
use vdisk_core::{BlockDevice, FsAnalyzer, FsUsage, FsVerdict, Result};
use zerocopy::FromBytes;
use zerocopy::byteorder::little_endian::U64;

use crate::chunk::{CHUNK_ITEM, CHUNK_OBJECTID, ChunkMap, Device};
use crate::extent::{Allocation, BLOCK_GROUP_ITEM};
use crate::node::Key;
use crate::superblock::{
    Geometry, MIRRORS, PRIMARY_OFFSET, RESERVED_START, SUPER_LEN, compat_ro, fsid_of, has_magic,
};
use crate::tree::{Root, TreeReader, id};

/// The analyser id.
const ID: &str = "btrfs";
/// Key type of a device item in the chunk tree (`DEV_ITEM_KEY`).
const DEV_ITEM: u8 = 216;
/// Object id of the device items (`DEV_ITEMS_OBJECTID`).
const DEV_ITEMS_OBJECTID: u64 = 1;
/// Key type of a tree root in the root tree (`ROOT_ITEM_KEY`).
const ROOT_ITEM: u8 = 132;
/// Bytes of a root item up to its `level` field (the oldest format).
const ROOT_ITEM_MIN: usize = 239;

/// The btrfs free-space analyser.
#[derive(Debug, Clone, Copy, Default)]
pub struct BtrfsAnalyzer;

/// The analyser to register: `&[&vdisk_btrfs::ANALYZER, ...]`.
pub static ANALYZER: BtrfsAnalyzer = BtrfsAnalyzer;

impl FsAnalyzer for BtrfsAnalyzer {
    fn id(&self) -> &'static str {
        ID
    }

    /// See the crate docs. Reasons for [`FsVerdict::Untrusted`] name the problem in the
    /// user's terms ("the file system has an unreplayed log; ...").
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        if volume.size() < PRIMARY_OFFSET + SUPER_LEN as u64 {
            return Ok(FsVerdict::NotMine);
        }
        let mut primary = [0u8; SUPER_LEN];
        volume.read_at(&mut primary, PRIMARY_OFFSET)?;
        if !has_magic(&primary) {
            return Ok(FsVerdict::NotMine);
        }
        examine_guarded(ID, || examine(volume, &primary))
    }
}

fn examine(volume: &dyn BlockDevice, primary: &[u8; SUPER_LEN]) -> Examined<FsVerdict> {
    let geo = Geometry::parse(primary, volume.size())?;
    check_mirrors(volume, &geo, primary)?;
    let dev = Device {
        devid: geo.devid,
        bytes: geo.dev_bytes,
        sectorsize: geo.sectorsize,
    };
    // Each node is read at most once per copy, through 64 KiB cached chunks.
    let max_nodes = geo.dev_bytes / geo.nodesize + 16;
    let budget = max_nodes.saturating_mul(2 * ((64 << 10) + geo.nodesize));
    let trees = TreeReader::new(MetaReader::new(volume, budget), &geo);

    let system = ChunkMap::from_sys_array(&geo.sys_chunk_array, &dev)?;
    let map = read_chunk_tree(&trees, &geo, &system, &dev)?;
    trees.set_node_budget(map.metadata_bytes() / geo.nodesize + 1);
    let roots = read_roots(&trees, &geo, &map)?;

    let mut free = FreeMap::new(volume.size(), geo.sectorsize);
    let mut alloc = Allocation::new(&map, geo.nodesize, geo.sectorsize);
    let chunks = map.chunks();
    let mut mark = |i: usize, logical: std::ops::Range<u64>| {
        for r in chunks[i].physical(logical.clone()) {
            free.mark_free(r);
        }
    };
    if let Some(bg_root) = roots.block_group {
        trees.walk(&map, bg_root, &mut |key, data| match key.kind {
            BLOCK_GROUP_ITEM => alloc.block_group(key, data),
            _ => Ok(()),
        })?;
    }
    let extent_root = roots.extent;
    trees.walk(&map, extent_root, &mut |key, data| {
        alloc.item(key, data, &mut mark)
    })?;
    alloc.finish(&mut mark)?;

    // Device bytes outside every chunk: unallocated, free.
    let mut held: Vec<_> = map.device_ranges().collect();
    held.sort_unstable_by_key(|r| r.start);
    let mut at = 0;
    for r in held {
        free.mark_free(at..r.start);
        at = r.end;
    }
    free.mark_free(at..geo.dev_bytes);
    // Never free, whatever the trees say: the first MiB and every superblock copy.
    free.mark_used(0..RESERVED_START);
    for m in MIRRORS {
        free.mark_used(m..m + SUPER_LEN as u64);
    }

    let details = vec![
        ("label".to_owned(), geo.label.clone()),
        ("generation".to_owned(), geo.generation.to_string()),
        ("nodesize".to_owned(), geo.nodesize.to_string()),
        ("sectorsize".to_owned(), geo.sectorsize.to_string()),
        ("csum".to_owned(), geo.csum.name().to_owned()),
        ("chunks".to_owned(), chunks.len().to_string()),
        ("used_bytes".to_owned(), geo.bytes_used.to_string()),
        ("total_bytes".to_owned(), geo.total_bytes.to_string()),
    ];
    Ok(FsVerdict::Analysed(FsUsage {
        fs: ID,
        cluster_size: geo.sectorsize,
        free,
        details,
    }))
}

/// A superblock copy newer than the primary would be preferred by recovery tools, and its
/// trees may live in space the primary calls free.
fn check_mirrors(
    volume: &dyn BlockDevice,
    geo: &Geometry,
    primary: &[u8; SUPER_LEN],
) -> Examined<()> {
    let fsid = fsid_of(primary);
    for &m in &MIRRORS[1..] {
        if m + SUPER_LEN as u64 > geo.dev_bytes {
            break;
        }
        let mut copy = [0u8; SUPER_LEN];
        volume.read_at(&mut copy, m)?;
        if geo.is_newer_copy(&copy, &fsid, m) {
            return damaged(format!(
                "btrfs superblock copy at byte {m:#x} is newer than the primary one"
            ));
        }
    }
    Ok(())
}

/// The chunk tree's chunks (read through the system chunks), checked against the device.
fn read_chunk_tree(
    trees: &TreeReader<'_>,
    geo: &Geometry,
    system: &ChunkMap,
    dev: &Device,
) -> Examined<ChunkMap> {
    trees.set_node_budget(system.metadata_bytes() / geo.nodesize + 1);
    let root = Root {
        tree: id::CHUNK,
        bytenr: geo.chunk_root,
        level: geo.chunk_root_level,
        generation: geo.chunk_root_generation,
    };
    let mut chunks = Vec::new();
    let mut devices = 0u64;
    trees.walk(system, root, &mut |key, data| {
        match (key.objectid, key.kind) {
            (CHUNK_OBJECTID, CHUNK_ITEM) => {
                let (chunk, used) = chunk::parse(key.offset, data, dev)?;
                if used != data.len() {
                    return damaged("btrfs chunk item has a size its stripes do not explain");
                }
                chunks.push(chunk);
            }
            (DEV_ITEMS_OBJECTID, DEV_ITEM) => {
                devices += 1;
                if key.offset != dev.devid || devices > 1 {
                    return damaged(
                        "btrfs spans several devices; only single-device btrfs is supported",
                    );
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    if devices != 1 {
        return damaged("btrfs chunk tree does not list its device");
    }
    let map = ChunkMap::new(chunks)?;
    for s in system.chunks() {
        if map.index_of(s.start).map(|i| &map.chunks()[i]) != Some(s) {
            return damaged("btrfs system chunk array disagrees with the chunk tree");
        }
    }
    Ok(map)
}

/// The roots the analysis reads.
#[derive(Debug)]
struct Roots {
    extent: Root,
    block_group: Option<Root>,
}

fn read_roots(trees: &TreeReader<'_>, geo: &Geometry, map: &ChunkMap) -> Examined<Roots> {
    let root = Root {
        tree: id::ROOT,
        bytenr: geo.root,
        level: geo.root_level,
        generation: geo.generation,
    };
    let (mut extent, mut block_group) = (None, None);
    trees.walk(map, root, &mut |key: Key, data| {
        if key.kind != ROOT_ITEM || key.offset != 0 {
            return Ok(());
        }
        let slot = match key.objectid {
            id::EXTENT => &mut extent,
            id::BLOCK_GROUP => &mut block_group,
            _ => return Ok(()),
        };
        *slot = Some(root_item(key.objectid, data)?);
        Ok(())
    })?;
    let Some(extent) = extent else {
        return damaged("btrfs root tree has no extent tree");
    };
    let wants_bg_tree = geo.compat_ro & compat_ro::BLOCK_GROUP_TREE != 0;
    if wants_bg_tree != block_group.is_some() {
        return damaged("btrfs block group tree is missing or unexpected");
    }
    Ok(Roots {
        extent,
        block_group,
    })
}

fn root_item(tree: u64, data: &[u8]) -> Examined<Root> {
    if data.len() < ROOT_ITEM_MIN {
        return damaged("btrfs root item is truncated");
    }
    let field = |at: usize| U64::read_from_bytes(&data[at..at + 8]).map_or(0, |v| v.get());
    let level = data[238];
    if level >= superblock::MAX_LEVEL {
        return damaged("btrfs root item has an invalid level");
    }
    Ok(Root {
        tree,
        generation: field(160),
        bytenr: field(176),
        level,
    })
}
