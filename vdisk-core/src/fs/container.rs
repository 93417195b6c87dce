//! What the analyser of a container (an LVM physical volume) says about the volumes inside it.

use std::ops::Range;

use super::FsUsage;

/// The answer of a container's analyser: see [`super::FsVerdict::Container`].
///
/// The promises, which the caller checks (a container breaking one is reported untrusted and
/// nothing in it is freed): every extent of every inner volume is non-empty and inside the
/// container; no two extents (of the same volume or of two) overlap; [`FsUsage::free`] holds
/// only container bytes that nothing reads back (unused extents), never the container's own
/// metadata. Inner volumes' extents are marked used in `usage.free` by the caller in any
/// case, so an overlap between the two costs free space, never data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The container's own usage: its id (`"lvm2"`), its allocation unit (the LVM extent), the
    /// container bytes that are free, and facts for reports (volume group name, ...).
    pub usage: FsUsage,
    /// The volumes inside, in the order to report them.
    pub volumes: Vec<InnerVolume>,
}

/// One volume inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerVolume {
    /// The name the container gives it, for reports (`"vg0/root"`).
    pub name: String,
    /// The container bytes holding the volume, in volume order: the volume's byte 0 is the
    /// first extent's first byte, its next bytes the rest of that extent, then the second
    /// extent, and so on. May be empty for an untrusted volume whose layout is unknown.
    pub extents: Vec<Range<u64>>,
    /// `Some(reason)` when the container cannot vouch for the volume (an LVM thin, snapshot,
    /// RAID or cache volume, or one partly on another disk): it is reported untrusted with
    /// this reason, in words a user understands, and not examined; its extents stay used.
    pub untrusted: Option<String>,
}
