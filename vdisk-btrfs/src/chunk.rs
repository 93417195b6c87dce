//! Chunks: the mapping of btrfs's logical address space onto the device. The superblock's
//! `sys_chunk_array` maps the SYSTEM chunks, enough to read the chunk tree, whose
//! `CHUNK_ITEM`s map everything. Only the single-device profiles are accepted: SINGLE (one
//! stripe) and DUP (two copies of the same logical range on this device); any RAID profile,
//! or a stripe on another device, makes the volume untrusted.

use std::ops::Range;

use vdisk_core::fs::{Examined, damaged};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::node::Key;

/// Key type of a chunk item (`CHUNK_ITEM_KEY`).
pub(crate) const CHUNK_ITEM: u8 = 228;
/// Object id of every chunk item (`FIRST_CHUNK_TREE_OBJECTID`).
pub(crate) const CHUNK_OBJECTID: u64 = 256;
/// Most chunks an analysis holds (a 1 TiB volume has a few thousand).
const MAX_CHUNKS: usize = 1 << 18;

/// Block group / chunk type flags.
pub(crate) mod flags {
    pub const DATA: u64 = 1 << 0;
    pub const SYSTEM: u64 = 1 << 1;
    pub const METADATA: u64 = 1 << 2;
    pub const DUP: u64 = 1 << 5;
    /// RAID0, RAID1, DUP, RAID10, RAID5, RAID6, RAID1C3, RAID1C4.
    pub const PROFILES: u64 = 0x7f8;
    pub const KNOWN: u64 = DATA | SYSTEM | METADATA | PROFILES;
}

/// The fixed part of a chunk item (`btrfs_chunk`), followed by `num_stripes` stripes.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ChunkItem {
    /// Logical bytes the chunk maps.
    length: U64,
    /// Owner tree (the extent tree).
    owner: U64,
    /// Stripe unit of striped profiles.
    stripe_len: U64,
    /// Block group flags: kind and profile.
    kind: U64,
    /// Optimal I/O alignment.
    io_align: U32,
    /// Optimal I/O width.
    io_width: U32,
    /// Minimal I/O size.
    sector_size: U32,
    /// Stripes that follow.
    num_stripes: U16,
    /// Sub-stripes (RAID10).
    sub_stripes: U16,
}

const CHUNK_ITEM_LEN: usize = 48;
const _: () = assert!(size_of::<ChunkItem>() == CHUNK_ITEM_LEN);

/// One stripe of a chunk (`btrfs_stripe`).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Stripe {
    /// Device holding it.
    devid: U64,
    /// Physical byte offset on that device.
    offset: U64,
    /// UUID of that device.
    dev_uuid: [u8; 16],
}

const STRIPE_LEN: usize = 32;
const _: () = assert!(size_of::<Stripe>() == STRIPE_LEN);

/// A chunk of this device: a logical range and the physical copies of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub start: u64,
    pub length: u64,
    pub flags: u64,
    /// Physical offset of each copy (one for SINGLE, two for DUP).
    pub copies: Vec<u64>,
}

impl Chunk {
    pub(crate) fn end(&self) -> u64 {
        self.start + self.length
    }

    /// The device ranges that hold `logical` (inside this chunk).
    pub(crate) fn physical(&self, logical: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let from = logical.start.saturating_sub(self.start);
        let to = logical.end.min(self.end()).saturating_sub(self.start);
        self.copies.iter().map(move |&p| p + from..p + to.max(from))
    }
}

/// What the analysis knows of the device to check chunks against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Device {
    pub devid: u64,
    pub bytes: u64,
    pub sectorsize: u64,
}

/// Parses the chunk item of the chunk at logical `start` from `data`; returns it and the
/// bytes it took.
pub(crate) fn parse(start: u64, data: &[u8], dev: &Device) -> Examined<(Chunk, usize)> {
    let Ok((c, rest)) = ChunkItem::ref_from_prefix(data) else {
        return damaged("btrfs chunk item is truncated");
    };
    let n = usize::from(c.num_stripes.get());
    let len = CHUNK_ITEM_LEN + n * STRIPE_LEN;
    if n == 0 || rest.len() < n * STRIPE_LEN {
        return damaged(format!(
            "btrfs chunk at {start:#x} has {n} stripes that do not fit its item"
        ));
    }
    let (length, kind) = (c.length.get(), c.kind.get());
    if length == 0
        || !length.is_multiple_of(dev.sectorsize)
        || !start.is_multiple_of(dev.sectorsize)
        || start.checked_add(length).is_none()
    {
        return damaged(format!(
            "btrfs chunk at {start:#x} has an invalid length {length}"
        ));
    }
    if kind & !flags::KNOWN != 0 || kind & (flags::DATA | flags::SYSTEM | flags::METADATA) == 0 {
        return damaged(format!(
            "btrfs chunk at {start:#x} has unknown type flags {kind:#x}"
        ));
    }
    let profile = kind & flags::PROFILES;
    let copies_expected = match profile {
        0 => 1,
        flags::DUP => 2,
        _ => {
            return damaged(format!(
                "btrfs uses the {} profile; only single and dup are supported",
                profile_name(profile)
            ));
        }
    };
    if n != copies_expected {
        return damaged(format!(
            "btrfs chunk at {start:#x} has {n} stripes, its profile has {copies_expected}"
        ));
    }
    let mut copies = Vec::with_capacity(n);
    for s in <[Stripe]>::ref_from_prefix_with_elems(rest, n)
        .map(|(s, _)| s)
        .unwrap_or(&[])
    {
        let (devid, offset) = (s.devid.get(), s.offset.get());
        if devid != dev.devid {
            return damaged(format!(
                "btrfs chunk at {start:#x} lives on device {devid}, which is missing (btrfs spans several devices)"
            ));
        }
        if !offset.is_multiple_of(dev.sectorsize)
            || offset.checked_add(length).is_none_or(|e| e > dev.bytes)
        {
            return damaged(format!(
                "btrfs chunk at {start:#x} maps to bytes outside its device"
            ));
        }
        copies.push(offset);
    }
    let chunk = Chunk {
        start,
        length,
        flags: kind,
        copies,
    };
    Ok((chunk, len))
}

fn profile_name(profile: u64) -> &'static str {
    match profile {
        0x08 => "raid0",
        0x10 => "raid1",
        0x40 => "raid10",
        0x80 => "raid5",
        0x100 => "raid6",
        0x200 => "raid1c3",
        0x400 => "raid1c4",
        _ => "mixed-profile",
    }
}

/// Every chunk of the device, sorted by logical address, non-overlapping both logically and
/// physically.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChunkMap {
    chunks: Vec<Chunk>,
}

impl ChunkMap {
    /// The SYSTEM chunks of the superblock's `sys_chunk_array`.
    pub(crate) fn from_sys_array(array: &[u8], dev: &Device) -> Examined<ChunkMap> {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < array.len() {
            let Some((k, _)) = array
                .get(at..)
                .and_then(|a| crate::node::DiskKey::ref_from_prefix(a).ok())
            else {
                return damaged("btrfs system chunk array is truncated");
            };
            let key = Key::from(k);
            if key.kind != CHUNK_ITEM {
                return damaged("btrfs system chunk array holds something other than chunks");
            }
            at += size_of::<crate::node::DiskKey>();
            let (chunk, used) = parse(key.offset, &array[at..], dev)?;
            if chunk.flags & flags::SYSTEM == 0 {
                return damaged("btrfs system chunk array holds a non-system chunk");
            }
            chunks.push(chunk);
            at += used;
        }
        ChunkMap::new(chunks)
    }

    /// Chunks from `chunks`, checked for overlaps.
    pub(crate) fn new(mut chunks: Vec<Chunk>) -> Examined<ChunkMap> {
        if chunks.len() > MAX_CHUNKS {
            return damaged("btrfs has more chunks than any sound volume");
        }
        chunks.sort_unstable_by_key(|c| c.start);
        if chunks.windows(2).any(|w| w[0].end() > w[1].start) {
            return damaged("btrfs chunks overlap in the logical address space");
        }
        let map = ChunkMap { chunks };
        let mut stripes: Vec<Range<u64>> = map.device_ranges().collect();
        stripes.sort_unstable_by_key(|r| r.start);
        if stripes.windows(2).any(|w| w[0].end > w[1].start) {
            return damaged("btrfs chunks overlap on the device");
        }
        Ok(map)
    }

    /// The chunks, in logical order.
    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Index of the chunk holding `logical`.
    pub(crate) fn index_of(&self, logical: u64) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.end() <= logical);
        self.chunks.get(i).filter(|c| c.start <= logical).map(|_| i)
    }

    /// The device ranges holding the `len` bytes at `logical`, which must lie in one chunk.
    pub(crate) fn map(&self, logical: u64, len: u64) -> Examined<Vec<u64>> {
        let chunk = self.index_of(logical).map(|i| &self.chunks[i]);
        match chunk {
            Some(c) if logical.checked_add(len).is_some_and(|e| e <= c.end()) => {
                Ok(c.copies.iter().map(|p| p + (logical - c.start)).collect())
            }
            _ => damaged(format!(
                "btrfs logical address {logical:#x} is not mapped by any chunk"
            )),
        }
    }

    /// Every device range some chunk holds.
    pub(crate) fn device_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.copies.iter().map(move |&p| p..p + c.length))
    }

    /// Bytes of chunks holding tree nodes (SYSTEM or METADATA, mixed included).
    pub(crate) fn metadata_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| c.flags & (flags::SYSTEM | flags::METADATA) != 0)
            .map(|c| c.length)
            .sum()
    }
}
