//! Tree nodes (`btrfs_header` + items or key pointers): every node read is verified against
//! its checksum, the file system's UUID, its own address, the level and owner its parent
//! expects and the key range its parent allows, before any item is looked at.

use std::cmp::Ordering;

use vdisk_core::fs::{Examined, damaged};
use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum::CsumType;

/// A key as it lies on disk (`btrfs_disk_key`), 17 bytes.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DiskKey {
    /// Object id.
    objectid: U64,
    /// Item type.
    kind: u8,
    /// Type-specific offset.
    offset: U64,
}

/// A key, ordered as btrfs orders them: object id, then type, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub objectid: u64,
    pub kind: u8,
    pub offset: u64,
}

impl From<&DiskKey> for Key {
    fn from(k: &DiskKey) -> Key {
        Key {
            objectid: k.objectid.get(),
            kind: k.kind,
            offset: k.offset.get(),
        }
    }
}

/// The node header (`btrfs_header`), 101 bytes.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    /// Checksum of the rest of the node.
    csum: [u8; 32],
    /// File system UUID (or metadata UUID).
    fsid: [u8; 16],
    /// Logical address of this node.
    bytenr: U64,
    /// Header flags.
    flags: U64,
    /// Chunk tree UUID.
    chunk_tree_uuid: [u8; 16],
    /// Transaction that wrote the node.
    generation: U64,
    /// Tree the node belongs to.
    owner: U64,
    /// Items (leaf) or key pointers (internal node).
    nritems: U32,
    /// 0 for a leaf.
    level: u8,
}

const HEADER_LEN: usize = 101;
const _: () = assert!(size_of::<Header>() == HEADER_LEN);

/// A leaf item descriptor (`btrfs_item`): its key and where its data lies after the header.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Item {
    key: DiskKey,
    /// Data offset, counted from the end of the header.
    offset: U32,
    /// Data bytes.
    size: U32,
}

const ITEM_LEN: usize = 25;
const _: () = assert!(size_of::<Item>() == ITEM_LEN);

/// A key pointer of an internal node (`btrfs_key_ptr`).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct KeyPtr {
    key: DiskKey,
    /// Logical address of the child.
    blockptr: U64,
    /// Generation the child must carry.
    generation: U64,
}

const KEY_PTR_LEN: usize = 33;
const _: () = assert!(size_of::<KeyPtr>() == KEY_PTR_LEN);

/// What the reader of a node expects of it, from the superblock or the parent's pointer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    pub bytenr: u64,
    pub level: u8,
    pub generation: u64,
    pub owner: u64,
    /// The first key, when the parent names it.
    pub first: Option<Key>,
    /// Keys must be below this (the parent's next key).
    pub below: Option<Key>,
}

/// A child of an internal node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child {
    pub key: Key,
    pub bytenr: u64,
    pub generation: u64,
}

/// A verified node.
#[derive(Debug)]
pub(crate) struct Node {
    bytes: Vec<u8>,
    level: u8,
    nritems: usize,
}

impl Node {
    /// Verifies `bytes` (one node, `nodesize` long) against `expect`; `None` when its
    /// checksum, UUID or address show it is not the node asked for (another copy may be),
    /// `Err` when the node is the one asked for but its contents are unsound.
    pub(crate) fn verify(
        bytes: Vec<u8>,
        csum: CsumType,
        fsid: &[u8; 16],
        expect: &Expect,
    ) -> Examined<Option<Node>> {
        let Ok((h, _)) = Header::ref_from_prefix(&bytes) else {
            return damaged("btrfs tree node is shorter than its header");
        };
        if !csum.verify(&bytes) || h.fsid != *fsid || h.bytenr.get() != expect.bytenr {
            return Ok(None);
        }
        let at = expect.bytenr;
        if h.level != expect.level {
            return damaged(format!(
                "btrfs tree node {at:#x} has level {}, its parent expects {}",
                h.level, expect.level
            ));
        }
        if h.generation.get() != expect.generation {
            return damaged(format!(
                "btrfs tree node {at:#x} has generation {}, its parent expects {} (parent transid verify failed)",
                h.generation.get(),
                expect.generation
            ));
        }
        if h.owner.get() != expect.owner {
            return damaged(format!(
                "btrfs tree node {at:#x} belongs to tree {}, not to tree {}",
                h.owner.get(),
                expect.owner
            ));
        }
        let entry = if h.level == 0 { ITEM_LEN } else { KEY_PTR_LEN };
        let nritems = usize::try_from(h.nritems.get()).unwrap_or(usize::MAX);
        if nritems > (bytes.len() - HEADER_LEN) / entry || (nritems == 0 && h.level > 0) {
            return damaged(format!(
                "btrfs tree node {at:#x} claims {nritems} items, more than fit"
            ));
        }
        let node = Node {
            level: h.level,
            nritems,
            bytes,
        };
        node.check_keys(expect)?;
        if node.level == 0 {
            node.check_items()?;
        }
        Ok(Some(node))
    }

    fn key_at(&self, i: usize) -> Key {
        let entry = if self.level == 0 {
            ITEM_LEN
        } else {
            KEY_PTR_LEN
        };
        let at = HEADER_LEN + i * entry;
        DiskKey::ref_from_prefix(&self.bytes[at..]).map_or(
            Key {
                objectid: 0,
                kind: 0,
                offset: 0,
            },
            |(k, _)| Key::from(k),
        )
    }

    /// Keys strictly ascending, the first one what the parent says, all below the parent's
    /// next key: so a walk of a tree meets its keys in order.
    fn check_keys(&self, expect: &Expect) -> Examined<()> {
        let at = expect.bytenr;
        let mut prev: Option<Key> = None;
        for i in 0..self.nritems {
            let k = self.key_at(i);
            if prev.is_some_and(|p| p >= k) {
                return damaged(format!("btrfs tree node {at:#x} has keys out of order"));
            }
            prev = Some(k);
        }
        if let (Some(first), true) = (expect.first, self.nritems > 0)
            && self.key_at(0) != first
        {
            return damaged(format!(
                "btrfs tree node {at:#x} does not start with the key its parent names"
            ));
        }
        if let (Some(below), Some(last)) = (expect.below, prev)
            && last.cmp(&below) != Ordering::Less
        {
            return damaged(format!(
                "btrfs tree node {at:#x} holds keys beyond its parent's range"
            ));
        }
        Ok(())
    }

    /// Every leaf item's data lies inside the node, after the item descriptors.
    fn check_items(&self) -> Examined<()> {
        let data_start = self.nritems * ITEM_LEN;
        let room = self.bytes.len() - HEADER_LEN;
        for i in 0..self.nritems {
            let (off, size) = self.item_span(i);
            if off < data_start || off.checked_add(size).is_none_or(|end| end > room) {
                return damaged("btrfs tree leaf has an item whose data lies outside it");
            }
        }
        Ok(())
    }

    fn item_span(&self, i: usize) -> (usize, usize) {
        let at = HEADER_LEN + i * ITEM_LEN;
        Item::ref_from_prefix(&self.bytes[at..]).map_or((0, 0), |(it, _)| {
            (
                usize::try_from(it.offset.get()).unwrap_or(usize::MAX),
                usize::try_from(it.size.get()).unwrap_or(usize::MAX),
            )
        })
    }

    /// The node's level (0: leaf).
    pub(crate) fn level(&self) -> u8 {
        self.level
    }

    /// A leaf's items: key and data.
    pub(crate) fn items(&self) -> impl Iterator<Item = (Key, &[u8])> {
        let n = if self.level == 0 { self.nritems } else { 0 };
        (0..n).map(move |i| {
            let (off, size) = self.item_span(i);
            let from = HEADER_LEN + off;
            (self.key_at(i), &self.bytes[from..from + size])
        })
    }

    /// An internal node's children, in key order.
    pub(crate) fn children(&self) -> impl Iterator<Item = Child> {
        let n = if self.level > 0 { self.nritems } else { 0 };
        (0..n).filter_map(move |i| {
            let at = HEADER_LEN + i * KEY_PTR_LEN;
            KeyPtr::ref_from_prefix(&self.bytes[at..])
                .ok()
                .map(|(p, _)| Child {
                    key: Key::from(&p.key),
                    bytenr: p.blockptr.get(),
                    generation: p.generation.get(),
                })
        })
    }
}
