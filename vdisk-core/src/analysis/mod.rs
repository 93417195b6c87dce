//! Whole-disk analysis: partition layout, then each volume's file system (and the volumes
//! inside containers such as LVM), then the disk bytes the file systems leave unused.
//!
//! ```text
//!  read_layout(disk) ─► Unpartitioned ─► one volume: the whole disk
//!                    ├► Table ─────────► one volume per partition, except the types that
//!                    │                   are not volumes (PartitionKind::not_a_volume): Skipped
//!                    └► Unknown ───────► no volume: nothing is free
//!  each volume (a list of disk segments) ─► a VolumeView over them
//!    ─► every analyser: the one that is not NotMine decides; two or more ─► Untrusted
//!    ─► Analysed: free map cut to the volume, mapped segment by segment into the disk's map
//!    ─► Guarded: hazard accepted in AnalysisOptions ─► as Analysed
//!                keep ranges known ─► Analysed minus the keep ranges
//!                otherwise ────────► Untrusted with the hazard's reason
//!    ─► Container (LVM PV): inner volumes checked (inside, disjoint, bounded count and depth)
//!                ─► its own free map, minus every inner volume's extents, into the disk's map
//!                ─► each inner volume: extents mapped through the container's segments to
//!                   disk segments ─► examined like any volume, one level deeper
//!                   (a container deeper than MAX_NESTING is Untrusted)
//! ```
//!
//! What is never in [`DiskAnalysis::free`]: bytes outside every volume (gaps between
//! partitions, the extended container's own sectors), the partition tables (MBR, EBRs, GPT
//! headers and entry arrays, the backup at the disk's end), volumes whose file system is
//! unrecognised or untrusted, a container's own metadata and the extents of its untrusted
//! inner volumes, and everything on a disk whose table is unknown.

mod walk;

use std::ops::Range;

use crate::block::BlockDevice;
use crate::error::Result;
use crate::fs::{FreeMap, FsAnalyzer, FsUsage, Hazard, coalesce};
use crate::partition::{Layout, Partition, read_layout};

/// How deep containers are opened: a partition is at depth 0, a volume inside a container on
/// it at depth 1, and so on. A container found at this depth or deeper (an LVM physical
/// volume inside a logical volume inside a physical volume ...) is untrusted, not opened.
pub const MAX_NESTING: u32 = 3;

/// Most volumes one analysis examines, partitions and inner volumes together; a container
/// whose inner volumes would exceed it is untrusted.
pub const MAX_VOLUMES: usize = 4096;

/// What was learnt about one volume. Non-exhaustive: states may be added, so a match needs an
/// arm for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VolumeState {
    /// A file system whose free-space map is trusted; its free ranges (relative to the volume,
    /// clamped to it) are part of [`DiskAnalysis::free`].
    Trusted(FsUsage),
    /// A file system that must not be trusted; only content-based reclaim applies here.
    Untrusted {
        /// Analyser id.
        fs: &'static str,
        /// Why, for the user.
        reason: String,
    },
    /// No analyser recognised a file system.
    Unrecognised,
    /// Not offered to the analysers: the partition's type says it holds no file system of its
    /// own ([`crate::partition::PartitionKind::not_a_volume`]).
    Skipped {
        /// Why, for the user.
        reason: &'static str,
    },
}

/// One volume of the disk and what its file system said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeReport {
    /// The partition, or `None` for a disk without a partition table or a volume inside a
    /// container.
    pub partition: Option<Partition>,
    /// The disk bytes the volume spans: its partition's range; for a volume inside a
    /// container, from its lowest to its highest disk byte (see `extents`).
    pub range: Range<u64>,
    /// The disk bytes of the volume in volume order: one range for a partition or the whole
    /// disk; an inner volume's extents mapped to the disk (empty if unknown).
    pub extents: Vec<Range<u64>>,
    /// Where the volume lies if it is inside a container.
    pub inside: Option<Inside>,
    /// The outcome.
    pub state: VolumeState,
    /// The hazard the analyser named, if any, and what was done about it.
    pub guard: Option<Guard>,
}

/// A volume inside a container (an LVM logical volume inside a physical volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside {
    /// The index in [`DiskAnalysis::volumes`] of the container's own report.
    pub container: usize,
    /// The name the container gives the volume ("vg0/root").
    pub name: String,
    /// The volume's name in messages: "lvm2 volume vg0/root in partition 2".
    pub title: String,
}

/// What became of a volume's [`Hazard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The hazard's id ([`Hazard::id`]).
    pub hazard: &'static str,
    /// The hazard's reason ([`Hazard::reason`]).
    pub reason: String,
    /// How the volume's free space was cut down because of it.
    pub outcome: GuardOutcome,
}

/// How a hazard shaped a volume's free space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardOutcome {
    /// Accepted by the caller: all the free space is used and the hazard's data may be lost.
    Accepted,
    /// The bytes the hazard needs are kept; the rest of the free space is used.
    Kept,
    /// Not accepted and the bytes to keep are unknown: the volume is
    /// [`VolumeState::Untrusted`] with the hazard's reason.
    Refused,
}

/// What the caller of [`analyze_disk_with`] allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisOptions {
    /// Ids of [`Hazard`]s whose loss the user accepted (e.g. from a command-line option).
    pub accepted_hazards: Vec<String>,
}

impl AnalysisOptions {
    /// These options, also accepting the hazard `id`.
    #[must_use]
    pub fn accepting(mut self, id: &str) -> AnalysisOptions {
        self.accepted_hazards.push(id.to_owned());
        self
    }

    /// Whether the hazard `id` was accepted.
    pub fn accepts(&self, id: &str) -> bool {
        self.accepted_hazards.iter().any(|h| h == id)
    }
}

impl VolumeReport {
    /// "partition 2", "the whole disk" or "lvm2 volume vg0/root in partition 2", for
    /// messages.
    pub fn name(&self) -> String {
        match (&self.inside, &self.partition) {
            (Some(i), _) => i.title.clone(),
            (None, Some(p)) => format!("partition {}", p.index),
            (None, None) => "the whole disk".to_string(),
        }
    }

    /// The file system's id, if one was recognised.
    pub fn fs(&self) -> Option<&'static str> {
        match &self.state {
            VolumeState::Trusted(u) => Some(u.fs),
            VolumeState::Untrusted { fs, .. } => Some(fs),
            VolumeState::Unrecognised | VolumeState::Skipped { .. } => None,
        }
    }

    /// Free bytes the volume contributes to [`DiskAnalysis::free`].
    pub fn free_bytes(&self) -> u64 {
        match &self.state {
            VolumeState::Trusted(u) => u.free_bytes(),
            _ => 0,
        }
    }
}

/// The result of [`analyze_disk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAnalysis {
    /// How the disk is partitioned.
    pub layout: Layout,
    /// Every volume examined, in disk order.
    pub volumes: Vec<VolumeReport>,
    /// Disk bytes that trusted file systems do not use, each inside a volume and outside the
    /// partition tables (at the map's unit: see [`FreeMap`]).
    pub free: FreeMap,
}

impl DiskAnalysis {
    /// Total bytes in [`DiskAnalysis::free`].
    pub fn free_bytes(&self) -> u64 {
        self.free.free_bytes()
    }

    /// True if at least one volume has a trusted file system.
    pub fn any_trusted(&self) -> bool {
        self.volumes
            .iter()
            .any(|v| matches!(v.state, VolumeState::Trusted(_)))
    }
}

/// Finds the partitions of `disk`, runs `analyzers` on each volume (and on the volumes inside
/// containers) and collects the free space of trusted file systems in disk coordinates. Reads only. `Err` only for I/O failures of the
/// disk; damaged tables and file systems are reported in the result, never as errors.
///
/// Accepts no [`Hazard`]: the safe default, the same as [`analyze_disk_with`] and
/// `AnalysisOptions::default()`.
pub fn analyze_disk(
    disk: &dyn BlockDevice,
    analyzers: &[&'static dyn FsAnalyzer],
) -> Result<DiskAnalysis> {
    analyze_disk_with(disk, analyzers, &AnalysisOptions::default())
}

/// [`analyze_disk`], where a volume whose analyser names a [`Hazard`] listed in
/// `options.accepted_hazards` gives all its free space (the hazard's data may then be lost);
/// any other hazard keeps its bytes, or leaves the volume untrusted when they are unknown.
pub fn analyze_disk_with(
    disk: &dyn BlockDevice,
    analyzers: &[&'static dyn FsAnalyzer],
    options: &AnalysisOptions,
) -> Result<DiskAnalysis> {
    let layout = read_layout(disk)?;
    let (partitions, metadata): (Vec<Option<Partition>>, Vec<Range<u64>>) = match &layout {
        Layout::Unpartitioned if disk.size() > 0 => (vec![None], Vec::new()),
        Layout::Unpartitioned | Layout::Unknown { .. } => (Vec::new(), Vec::new()),
        Layout::Table(t) => (
            t.partitions.iter().cloned().map(Some).collect(),
            t.metadata.clone(),
        ),
    };
    let mut walk = walk::Walk::new(disk, analyzers, options);
    for partition in partitions {
        walk.partition(partition)?;
    }
    let (volumes, mut free) = walk.finish();
    for m in metadata {
        free.mark_used(m);
    }
    Ok(DiskAnalysis {
        layout,
        volumes,
        free,
    })
}

/// `usage` with its free map cut to `0..len`: an analyser's map longer than its volume must
/// not reach into the next one.
fn clamped(mut usage: FsUsage, len: u64) -> FsUsage {
    if usage.free.len() != len {
        let unit = usage.free.unit();
        usage.free = FreeMap::from_ranges(len, unit, usage.free.runs());
    }
    usage
}

/// The state of a volume whose analyser named `hazard`; see [`analyze_disk_with`].
fn guarded(
    mut usage: FsUsage,
    hazard: Hazard,
    options: &AnalysisOptions,
) -> (VolumeState, Option<Guard>) {
    let Hazard { id, reason, keep } = hazard;
    let guard = |outcome| {
        Some(Guard {
            hazard: id,
            reason: reason.clone(),
            outcome,
        })
    };
    if options.accepts(id) {
        return (VolumeState::Trusted(usage), guard(GuardOutcome::Accepted));
    }
    match keep {
        Some(mut keep) => {
            coalesce(&mut keep);
            for k in keep {
                usage.free.mark_used(k);
            }
            (VolumeState::Trusted(usage), guard(GuardOutcome::Kept))
        }
        None => {
            let g = guard(GuardOutcome::Refused);
            (
                VolumeState::Untrusted {
                    fs: usage.fs,
                    reason,
                },
                g,
            )
        }
    }
}

#[cfg(test)]
mod tests;
