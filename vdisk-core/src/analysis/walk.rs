//! The walk over a disk's volumes: each partition, then depth first the volumes inside the
//! containers found, every free range mapped to disk offsets segment by segment.

use std::ops::Range;

use super::{
    AnalysisOptions, Guard, Inside, MAX_NESTING, MAX_VOLUMES, VolumeReport, VolumeState, clamped,
    guarded,
};
use crate::block::BlockDevice;
use crate::error::{ErrorKind, Result};
use crate::fs::{ContainerUsage, FreeMap, FsAnalyzer, FsVerdict, InnerVolume};
use crate::partition::Partition;
use crate::volume::VolumeView;

/// Most extents the inner volumes of one container may have together.
const MAX_CONTAINER_EXTENTS: usize = 1 << 18;

/// The reports and the disk's free map, as the walk fills them.
pub(super) struct Walk<'a> {
    disk: &'a dyn BlockDevice,
    analyzers: &'a [&'static dyn FsAnalyzer],
    options: &'a AnalysisOptions,
    reports: Vec<VolumeReport>,
    free: FreeMap,
}

/// What the analysers said about one volume.
enum Examined {
    /// A file system (or none): its state.
    Volume(VolumeState, Option<Guard>),
    /// A container: its usage and inner volumes, not yet checked.
    Container(ContainerUsage),
}

/// Where a volume is: its partition, or its place in a container.
struct Place {
    partition: Option<Partition>,
    inside: Option<Inside>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        disk: &'a dyn BlockDevice,
        analyzers: &'a [&'static dyn FsAnalyzer],
        options: &'a AnalysisOptions,
    ) -> Walk<'a> {
        Walk {
            disk,
            analyzers,
            options,
            reports: Vec::new(),
            free: FreeMap::new(disk.size(), 0),
        }
    }

    /// The reports in the order examined (a container before its volumes) and the free map.
    pub(super) fn finish(self) -> (Vec<VolumeReport>, FreeMap) {
        (self.reports, self.free)
    }

    /// Examines a partition, or the whole disk for `None`, and everything inside it.
    pub(super) fn partition(&mut self, partition: Option<Partition>) -> Result<()> {
        let range = partition
            .as_ref()
            .map_or(0..self.disk.size(), Partition::range);
        if let Some(reason) = partition.as_ref().and_then(|p| p.kind.not_a_volume()) {
            self.reports.push(VolumeReport {
                partition,
                range: range.clone(),
                extents: vec![range],
                inside: None,
                state: VolumeState::Skipped { reason },
                guard: None,
            });
            return Ok(());
        }
        let view = VolumeView::new(self.disk, range)?;
        let place = Place {
            partition,
            inside: None,
        };
        self.volume(&view, place, 0)
    }

    /// Examines the volume seen through `view`, `depth` containers deep, and what is inside.
    fn volume(&mut self, view: &VolumeView<'_>, place: Place, depth: u32) -> Result<()> {
        let extents: Vec<Range<u64>> = view.segments().iter().map(|s| s.disk.clone()).collect();
        let report = |state, guard| VolumeReport {
            partition: place.partition,
            range: span(&extents),
            extents: extents.clone(),
            inside: place.inside,
            state,
            guard,
        };
        match self.examine(view)? {
            Examined::Volume(state, guard) => {
                if let VolumeState::Trusted(u) = &state {
                    self.add_free(view, &u.free);
                }
                self.reports.push(report(state, guard));
                Ok(())
            }
            Examined::Container(ContainerUsage { usage, volumes }) => {
                let fs = usage.fs;
                if let Err(reason) = self.check_container(&volumes, view.size(), depth) {
                    let state = VolumeState::Untrusted { fs, reason };
                    self.reports.push(report(state, None));
                    return Ok(());
                }
                let mut usage = clamped(usage, view.size());
                // The container's free bytes never include an inner volume's.
                for e in volumes.iter().flat_map(|v| &v.extents) {
                    usage.free.mark_used(e.clone());
                }
                self.add_free(view, &usage.free);
                let container = self.reports.len();
                let own = report(VolumeState::Trusted(usage), None);
                let outer = own.name();
                self.reports.push(own);
                for v in volumes {
                    let inside = Inside {
                        container,
                        title: format!("{fs} volume {} in {outer}", v.name),
                        name: v.name.clone(),
                    };
                    self.inner(view, fs, v, inside, depth + 1)?;
                }
                Ok(())
            }
        }
    }

    /// Examines the inner volume `v` of the container seen through `container` (whose analyser
    /// is `fs`): its extents mapped to disk segments.
    fn inner(
        &mut self,
        container: &VolumeView<'_>,
        fs: &'static str,
        v: InnerVolume,
        inside: Inside,
        depth: u32,
    ) -> Result<()> {
        let mut extents: Vec<Range<u64>> = Vec::new();
        for d in v.extents.iter().flat_map(|e| container.to_disk(e.clone())) {
            match extents.last_mut() {
                Some(last) if last.end == d.start => last.end = d.end,
                _ => extents.push(d),
            }
        }
        let untrusted = |reason| VolumeReport {
            partition: None,
            range: span(&extents),
            extents: extents.clone(),
            inside: Some(inside.clone()),
            state: VolumeState::Untrusted { fs, reason },
            guard: None,
        };
        if let Some(reason) = v.untrusted {
            self.reports.push(untrusted(reason));
            return Ok(());
        }
        match VolumeView::segmented(self.disk, &extents) {
            Ok(view) => {
                let place = Place {
                    partition: None,
                    inside: Some(inside),
                };
                self.volume(&view, place, depth)
            }
            // Checked in `check_container`: only a volume of too many pieces gets here.
            Err(e) => {
                self.reports
                    .push(untrusted(format!("its extents cannot be read ({e})")));
                Ok(())
            }
        }
    }

    /// Why the inner volumes of a container `len` bytes long, `depth` containers deep, must
    /// not be used, if they must not: too deep, too many, outside the container, or
    /// overlapping (free space of one would then destroy data of the other).
    fn check_container(
        &self,
        volumes: &[InnerVolume],
        len: u64,
        depth: u32,
    ) -> std::result::Result<(), String> {
        if depth >= MAX_NESTING {
            return Err(format!(
                "it lies inside {depth} other volumes; volumes nested this deep are not examined"
            ));
        }
        if self.reports.len() + 1 + volumes.len() > MAX_VOLUMES {
            return Err(format!(
                "it holds {} volumes, more than the {MAX_VOLUMES} examined on one disk",
                volumes.len()
            ));
        }
        let count: usize = volumes.iter().map(|v| v.extents.len()).sum();
        if count > MAX_CONTAINER_EXTENTS {
            return Err(format!(
                "its volumes have {count} extents, more than the {MAX_CONTAINER_EXTENTS} examined"
            ));
        }
        let mut all: Vec<(&Range<u64>, &str)> = Vec::with_capacity(count);
        for v in volumes {
            if v.untrusted.is_none() && v.extents.is_empty() {
                return Err(format!("volume {} has no extents", v.name));
            }
            for e in &v.extents {
                if e.start >= e.end || e.end > len {
                    return Err(format!(
                        "volume {} lies outside it (bytes {:#x}..{:#x} of {len})",
                        v.name, e.start, e.end
                    ));
                }
                all.push((e, &v.name));
            }
        }
        all.sort_unstable_by_key(|(e, _)| e.start);
        if let Some(w) = all.windows(2).find(|w| w[1].0.start < w[0].0.end) {
            return Err(format!(
                "volumes {} and {} overlap at byte {:#x}",
                w[0].1, w[1].1, w[1].0.start
            ));
        }
        Ok(())
    }

    /// Runs every analyser on one volume. The one that recognises it decides; if more than one
    /// does (one file system written over another without wiping it: both signatures read as
    /// valid), nothing says which is live, and the stale one's free map would free the live
    /// one's data, so the volume is untrusted (blkid refuses such volumes the same way). Free
    /// ranges are clamped to the volume, whatever the analyser returned.
    fn examine(&self, view: &VolumeView<'_>) -> Result<Examined> {
        let mut decided: Option<(&'static str, Examined)> = None;
        let mut others: Vec<&'static str> = Vec::new();
        for a in self.analyzers {
            let verdict = match a.analyze(view) {
                Ok(v) => v,
                // A read outside the volume is the analyser following damaged metadata.
                Err(e) if e.kind() == ErrorKind::OutOfRange => FsVerdict::Untrusted {
                    fs: a.id(),
                    reason: format!("file system metadata points outside the volume ({e})"),
                },
                Err(e) => return Err(e),
            };
            let examined = match verdict {
                FsVerdict::NotMine => continue,
                FsVerdict::Untrusted { fs, reason } => {
                    Examined::Volume(VolumeState::Untrusted { fs, reason }, None)
                }
                FsVerdict::Analysed(usage) => {
                    Examined::Volume(VolumeState::Trusted(clamped(usage, view.size())), None)
                }
                FsVerdict::Guarded { usage, hazard } => {
                    let (state, guard) = guarded(clamped(usage, view.size()), hazard, self.options);
                    Examined::Volume(state, guard)
                }
                FsVerdict::Container(c) => Examined::Container(c),
            };
            if decided.is_none() {
                decided = Some((a.id(), examined));
            } else {
                others.push(a.id());
            }
        }
        Ok(match decided {
            None => Examined::Volume(VolumeState::Unrecognised, None),
            Some((_, examined)) if others.is_empty() => examined,
            Some((first, _)) => {
                let mut all = vec![first];
                all.extend(others);
                Examined::Volume(
                    VolumeState::Untrusted {
                        fs: first,
                        reason: format!(
                            "it reads as {} at once: one was written over another without \
                             wiping it, and nothing tells which is in use (in the guest, \
                             `wipefs` shows the signatures and removes the stale one)",
                            all.join(" and ")
                        ),
                    },
                    None,
                )
            }
        })
    }

    /// Marks free in the disk's map the disk bytes of `free`, a map of the volume `view`.
    fn add_free(&mut self, view: &VolumeView<'_>, free: &FreeMap) {
        for r in free.runs() {
            for d in view.to_disk(r) {
                self.free.mark_free(d);
            }
        }
    }
}

/// From the lowest to the highest byte of `extents` (`0..0` when there is none).
fn span(extents: &[Range<u64>]) -> Range<u64> {
    let start = extents.iter().map(|e| e.start).min().unwrap_or(0);
    let end = extents.iter().map(|e| e.end).max().unwrap_or(0);
    start..end
}
