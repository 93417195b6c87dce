//! What the file-system analysis found, in the words `compact` and `info` print: the JSON
//! `volumes` array and `info`'s lines (the notes about unused volumes come from core's
//! `volume_notes`).

use serde::Serialize;
use vdisk_core::partition::Layout;
use vdisk_core::{DiskAnalysis, VolumeReport, VolumeState};

/// One volume in `--json` output.
#[derive(Debug, Serialize)]
pub struct VolumeJson {
    /// "partition 2", "the whole disk" or "lvm2 volume vg0/root in partition 2".
    name: String,
    /// Partition number, `null` for a disk without a partition table or an inner volume.
    partition: Option<u32>,
    /// For a volume inside a container: the index of the container in `volumes`.
    container: Option<usize>,
    /// The disk ranges holding the volume, in volume order (`[start, end)` byte pairs).
    extents: Vec<[u64; 2]>,
    /// First byte on the virtual disk.
    start: u64,
    /// Length in bytes (of all its extents).
    size: u64,
    /// The table's description of the partition ("gpt Microsoft basic data").
    partition_type: Option<String>,
    /// Analyser id, `null` if none recognised the volume.
    fs: Option<&'static str>,
    /// "trusted", "untrusted", "unrecognised", "skipped" or "other" (a state this version does
    /// not name).
    state: &'static str,
    /// Free bytes of a trusted file system.
    free_bytes: u64,
    /// Cluster size of a trusted file system.
    cluster_size: Option<u64>,
    /// Why an untrusted file system or a skipped partition is not used.
    reason: Option<String>,
    /// The hazard the analyser named ("shadow-copies"), if any.
    hazard: Option<&'static str>,
}

impl VolumeJson {
    /// The object for `v`.
    pub fn new(v: &VolumeReport) -> VolumeJson {
        let (state, reason, cluster_size) = match &v.state {
            VolumeState::Trusted(u) => ("trusted", None, Some(u.cluster_size)),
            VolumeState::Untrusted { reason, .. } => ("untrusted", Some(reason.clone()), None),
            VolumeState::Unrecognised => ("unrecognised", None, None),
            VolumeState::Skipped { reason } => ("skipped", Some((*reason).to_string()), None),
            // A state this version does not name: its free space is not used.
            _ => ("other", None, None),
        };
        VolumeJson {
            name: v.name(),
            partition: v.partition.as_ref().map(|p| p.index),
            container: v.inside.as_ref().map(|i| i.container),
            extents: v.extents.iter().map(|e| [e.start, e.end]).collect(),
            start: v.range.start,
            size: v.extents.iter().map(|e| e.end - e.start).sum(),
            partition_type: v.partition.as_ref().map(|p| p.kind.describe()),
            fs: v.fs(),
            state,
            free_bytes: v.free_bytes(),
            cluster_size,
            reason,
            hazard: v.guard.as_ref().map(|g| g.hazard),
        }
    }
}

/// One human line per volume, for `info` ("partition 1: 1.0 MiB + 8.0 MiB, gpt ..., ntfs,
/// 6.2 MiB free").
pub fn human_lines(analysis: &DiskAnalysis) -> Vec<String> {
    use crate::report::human_size;
    let mut lines = Vec::new();
    if let Layout::Unknown { reason } = &analysis.layout {
        lines.push(format!("partition table not understood: {reason}"));
    }
    for v in &analysis.volumes {
        let mut line = format!(
            "{}: {} at offset {}",
            v.name(),
            human_size(v.extents.iter().map(|e| e.end - e.start).sum()),
            v.range.start
        );
        if let Some(p) = &v.partition {
            line.push_str(&format!(", {}", p.kind.describe()));
        }
        match &v.state {
            VolumeState::Trusted(u) => line.push_str(&format!(
                ", {} ({} clusters), {} free",
                u.fs,
                human_size(u.cluster_size),
                human_size(u.free_bytes())
            )),
            VolumeState::Untrusted { fs, reason } => {
                line.push_str(&format!(", {fs}, not trusted: {reason}"));
            }
            VolumeState::Unrecognised => line.push_str(", no known file system"),
            VolumeState::Skipped { reason } => line.push_str(&format!(", not examined: {reason}")),
            _ => line.push_str(", free space not used"),
        }
        lines.push(line);
    }
    lines
}
