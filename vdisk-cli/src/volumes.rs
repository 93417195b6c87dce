//! What the file-system analysis found, in the words `compact` and `info` print: one note per
//! volume whose free space is not used, and the JSON `volumes` array.

use serde::Serialize;
use vdisk_core::partition::Layout;
use vdisk_core::{DiskAnalysis, Guard, GuardOutcome, Mode, VolumeReport, VolumeState};

/// The notes a compaction in `mode` prints about `analysis`: the table's own notes, an unknown
/// table, and each volume that is untrusted or unrecognised, with what happens there instead.
pub fn notes(analysis: &DiskAnalysis, mode: Mode) -> Vec<String> {
    let instead = if mode.scans_for_zeros() {
        "zero scan only"
    } else {
        "its free space is not reclaimed (quick mode does not scan for zero blocks)"
    };
    let mut notes = Vec::new();
    match &analysis.layout {
        Layout::Unknown { reason } => notes.push(format!(
            "partition table not understood ({reason}); file-system free space is not used on this disk"
        )),
        Layout::Table(t) => notes.extend(t.notes.iter().cloned()),
        Layout::Unpartitioned => {}
    }
    for v in &analysis.volumes {
        if let Some(g) = &v.guard {
            notes.extend(guard_note(v, g));
        }
        match &v.state {
            VolumeState::Trusted(_) => {}
            VolumeState::Untrusted { fs, reason } => {
                let anyway = match &v.guard {
                    // The CLI names each hazard's option `--discard-<hazard>`.
                    Some(g) => format!(" (--discard-{} reclaims it anyway)", g.hazard),
                    None => String::new(),
                };
                notes.push(format!("{} ({fs}): {reason}; {instead}{anyway}", v.name()));
            }
            VolumeState::Unrecognised => {
                let what = match &v.partition {
                    Some(p) => {
                        format!("{}: no known file system ({})", v.name(), p.kind.describe())
                    }
                    None => "no partition table and no known file system on the disk".to_string(),
                };
                notes.push(format!("{what}; {instead}"));
            }
        }
    }
    if mode == Mode::Quick && !analysis.any_trusted() {
        notes.push(
            "quick: no trusted file system on this disk, so only blocks the image already marks \
             trimmed are reclaimed; use --mode full to also reclaim all-zero blocks"
                .to_string(),
        );
    }
    notes
}

/// What a compaction says about a volume's hazard beyond its untrusted note.
fn guard_note(v: &VolumeReport, g: &Guard) -> Option<String> {
    let fs = v.fs().unwrap_or("?");
    match g.outcome {
        GuardOutcome::Accepted => Some(format!(
            "{} ({fs}): {}; --discard-{}: reclaimed anyway, so that data is discarded",
            v.name(),
            g.reason,
            g.hazard
        )),
        GuardOutcome::Kept => Some(format!(
            "{} ({fs}): {}: the space they need is kept",
            v.name(),
            g.reason
        )),
        GuardOutcome::Refused => None,
    }
}

/// One volume in `--json` output.
#[derive(Debug, Serialize)]
pub struct VolumeJson {
    /// Partition number, `null` for a disk without a partition table.
    partition: Option<u32>,
    /// First byte on the virtual disk.
    start: u64,
    /// Length in bytes.
    size: u64,
    /// The table's description of the partition ("gpt Microsoft basic data").
    partition_type: Option<String>,
    /// Analyser id, `null` if none recognised the volume.
    fs: Option<&'static str>,
    /// "trusted", "untrusted" or "unrecognised".
    state: &'static str,
    /// Free bytes of a trusted file system.
    free_bytes: u64,
    /// Cluster size of a trusted file system.
    cluster_size: Option<u64>,
    /// Why an untrusted file system is not used.
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
        };
        VolumeJson {
            partition: v.partition.as_ref().map(|p| p.index),
            start: v.range.start,
            size: v.range.end - v.range.start,
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
            human_size(v.range.end - v.range.start),
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
        }
        lines.push(line);
    }
    lines
}
