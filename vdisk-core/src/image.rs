//! An opened disk image: the allocation map every format exposes, and the compaction
//! primitives of formats whose blocks can be freed and moved.

use std::ops::Range;
use std::path::Path;

use crate::block::BlockDevice;
use crate::check::Problem;
use crate::error::{Error, ErrorKind, Result};
use crate::extent::GuestExtent;
use crate::host_file::HostFile;
use crate::space::HostSpaceMap;
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
    /// Stored in this image in a way the engine must leave exactly where it is: compressed,
    /// sharing host bytes with other blocks, or shared with an internal snapshot (qcow2). Its
    /// host bytes are the format's fixed metadata in the host space map
    /// ([`crate::HostUse::FIXED`]), never a block footprint
    /// ([`crate::HostUse::BlockData`]): the engine never frees, moves, scans for zeros or
    /// punches it, whatever the mode or the file system says, and the file never ends before
    /// its bytes. It reads what the format says (never zeros because of a host-file hole).
    Pinned {
        /// Where the block's stored bytes start in the host file (for reports); they are not
        /// necessarily the guest's bytes in order, and their length is the format's to know.
        host: HostOffset,
    },
}

impl BlockState {
    /// The start of the block's host footprint, the host space the engine may move, punch or
    /// free with the block, if any. `None` for a [`BlockState::Pinned`] block: it has no
    /// footprint (its bytes are the format's fixed metadata), so the engine never takes them
    /// for the block's own.
    pub fn host(self) -> Option<HostOffset> {
        match self {
            BlockState::Allocated { host } => Some(host),
            BlockState::Trimmed { host } => host,
            BlockState::Zero | BlockState::Unallocated | BlockState::Pinned { .. } => None,
        }
    }

    /// Whether the block occupies host space in this image: a footprint ([`BlockState::host`])
    /// or pinned bytes. What "allocated" counts in [`ImageInfo`] and compaction reports.
    pub fn stored(self) -> bool {
        self.host().is_some() || matches!(self, BlockState::Pinned { .. })
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
    /// format whose table holds slot numbers: the footprint, from the first slot). Movable
    /// metadata is placed on the same grid.
    pub alignment: u64,
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
    /// Blocks that occupy host space ([`BlockState::stored`]: pinned blocks included).
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

    /// What every guest byte of `range` (clamped to the virtual size) reads from, in guest
    /// order, covering it with no gap ([`GuestExtent`]). The default reads the allocation map
    /// ([`crate::extents_from_block_states`]). A format whose blocks hold compressed, shared or
    /// encrypted data says so here with [`GuestExtent::Opaque`]: the compactor asks once while
    /// planning and keeps every block such an extent touches as it is (moved whole, never
    /// freed, never scanned for zeros).
    fn guest_extents(&self, range: Range<u64>) -> Result<Vec<(Range<u64>, GuestExtent)>> {
        crate::extent::extents_from_block_states(self, range)
    }

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

    /// What a differencing child made from this image records to know it again (see
    /// [`crate::parent::Identity`]): child drivers check the parent the gate opened for them
    /// ([`crate::parent::open_backing`]) through it, whatever its format. Unlike
    /// [`DiskImage::image_id`], it says nothing about how children find their parent. The
    /// default knows only [`DiskImage::image_id`].
    fn identity(&self) -> crate::parent::Identity {
        crate::parent::Identity::new(self.image_id(), None)
    }

    /// What every byte range of the host file holds (see [`HostSpaceMap`]): each block's
    /// footprint, the format's metadata (headers, footers, tables, logs, locator data, sector
    /// bitmaps), fixed or movable, the trailer rewritten by a shrink, and free space. Usually
    /// [`HostSpaceMap::of_image`] over the format's metadata list. The compactor asks for it
    /// once while planning and once before applying, refuses an image whose map does not place
    /// the blocks where [`DiskImage::block_state`] does, and never punches, frees or reuses a
    /// byte the map does not call free or the block's own. The default,
    /// [`ErrorKind::Unsupported`], keeps a format that does not say where its metadata lies
    /// from being compacted at all.
    fn host_space(&self) -> Result<HostSpaceMap> {
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
        if image.block_state(BlockIndex(i))?.stored() {
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

/// Format-level primitives the generic compactor drives: the spec between any image format
/// and the engine ([`crate::GenericCompactor`]). Nothing here names a format.
///
/// # What a format promises
/// - **Guest extent map.** [`DiskImage::guest_extents`] says what every guest range reads
///   from: data at a host offset, zeros, the backing image, discarded, or opaque (compressed
///   or shared host bytes that move only as a whole). By default it follows the allocation
///   map.
/// - **Allocation map.** One [`BlockState`] per block ([`DiskImage::block_state`], no I/O).
///   Every block has the same size ([`DiskImage::block_size`], any number of bytes) and the
///   same host footprint ([`HostLayout::block_footprint`]) from [`BlockState::host`]: all a
///   block owns in the host file (data, sector bitmap, trailer) lies in its footprint, and
///   nothing else does. Where the guest's bytes lie inside it is [`HostLayout::data_offset`].
///   A block the engine must leave exactly where it is (compressed, sharing host bytes with
///   other blocks, shared with an internal snapshot) is [`BlockState::Pinned`]: it has no
///   footprint, its host bytes are fixed metadata in the host space map, and the format's
///   [`DiskImage::guest_extents`] says [`GuestExtent::Opaque`] over them (the default extent
///   map, which knows only where they start, says [`GuestExtent::Data`] with no host offset).
/// - **Host space map.** [`DiskImage::host_space`] tags every host byte as one block's
///   footprint, fixed or movable metadata, the trailer a shrink rewrites, or free
///   ([`HostSpaceMap`]), and places the blocks where the allocation map does.
/// - **Placement.** Blocks and movable metadata sit on a grid of [`HostLayout::alignment`]
///   measured from [`HostLayout::data_start`], below which nothing is placed; the finished
///   file is [`HostLayout::file_len_for`] the end of its last block or metadata.
/// - **Primitives.** [`Compactable::deallocate`] (free blocks), [`Compactable::relocate`]
///   (move block footprints), [`Compactable::move_metadata`] (move a movable structure) and
///   [`Compactable::truncate`] (shrink). Each leaves the image valid and reading the same as
///   before (except blocks the caller deallocates), even if the process dies in the middle:
///   writes and syncs are ordered so that every state on disk is a valid image (copy, sync,
///   repoint, sync; DESIGN.md section 6).
/// - **Mistakes are the caller's.** A call that does not fit the image (a block past the
///   table, a move whose source is not where the table says or whose target is not free, a
///   truncation that would cut a block or metadata) fails with [`ErrorKind::Internal`] and
///   changes nothing.
/// - **After an error, open the image again.** A primitive that fails part-way (a failed
///   write or sync) may leave the file a step ahead of what the open image remembers; the
///   file is a valid image (as at any cut, above), but the in-memory tables are not to be
///   trusted. The engine stops at the first error; a library caller must drop the image and
///   reopen the file before it calls another primitive.
/// - **One host file.** The image this trait compacts is stored in [`DiskImage::host_file`];
///   a backing image is another image ([`DiskImage::parent`]), compacted on its own. A format
///   spread over several files (VMDK extents) is not covered by this contract yet.
///
/// # What the engine promises
/// - Planning only reads, through `&dyn DiskImage`, the read-only view
///   ([`DiskImage::as_compactable_ref`]), the layout and the host space map, each asked for
///   once. Nothing is written by a plan, a refusal or a dry run.
/// - Before the first write (and again on the image as it is when applying) it proves that
///   the host space map places the blocks where the allocation map does and that the data
///   offset lies inside the footprint; otherwise it refuses with the file untouched.
/// - It punches, frees or reuses only bytes the map calls free or a reclaimed block's own.
///   Blocks and movable metadata move only down, whole, each at most once, into space free
///   at plan time; fixed metadata and the trailer never move; only
///   [`Compactable::truncate`] shortens the file.
/// - It frees only whole blocks, and only for a reason ([`crate::Reason`]): trimmed, all
///   zero, free in the guest file system, or (differencing) the same as the parent. A block an
///   opaque extent touches is never freed, never scanned for zeros and only moved whole. A
///   [`BlockState::Pinned`] block is never freed, moved, scanned for zeros or punched, in any
///   mode; the rest compacts around its bytes.
/// - Order: [`DiskImage::prepare_write`], [`DiskImage::begin_content_change`] (before content
///   may change), deallocate in batches, give freed space back, move metadata, relocate in
///   batches (giving each batch's sources back), punch (retrim), truncate.
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

    /// Moves the structure at `from`, a range the host space map tags
    /// `Metadata { movable: true }` ([`crate::HostUse`]), whole to `to..to + from.len()`, which must be
    /// free host space on the block grid. Crash-safe in four steps: copy the structure, make
    /// the copy durable, point the format's references at the copy (one atomic write: a header
    /// sector, or a journal entry), make that durable. Until the repoint the image uses the old
    /// place, afterwards the new one; either way it is valid and reads the same. On return the
    /// old range is free in the map (the compactor gives it back). The default, for formats
    /// whose metadata never moves, fails with [`ErrorKind::Unsupported`]; a range that is not
    /// one movable structure or a target that is not free fails with [`ErrorKind::Internal`];
    /// both change nothing.
    fn move_metadata(&mut self, from: Range<u64>, to: u64) -> Result<()> {
        let _ = (from, to);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} images have no metadata that can move", self.format()),
        ))
    }

    /// Finishes the image so its last block or metadata ends at `data_end` (writing trailing
    /// structures such as the VHD footer) and shortens the file to
    /// `host_layout().file_len_for(data_end)`. Fails, changing nothing, if any block or
    /// metadata lies past `data_end`. Returns the new file length.
    fn truncate(&mut self, data_end: u64) -> Result<u64>;
}
