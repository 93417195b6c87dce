//! File-system analysers: what a guest file system says about which bytes it uses.
//!
//! An analyser looks at one volume (a partition, or a whole disk without a partition table)
//! through a [`BlockDevice`] whose offset 0 is the volume's first byte, and answers with a
//! [`FsVerdict`]. File systems plug in the same way formats do: an open list of
//! `&'static dyn FsAnalyzer` that the program holds, with no enum here to edit.
//!
//! The contract that protects user data: a range reported free must hold nothing the file
//! system will ever read back. When an analyser is not sure (dirty volume, unclean journal,
//! hibernated OS, damaged metadata), it answers [`FsVerdict::Untrusted`] with the reason, and
//! the caller falls back to the zero scan for that volume.
//!
//! Some volumes are sound but hold data outside their file system's own map: snapshots that
//! still read blocks the file system calls free, for instance. The analyser then answers
//! [`FsVerdict::Guarded`]: the usage, plus a named [`Hazard`] saying what reclaiming all of it
//! would destroy and, when it knows, exactly which bytes to keep. The caller decides, through
//! [`crate::AnalysisOptions`], whether the user accepted that loss.
//!
//! Some volumes are containers of other volumes: an LVM physical volume holds logical volumes,
//! each a list of the container's extents. The analyser of such a container answers
//! [`FsVerdict::Container`]: the container's own free bytes (extents no inner volume uses) and
//! the [`InnerVolume`]s, which the caller then gives to every analyser in turn, as it does
//! partitions (up to a small nesting depth: see [`crate::MAX_NESTING`]).
//!
//! # The analyser kit
//! What every analyser needs and none should write again: [`FreeMap`] (free space in bounded
//! memory, whatever its fragmentation), [`MetaReader`] (bounded, budgeted, cached metadata
//! reads), [`Doubt`] and [`examine_guarded`] (damage and panics become an untrusted verdict,
//! device failures stay errors), [`StreamReader`] (`Read + Seek` for parser crates),
//! [`MemDevice`] (a device in memory for tests and fuzz targets) and [`FileDevice`] (a raw
//! volume file on the host, for examples, tests and tools).

mod container;
mod file_device;
mod free_map;
mod mem_device;
mod metadata;
mod stream;

use std::fmt;
use std::ops::Range;

use crate::block::BlockDevice;
use crate::error::Result;

pub use container::{ContainerUsage, InnerVolume};
pub use file_device::FileDevice;
pub use free_map::{FreeMap, Runs};
pub use mem_device::MemDevice;
pub use metadata::{Doubt, Examined, MetaReader, damaged, examine_guarded};
pub use stream::StreamReader;

/// What an analyser concluded about a volume. Non-exhaustive: verdicts may be added, so a
/// match needs an arm for the rest (treat an unknown verdict as one that frees nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsVerdict {
    /// Not this analyser's file system (no signature).
    NotMine,
    /// This file system, but its free-space map must not be relied on.
    Untrusted {
        /// Analyser id, e.g. `"ntfs"`.
        fs: &'static str,
        /// Why, in words a user understands ("volume is marked dirty").
        reason: String,
    },
    /// This file system, with its free space.
    Analysed(FsUsage),
    /// This file system, whose free space holds data something else still reads.
    Guarded {
        /// The free space if the hazard is accepted (the loss it names then happens).
        usage: FsUsage,
        /// What reclaiming `usage` would destroy.
        hazard: Hazard,
    },
    /// A container of other volumes (an LVM physical volume): its own free bytes and the
    /// volumes inside it, for the registered analysers to examine.
    Container(ContainerUsage),
}

/// Data a trusted volume's free space still holds for someone else, which reclaim would lose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hazard {
    /// Stable lowercase id a user can name to accept the loss, e.g. `"shadow-copies"`. It
    /// must not contain the analyser's internals: it is part of the user interface.
    pub id: &'static str,
    /// What would be lost, in words a user understands.
    pub reason: String,
    /// The volume bytes that must be kept so nothing is lost, if the analyser knows them
    /// exactly (sorted, disjoint, relative to the volume). `None`: it does not know, so the
    /// volume's free space is not used at all unless the hazard is accepted.
    pub keep: Option<Vec<Range<u64>>>,
}

/// The free space of one trusted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Analyser id, e.g. `"ntfs"`.
    pub fs: &'static str,
    /// Allocation unit of the file system in bytes (NTFS cluster size).
    pub cluster_size: u64,
    /// Bytes of the volume the file system does not use, relative to the volume's start. Its
    /// length should be the volume's size; bytes past the volume are ignored.
    pub free: FreeMap,
    /// Facts for reports, e.g. ("label", "DATA"), ("version", "3.1").
    pub details: Vec<(String, String)>,
}

impl FsUsage {
    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.free_bytes()
    }
}

/// One file system's reader of free-space maps.
pub trait FsAnalyzer: Send + Sync + fmt::Debug + 'static {
    /// Short lowercase id, e.g. `"ntfs"`.
    fn id(&self) -> &'static str;

    /// Examines `volume` (offset 0 = the volume's first byte). Reads only.
    ///
    /// Returns [`FsVerdict::NotMine`] when the signature is absent; [`FsVerdict::Untrusted`]
    /// when the signature is present but the free map cannot be relied on (including damaged
    /// or inconsistent metadata: corruption is a reason, not an error); `Err` only for I/O
    /// failures of the device. Never panics, and bounds every length read from the volume
    /// before allocating. [`FsVerdict::Guarded`] when the volume is sound but its free
    /// clusters hold data another reader still needs (see [`Hazard`]). [`FsVerdict::Container`]
    /// when the volume holds other volumes (see [`ContainerUsage`] for what it promises).
    ///
    /// Core offers every volume to every registered analyser. Claim a volume (anything but
    /// `NotMine`) only on your file system's own signature: if two analysers claim one volume
    /// (one file system written over another without wiping), core trusts neither.
    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict>;
}

/// Sorts and merges `ranges` in place into disjoint, coalesced ranges; empty ranges vanish.
pub fn coalesce(ranges: &mut Vec<Range<u64>>) {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_overlapping_and_touching_ranges_and_drops_empty_ones() {
        let mut r = vec![10..20, 0..5, 5..7, 15..30, 40..40, 31..32];
        coalesce(&mut r);
        assert_eq!(r, vec![0..7, 10..30, 31..32]);
    }
}
