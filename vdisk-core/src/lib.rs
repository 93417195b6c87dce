//! # vdisk-core
//!
//! The format-independent half of vdisk: the traits a disk-image format implements, the host
//! file abstraction, and the engine that compacts any image whose format offers the
//! compaction primitives.
//!
//! ```text
//!   CLI / library user ─► compact_path(path, &Toolkit, &CompactRequest, ...)  (the entry point)
//!        │  Registry::open_path(path)      (locks the file, detects the format)
//!        ▼
//!   FormatDriver (vdisk-vhd, vdisk-vhdx, ...; an open list, no enum here)
//!        │  open / create / check        a differencing image's parent: parent::open_backing
//!        ▼                                  (policy, then detected with the same Registry)
//!   Box<dyn DiskImage> ── BlockDevice: the guest view (read_at/write_at)
//!        │               block_state(i): Allocated{host} | Zero | Unallocated | Trimmed | Pinned
//!        │               guest_extents(range): Data | Zero | Backing | Discarded | Opaque
//!        │               host_space(): every host byte BlockData | Metadata | Trailer | Free
//!        │  as_compactable() / as_compactable_ref() (planning: read-only, asked once)
//!        ▼
//!   Compactable: host_layout / deallocate / relocate / move_metadata / truncate
//!                (each step crash-safe: copy, sync, repoint, sync)
//!        ▲
//!        │  GenericCompactor::plan (reads only; rayon zero scan) then ::apply
//!        │
//!   HostFile: positional read_at/write_at/len/set_len/sync/punch_hole/copy_within
//!             StdFile (locked real file) · MemFile · testing::FaultyFile (crash injection)
//! ```
//!
//! The entry point is [`compact_path`]: give it the program's formats and file systems (a
//! [`Toolkit`]), a [`CompactRequest`] and a path; it opens, analyses, guards the differencing
//! images that read through the file ([`ChildIndex`]), plans, applies and reports. Use it
//! rather than the steps below: they neither analyse file systems nor guard children.
//!
//! Lifecycle of a compaction: open writable (exclusive lock) → [`GenericCompactor::plan`]
//! (allocation map, trimmed blocks, file-system free ranges, parallel zero scan, move plan) →
//! optionally stop for a dry run → [`GenericCompactor::apply`] (deallocate, relocate, truncate).
//! File-system knowledge comes from [`analyze_disk`]: [`partition::read_layout`] finds the
//! volumes (MBR with logical partitions, GPT, or none), each registered [`FsAnalyzer`] looks at
//! each volume through a [`VolumeView`] (one disk range, or a list of segments for a volume
//! inside a container such as an LVM physical volume, which its analyser lists as
//! [`InnerVolume`]s), and the trusted free ranges, mapped to disk offsets, become
//! [`CompactOptions::fs_free`].
//!
//! The invariant: every virtual byte reads the same afterwards, except inside ranges the guest
//! file system reported free (which may read as zeros).

mod analysis;
mod block;
mod check;
mod children;
pub mod compact;
mod error;
mod extent;
mod format;
pub mod fs;
mod host_file;
mod image;
mod mem_file;
pub mod parent;
pub mod partition;
mod progress;
mod space;
mod sys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod toolkit;
mod units;
mod volume;
mod zero;

pub use analysis::{
    AnalysisOptions, DiskAnalysis, Guard, GuardOutcome, Inside, MAX_NESTING, MAX_VOLUMES,
    VolumeReport, VolumeState, analyze_disk, analyze_disk_with,
};
pub use block::{BlockDevice, check_range};
pub use check::{CheckReport, Problem, Severity, first_error};
pub use children::{ChildIndex, Children, OwnCompaction, Undetermined};
pub use compact::{
    CompactOptions, CompactPlan, CompactReport, Compactor, GenericCompactor, Mode, Reason,
};
pub use error::{Error, ErrorKind, Result};
pub use extent::{GuestExtent, extents_from_block_states, push_extent};
pub use format::{Confidence, CreateSpec, FormatDriver, OpenOptions, ParentReference, Registry};
pub use fs::{ContainerUsage, FsAnalyzer, FsUsage, FsVerdict, Hazard, InnerVolume};
pub use host_file::{
    Access, HostFile, StdFile, allocated_size, copy_through_buffer, has_sparse_attribute,
    survive_file_size_limit,
};
pub use image::{
    BlockState, Compactable, DiskImage, FreeAs, HostLayout, ImageInfo, ImageKind, Relocation,
    image_info,
};
pub use mem_file::MemFile;
pub use parent::{
    Backing, ChainContext, FoundParent, Identity, Locator, LocatorKind, ParentPolicy, open_backing,
};
pub use progress::{CancelToken, NoProgress, Phase, Progress};
pub use space::{HostSpaceMap, HostUse};
pub use toolkit::{
    CompactRequest, Failure, Outcome, Toolkit, compact_image, compact_path, nothing_to_reclaim,
    volume_notes,
};
pub use units::{
    BlockIndex, BlockSpan, HostOffset, MIB, SECTOR, VirtOffset, align_up, block_spans,
};
pub use volume::{MAX_SEGMENTS, Segment, VolumeView};
pub use zero::is_zero;
