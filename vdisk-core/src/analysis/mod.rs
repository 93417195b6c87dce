//! Whole-disk analysis: partition layout, then each volume's file system, then the disk bytes
//! the file systems leave unused.
//!
//! ```text
//!  read_layout(disk) ─► Unpartitioned ─► one volume: the whole disk
//!                    ├► Table ─────────► one volume per partition
//!                    └► Unknown ───────► no volume: nothing is free
//!  each volume ─► analysers in order (first that is not NotMine wins) through a VolumeView
//!              ─► Analysed: free ranges clamped to the volume, shifted to disk offsets
//! ```
//!
//! What is never in [`DiskAnalysis::free`]: bytes outside every volume (gaps between
//! partitions, the extended container's own sectors), the partition tables (MBR, EBRs, GPT
//! headers and entry arrays, the backup at the disk's end), volumes whose file system is
//! unrecognised or untrusted, and everything on a disk whose table is unknown.

use std::ops::Range;

use crate::block::BlockDevice;
use crate::error::{ErrorKind, Result};
use crate::fs::{FsAnalyzer, FsUsage, FsVerdict, coalesce};
use crate::partition::{Layout, Partition, read_layout};
use crate::volume::VolumeView;

/// What was learnt about one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// One volume of the disk and what its file system said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeReport {
    /// The partition, or `None` for a disk without a partition table.
    pub partition: Option<Partition>,
    /// The disk bytes of the volume.
    pub range: Range<u64>,
    /// The outcome.
    pub state: VolumeState,
}

impl VolumeReport {
    /// "partition 2" or "the whole disk", for messages.
    pub fn name(&self) -> String {
        match &self.partition {
            Some(p) => format!("partition {}", p.index),
            None => "the whole disk".to_string(),
        }
    }

    /// The file system's id, if one was recognised.
    pub fn fs(&self) -> Option<&'static str> {
        match &self.state {
            VolumeState::Trusted(u) => Some(u.fs),
            VolumeState::Untrusted { fs, .. } => Some(fs),
            VolumeState::Unrecognised => None,
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
    /// Disk bytes that trusted file systems do not use: sorted, disjoint, coalesced, each
    /// inside a volume and outside the partition tables.
    pub free: Vec<Range<u64>>,
}

impl DiskAnalysis {
    /// Total bytes in [`DiskAnalysis::free`].
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }

    /// True if at least one volume has a trusted file system.
    pub fn any_trusted(&self) -> bool {
        self.volumes
            .iter()
            .any(|v| matches!(v.state, VolumeState::Trusted(_)))
    }
}

/// Finds the partitions of `disk`, runs `analyzers` on each volume and collects the free space
/// of trusted file systems in disk coordinates. Reads only. `Err` only for I/O failures of the
/// disk; damaged tables and file systems are reported in the result, never as errors.
pub fn analyze_disk(
    disk: &dyn BlockDevice,
    analyzers: &[&'static dyn FsAnalyzer],
) -> Result<DiskAnalysis> {
    let layout = read_layout(disk)?;
    type Volumes = Vec<(Option<Partition>, Range<u64>)>;
    let (volumes, metadata): (Volumes, Vec<Range<u64>>) = match &layout {
        Layout::Unpartitioned if disk.size() > 0 => (vec![(None, 0..disk.size())], Vec::new()),
        Layout::Unpartitioned | Layout::Unknown { .. } => (Vec::new(), Vec::new()),
        Layout::Table(t) => (
            t.partitions
                .iter()
                .map(|p| (Some(p.clone()), p.range()))
                .collect(),
            t.metadata.clone(),
        ),
    };
    let mut reports = Vec::with_capacity(volumes.len());
    let mut free = Vec::new();
    for (partition, range) in volumes {
        let view = VolumeView::new(disk, range.clone())?;
        let state = examine(&view, analyzers)?;
        if let VolumeState::Trusted(usage) = &state {
            free.extend(
                usage
                    .free
                    .iter()
                    .map(|r| r.start + range.start..r.end + range.start),
            );
        }
        reports.push(VolumeReport {
            partition,
            range,
            state,
        });
    }
    coalesce(&mut free);
    Ok(DiskAnalysis {
        layout,
        volumes: reports,
        free: subtract(&free, &metadata),
    })
}

/// Runs the analysers on one volume; the first that recognises it decides. Free ranges are
/// clamped to the volume and coalesced, whatever the analyser returned.
fn examine(view: &VolumeView<'_>, analyzers: &[&'static dyn FsAnalyzer]) -> Result<VolumeState> {
    for a in analyzers {
        let verdict = match a.analyze(view) {
            Ok(v) => v,
            // A read outside the volume is the analyser following damaged metadata.
            Err(e) if e.kind() == ErrorKind::OutOfRange => FsVerdict::Untrusted {
                fs: a.id(),
                reason: format!("file system metadata points outside the volume ({e})"),
            },
            Err(e) => return Err(e),
        };
        match verdict {
            FsVerdict::NotMine => continue,
            FsVerdict::Untrusted { fs, reason } => {
                return Ok(VolumeState::Untrusted { fs, reason });
            }
            FsVerdict::Analysed(mut usage) => {
                let len = view.size();
                usage.free = usage
                    .free
                    .iter()
                    .map(|r| r.start.min(len)..r.end.min(len))
                    .collect();
                coalesce(&mut usage.free);
                return Ok(VolumeState::Trusted(usage));
            }
        }
    }
    Ok(VolumeState::Unrecognised)
}

/// `ranges` minus `holes` (both sorted and disjoint).
fn subtract(ranges: &[Range<u64>], holes: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let mut start = r.start;
        let first = holes.partition_point(|h| h.end <= r.start);
        for h in holes[first..].iter().take_while(|h| h.start < r.end) {
            if h.start > start {
                out.push(start..h.start);
            }
            start = start.max(h.end);
        }
        if start < r.end {
            out.push(start..r.end);
        }
    }
    out
}

#[cfg(test)]
mod tests;
