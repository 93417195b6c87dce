//! Walking a b-tree: depth first, in key order, every node verified (see [`crate::node`]),
//! levels strictly decreasing so a walk cannot loop, and a budget of nodes so that a tree
//! whose nodes are shared many times over cannot make it run for ever.

use std::cell::Cell;

use vdisk_core::fs::{Examined, MetaReader, damaged};

use crate::chunk::ChunkMap;
use crate::node::{Expect, Key, Node};
use crate::superblock::Geometry;

/// Tree ids (object ids of the roots, and owners of their nodes).
pub(crate) mod id {
    pub const ROOT: u64 = 1;
    pub const EXTENT: u64 = 2;
    pub const CHUNK: u64 = 3;
    pub const BLOCK_GROUP: u64 = 11;
}

/// Where a tree's root node lies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Root {
    pub tree: u64,
    pub bytenr: u64,
    pub level: u8,
    pub generation: u64,
}

/// Reads trees of one file system.
#[derive(Debug)]
pub(crate) struct TreeReader<'a> {
    meta: MetaReader<'a>,
    geo: &'a Geometry,
    nodes_left: Cell<u64>,
}

impl<'a> TreeReader<'a> {
    pub(crate) fn new(meta: MetaReader<'a>, geo: &'a Geometry) -> TreeReader<'a> {
        TreeReader {
            meta,
            geo,
            nodes_left: Cell::new(0),
        }
    }

    /// Allows `n` more node reads.
    pub(crate) fn set_node_budget(&self, n: u64) {
        self.nodes_left.set(n);
    }

    fn read_node(&self, map: &ChunkMap, expect: &Expect) -> Examined<Node> {
        let left = self.nodes_left.get();
        if left == 0 {
            return damaged("btrfs trees hold more nodes than their chunks have room for");
        }
        self.nodes_left.set(left - 1);
        let len = self.geo.nodesize;
        let at = expect.bytenr;
        if !at.is_multiple_of(self.geo.sectorsize) {
            return damaged(format!("btrfs tree node address {at:#x} is not aligned"));
        }
        let size = usize::try_from(len).unwrap_or(usize::MAX);
        // DUP keeps two copies: the first that verifies is the node, as btrfs reads it.
        for physical in map.map(at, len)? {
            let bytes = self.meta.read(physical, size, "a btrfs tree node")?;
            if let Some(node) = Node::verify(bytes, self.geo.csum, &self.geo.node_fsid, expect)? {
                return Ok(node);
            }
        }
        damaged(format!(
            "btrfs tree node {at:#x} fails its checksum (or is not the node its parent points to)"
        ))
    }

    /// Calls `visit` with every leaf item of the tree at `root`, in key order, using `map` to
    /// find nodes.
    pub(crate) fn walk(
        &self,
        map: &ChunkMap,
        root: Root,
        visit: &mut dyn FnMut(Key, &[u8]) -> Examined<()>,
    ) -> Examined<()> {
        let expect = Expect {
            bytenr: root.bytenr,
            level: root.level,
            generation: root.generation,
            owner: root.tree,
            first: None,
            below: None,
        };
        self.walk_node(map, &expect, visit)
    }

    fn walk_node(
        &self,
        map: &ChunkMap,
        expect: &Expect,
        visit: &mut dyn FnMut(Key, &[u8]) -> Examined<()>,
    ) -> Examined<()> {
        let node = self.read_node(map, expect)?;
        if node.level() == 0 {
            for (key, data) in node.items() {
                visit(key, data)?;
            }
            return Ok(());
        }
        let children: Vec<_> = node.children().collect();
        for (i, child) in children.iter().enumerate() {
            let below = children.get(i + 1).map(|c| c.key).or(expect.below);
            let next = Expect {
                bytenr: child.bytenr,
                level: node.level() - 1,
                generation: child.generation,
                owner: expect.owner,
                first: Some(child.key),
                below,
            };
            if child.generation > expect.generation {
                return damaged(format!(
                    "btrfs tree node {:#x} points to a child newer than itself",
                    expect.bytenr
                ));
            }
            self.walk_node(map, &next, visit)?;
        }
        Ok(())
    }
}
