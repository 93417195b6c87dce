//! An opened disk image: the allocation map every format exposes, and the compaction
//! primitives of formats whose blocks can be freed and moved.

use std::ops::Range;
use std::path::Path;

use crate::block::BlockDevice;
use crate::check::Problem;
use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::units::{BlockIndex, HostOffset, align_up};

/// The broad type of an image, as users know it from Hyper-V. Non-exhaustive: a format may
/// bring a kind these three do not describe, so a match needs an arm for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageKind {
    /// Every virtual byte has a fixed place in the file; nothing to move.
    Fixed,
    /// Blocks are allocated on first write; unallocated blocks read as zeros.
    Dynamic,
    /// Like dynamic, but unallocated blocks read from a parent image.
    Differencing,
}

impl ImageKind {
    /// Lowercase name, as used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Fixed => "fixed",
            ImageKind::Dynamic => "dynamic",
            ImageKind::Differencing => "differencing",
        }
    }
}

/// What backs one allocation unit (block) of the virtual disk. Non-exhaustive: states other
/// formats need (read from a backing image of another format, compressed or shared data that
/// moves only as a whole) may be added, so a match needs an arm for the rest; the engine
/// treats a state it does not know as one it must keep as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockState {
    /// Backed by the image file: the block's host footprint (for VHD the sector bitmap followed
    /// by the data) starts at `host`.
    Allocated {
        /// First byte of the block's footprint in the host file.
        host: HostOffset,
    },
    /// Explicitly zero (VHDX `PAYLOAD_BLOCK_ZERO`): reads zeros, even in a child; no host space.
    Zero,
    /// Not present in this image: reads zeros in a base image, the parent's data in a child.
    Unallocated,
    /// Trimmed by the guest (VHDX `UNMAPPED`/`UNDEFINED`): its content may be discarded. It may
    /// still hold host space at `host`.
    Trimmed {
        /// Host space the block still occupies, if any.
        host: Option<HostOffset>,
    },
}

impl BlockState {
    /// The start of the host space this block occupies, if any.
    pub fn host(self) -> Option<HostOffset> {
        match self {
            BlockState::Allocated { host } => Some(host),
            BlockState::Trimmed { host } => host,
            BlockState::Zero | BlockState::Unallocated => None,
        }
    }
}

/// What a freed block reads afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FreeAs {
    /// Zeros (VHDX `PAYLOAD_BLOCK_ZERO` in a child; unallocated in a base image).
    Zero,
    /// Whatever the parent shows there (unallocated in a child; zeros in a base image).
    Parent,
}

/// Where blocks may live in the host file, as the generic compactor needs to know it.
///
/// Every block of an image has the same footprint: `block_footprint` host bytes starting at
/// the offset [`BlockState::host`] gives, holding everything the block owns (its data and any
/// per-block metadata: a VHD sector bitmap before the data, a trailer after it). The engine
/// moves, punches and frees footprints whole and never splits one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// Bytes before this offset hold metadata; blocks are never placed below it.
    pub data_start: u64,
    /// Host bytes one block occupies (VHD: sector bitmap + block data).
    pub block_footprint: u64,
    /// Where the block's guest bytes lie inside its footprint. `Some(d)`: footprint bytes
    /// `d..d + block_size` hold them, in order, as the guest reads them, so a host-file hole
    /// there reads as zeros (VHD: `d` is the sector bitmap's length; VHDX, VDI: 0; a format
    /// with a per-block trailer: 0). The zero scan then skips holes without reading them.
    /// `None`: the guest's bytes are not stored that way (compressed, encrypted, interleaved
    /// with metadata); the zero scan reads every candidate block whole through the guest view.
    /// The planner refuses a layout whose `d + block_size` passes `block_footprint`.
    pub data_offset: Option<u64>,
    /// Placement alignment of a block's footprint, measured from `data_start`: blocks start
    /// only at `data_start + k * alignment` (VHD: 512 from 512; VHDX: 1 MiB from 1 MiB; a
    /// format whose table holds slot numbers: the footprint, from the first slot).
    pub alignment: u64,
    /// Metadata ranges at or after `data_start` that blocks must not overlap (VHD parent
    /// locator data, VHDX regions and log). Sorted, disjoint.
    pub reserved: Vec<Range<u64>>,
    /// Bytes written after the last block when the file is finished (VHD: the 512-byte footer).
    pub trailer_len: u64,
    /// The end of the block area is rounded up to this before the trailer (VHDX: 1 MiB).
    pub end_alignment: u64,
}

impl HostLayout {
    /// The file length a finished image has when its last block or metadata ends at
    /// `data_end`. `None` on overflow.
    pub fn file_len_for(&self, data_end: u64) -> Option<u64> {
        align_up(data_end, self.end_alignment.max(1))?.checked_add(self.trailer_len)
    }

    /// The end of the metadata: `data_start` or the end of the last reserved range.
    pub fn metadata_end(&self) -> u64 {
        self.reserved
            .iter()
            .map(|r| r.end)
            .fold(self.data_start, u64::max)
    }
}

/// One block move: its footprint goes from `from` to `to` (to < from, never overlapping
/// another live block or metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocation {
    /// The block being moved.
    pub block: BlockIndex,
    /// Where its footprint starts now.
    pub from: HostOffset,
    /// Where its footprint will start.
    pub to: HostOffset,
}

/// General facts about an opened image, for `vdisk info`.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Registry id of the format (`"vhd"`).
    pub format: &'static str,
    /// Fixed, dynamic or differencing.
    pub kind: ImageKind,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Allocation unit in bytes.
    pub block_size: u64,
    /// Number of blocks of the virtual disk.
    pub block_count: u64,
    /// Blocks that occupy host space.
    pub allocated_blocks: u64,
    /// Size of the image file in bytes.
    pub file_size: u64,
    /// Format-specific facts as (name, value) pairs, e.g. ("creator", "qemu").
    pub details: Vec<(String, String)>,
}

/// An opened disk image in some format.
///
/// The [`BlockDevice`] methods give the guest view (through the whole parent chain for
/// differencing images); the rest describes how the image stores it.
pub trait DiskImage: BlockDevice {
    /// Registry id of the format, e.g. `"vhd"`.
    fn format(&self) -> &'static str;

    /// Fixed, dynamic or differencing.
    fn kind(&self) -> ImageKind;

    /// Allocation unit in bytes (VHD/VHDX block size; a nominal unit for fixed disks).
    /// Compaction never splits a unit.
    fn block_size(&self) -> u64;

    /// Number of entries in the allocation map: at least `size()` divided by `block_size()`,
    /// rounded up (the default). A format whose table has allocated entries past the virtual
    /// size must count them too, so compaction keeps their host space; such blocks are never
    /// read or reclaimed.
    fn block_count(&self) -> u64 {
        self.size().div_ceil(self.block_size().max(1))
    }

    /// What backs `block`. Cheap: answered from tables loaded at open, no I/O.
    /// [`ErrorKind::OutOfRange`] if `block >= block_count()`.
    fn block_state(&self, block: BlockIndex) -> Result<BlockState>;

    /// The image file on the host.
    fn host_file(&self) -> &dyn HostFile;

    /// Format-specific facts for `vdisk info`.
    fn details(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Deep structural checks on the opened image (the checks done at open time have already
    /// passed). Returns every problem found, not just the first.
    fn check(&self) -> Result<Vec<Problem>> {
        Ok(Vec::new())
    }

    /// The parent image a differencing image reads unallocated blocks from (itself opened with
    /// its own parents). `None` for base images.
    fn parent(&self) -> Option<&dyn DiskImage> {
        None
    }

    /// The path the parent was opened at, for reports.
    fn parent_path(&self) -> Option<&Path> {
        None
    }

    /// The identity a differencing child records to name this image, for formats whose
    /// children name their parent by identity instead of by path (VDI: the image's UUID;
    /// compared with [`crate::ParentReference::id`] to find its children). `None`, the
    /// default, for formats whose children name a path.
    fn image_id(&self) -> Option<Vec<u8>> {
        None
    }

    /// Host byte ranges the image's own structures occupy: headers, footers, tables, logs,
    /// locator data, sector bitmaps. The compactor refuses to change an image in which a
    /// block's host space overlaps one of them, another block's, or the end of the file, and
    /// never punches, frees or reuses a byte inside them. The default,
    /// [`ErrorKind::Unsupported`], keeps a format that does not say where its metadata lies
    /// from being compacted at all.
    fn host_metadata(&self) -> Result<Vec<Range<u64>>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "compaction of {} images is not supported (the driver does not say where its \
                 metadata lies)",
                self.format()
            ),
        ))
    }

    /// Whether any compaction may touch this image, a `retrim` that only punches the host file
    /// of a fixed image included. The compactor asks before planning and again before
    /// applying; `Err` (usually
    /// [`ErrorKind::WrongType`]) says why not, e.g. a VHD saved with its VM running. The
    /// default allows it.
    fn compaction_allowed(&self) -> Result<()> {
        Ok(())
    }

    /// Called once before the compactor frees or punches out blocks whose content is not known
    /// to read the same afterwards (file-system-free space that may hold data), in images of
    /// every kind: `retrim` punches such blocks out of fixed images too. Formats that version
    /// their content for children (VHDX DataWriteGuid) record the change here, durably; the
    /// default does nothing.
    fn begin_content_change(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called once before the first write through any path, a compaction primitive or
    /// [`DiskImage::host_file`] directly (the compactor calls it first thing in `apply`).
    /// Formats whose open shows pending changes in memory only (VHDX: a log not yet replayed)
    /// write them to the file here, durably; their writable open itself writes nothing, so a
    /// compaction that is refused, fails while planning or is only planned leaves the file
    /// byte-identical. What was written is then listed by [`DiskImage::implicit_changes`].
    /// Idempotent. The default does nothing; a read-only open with something pending fails
    /// with [`ErrorKind::ReadOnly`].
    fn prepare_write(&mut self) -> Result<()> {
        Ok(())
    }

    /// What this open has changed in the file on its own, beyond what the caller asked for
    /// (VHDX: a pending log replayed by [`DiskImage::prepare_write`] or by the first write), in
    /// plain lowercase words, one line each. Empty when it changed nothing. Reports print these
    /// as notes; a caller must never say the file was not changed while this is not empty.
    fn implicit_changes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The compaction primitives, for images whose blocks can be freed and moved. Fixed images
    /// answer [`ErrorKind::WrongType`]; formats without support [`ErrorKind::Unsupported`].
    fn as_compactable(&mut self) -> Result<&mut dyn Compactable> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("compaction of {} images is not supported", self.format()),
        ))
    }

    /// The read-only side of [`DiskImage::as_compactable`]: what planning asks (the layout,
    /// whether a zero state exists, whether holes may stay), through `&self`. Must answer as
    /// `as_compactable` does (the same refusals, the same primitives). The default refuses
    /// like the default `as_compactable`.
    fn as_compactable_ref(&self) -> Result<&dyn Compactable> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("compaction of {} images is not supported", self.format()),
        ))
    }
}

/// Collects [`ImageInfo`] for any image.
pub fn image_info(image: &dyn DiskImage) -> Result<ImageInfo> {
    let mut allocated_blocks = 0;
    for i in 0..image.block_count() {
        if image.block_state(BlockIndex(i))?.host().is_some() {
            allocated_blocks += 1;
        }
    }
    Ok(ImageInfo {
        format: image.format(),
        kind: image.kind(),
        virtual_size: image.size(),
        block_size: image.block_size(),
        block_count: image.block_count(),
        allocated_blocks,
        file_size: image.host_file().len()?,
        details: image.details(),
    })
}

/// Format-level primitives the generic compactor drives.
///
/// # What the engine assumes of a format (the contract)
/// - The allocation map has one [`BlockState`] per block, and every block has the same size
///   ([`DiskImage::block_size`], any number of bytes, not only powers of two) and the same
///   host footprint ([`HostLayout::block_footprint`]) starting at [`BlockState::host`]. All a
///   block owns in the host file (data, sector bitmap, trailer) lies in its footprint, and
///   nothing else does: the engine moves footprints whole, and punches a freed block's whole
///   footprint.
/// - Where the guest's bytes lie inside the footprint is [`HostLayout::data_offset`], said by
///   the format; the engine assumes no place (it used to assume the end of the footprint).
/// - Blocks are placed on a grid measured from [`HostLayout::data_start`]
///   ([`HostLayout::alignment`]), never over [`DiskImage::host_metadata`] or
///   [`HostLayout::reserved`]; metadata does not move while compacting, and the image is one
///   host file.
/// - The engine checks what it can before writing anything: every block's footprint lies in
///   the file, clear of metadata and of every other block, and the data offset lies inside the
///   footprint; an image or layout that fails is refused with the file untouched.
///
/// Every call leaves the image valid and reading the same as before (except where the caller
/// deallocates blocks whose content it has decided to drop), even if the process dies in the
/// middle of it: implementations order their writes and syncs so that every intermediate state
/// on disk is a valid image (DESIGN.md section 6).
///
/// A call that does not fit the image (a block index past the table, a move whose source is
/// not where the table says or whose target is not free block space, a truncation that would
/// cut a block) is the caller's bug, not the user's input nor the file's damage: it fails with
/// [`ErrorKind::Internal`] and changes nothing.
pub trait Compactable: DiskImage {
    /// Where blocks may be placed in the host file.
    fn host_layout(&self) -> Result<HostLayout>;

    /// Marks `blocks` free so they occupy no host space and read as `to` says. Their old host
    /// space is not touched (the compactor moves other blocks into it, or truncates it away).
    /// Durable on return. A block that is already free is left as it is.
    ///
    /// In a base image both targets read zeros. In a differencing image [`FreeAs::Parent`]
    /// makes the block read the parent's data (the compactor asks for it only for blocks that
    /// read the same as the parent), and [`FreeAs::Zero`] needs a zero state
    /// ([`Compactable::can_free_as_zero`]); formats without one fail with
    /// [`ErrorKind::Unsupported`], changing nothing.
    fn deallocate(&mut self, blocks: &[BlockIndex], to: FreeAs) -> Result<()>;

    /// Whether [`FreeAs::Zero`] is possible: true for base images; for differencing images only
    /// where the format has an explicit zero state (VHDX, not VHD).
    fn can_free_as_zero(&self) -> bool {
        self.kind() != ImageKind::Differencing
    }

    /// Whether blocks freed where they are may stay holes inside the block area, as
    /// [`crate::Mode::Retrim`] leaves them in a dynamic or differencing image. True by default:
    /// the tables say where each block is (VHD, VHDX). A format whose header counts the blocks
    /// and places the next one after that count (VirtualBox VDI) answers false; the planner then
    /// refuses retrim for such images, and the moving modes (which pack the blocks) remain.
    fn holes_allowed(&self) -> bool {
        true
    }

    /// Moves blocks: copies each footprint to its new place, calling `copied` after each
    /// block's copy, makes the copies durable, then points the tables at them and makes that
    /// durable. The targets must be free host space.
    ///
    /// `copied` is how the caller shows progress and cancels within a batch: when it returns
    /// `Err`, the relocation stops before any table is changed and returns that error; the
    /// copies made so far sit in free host space and the image reads as before.
    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()>;

    /// Finishes the image so its last block or metadata ends at `data_end` (writing trailing
    /// structures such as the VHD footer) and shortens the file to
    /// `host_layout().file_len_for(data_end)`. Fails, changing nothing, if any block or
    /// metadata lies past `data_end`. Returns the new file length.
    fn truncate(&mut self, data_end: u64) -> Result<u64>;
}
