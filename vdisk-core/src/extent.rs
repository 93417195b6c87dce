//! The guest extent map: what every guest byte range reads from, as the format says it.
//!
//! ```text
//!  guest 0                                                                      size
//!  │ Data{host} │ Zero │ Backing │ Discarded │ Opaque{host range} │ Data{host} │
//! ```

use std::ops::Range;

use crate::error::Result;
use crate::image::{BlockState, DiskImage, ImageKind};
use crate::units::{BlockIndex, HostOffset};

/// What one guest byte range reads from. Non-exhaustive: formats may bring kinds these do not
/// describe, so a match needs an arm for the rest; the engine treats a kind it does not know
/// like [`GuestExtent::Opaque`] (kept as it is, never read as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestExtent {
    /// Stored in this image, for this range alone.
    Data {
        /// `Some(h)`: the guest's bytes lie in order from host offset `h` (the range's first
        /// byte there), so a host-file hole inside reads as zeros. `None`: they are not stored
        /// that way (interleaved with metadata, encrypted): read them through the guest view.
        host: Option<HostOffset>,
    },
    /// Zeros, with no host space: an explicit zero state, or a range a base image does not map.
    Zero,
    /// What the backing (parent) image shows there; no host space in this image.
    Backing,
    /// Discarded (trimmed, unmapped) by the guest: its content is undefined and may be
    /// dropped. It may still hold host space (see [`crate::HostSpaceMap`]).
    Discarded,
    /// Stored in a way that is not the guest's bytes in order, or not this range's alone:
    /// compressed, encrypted, or shared with other ranges or images. The host range `host`
    /// moves only as a whole; the engine never frees it, never splits it, and never takes its
    /// content for zeros (a hole in it is not a zero guest byte).
    Opaque {
        /// The host bytes the range is stored in.
        host: Range<u64>,
    },
}

/// The guest extent map of `range` (clamped to the virtual size) read from the allocation map:
/// what [`DiskImage::guest_extents`] answers by default. An allocated block is
/// [`GuestExtent::Data`] where the layout says its guest bytes lie
/// ([`crate::HostLayout::data_offset`]; a fixed image's block is its data; without a layout,
/// `host: None`); trimmed blocks are discarded; unallocated blocks read the
/// backing image in a differencing image and zeros elsewhere; a pinned block is data with no
/// host offset (its state does not say how its bytes are stored). Nothing is opaque: only the
/// format knows what is compressed or shared. Neighbours of one kind (data contiguous in the
/// host file) are merged.
pub fn extents_from_block_states<I: DiskImage + ?Sized>(
    image: &I,
    range: Range<u64>,
) -> Result<Vec<(Range<u64>, GuestExtent)>> {
    let (bs, size) = (image.block_size().max(1), image.size());
    let range = range.start.min(size)..range.end.min(size);
    let layout = match image.kind() {
        ImageKind::Fixed => None,
        _ => image
            .as_compactable_ref()
            .and_then(|c| c.host_layout())
            .ok(),
    };
    // A fixed image's block is its data. Otherwise only the layout knows where the guest's
    // bytes lie in a footprint (after a VHD's sector bitmap); without one (a format that is
    // not compactable, or an image the view refuses, such as a VHD saved with its VM) the
    // bytes are "not stored in order at a known offset", never assumed at the footprint's
    // start.
    let data_offset = match image.kind() {
        ImageKind::Fixed => Some(0),
        _ => layout.as_ref().and_then(|l| l.data_offset),
    };
    let child = image.kind() == ImageKind::Differencing;
    let mut out: Vec<(Range<u64>, GuestExtent)> = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let block = at / bs;
        let within = at % bs;
        let end = (block.saturating_add(1).saturating_mul(bs)).min(range.end);
        let kind = match image.block_state(BlockIndex(block))? {
            BlockState::Allocated { host } => GuestExtent::Data {
                host: data_offset
                    .map(|d| HostOffset(host.0.saturating_add(d).saturating_add(within))),
            },
            BlockState::Zero => GuestExtent::Zero,
            BlockState::Unallocated if child => GuestExtent::Backing,
            BlockState::Unallocated => GuestExtent::Zero,
            BlockState::Trimmed { .. } => GuestExtent::Discarded,
            // Stored, but the state says only where its bytes start, not how many there are
            // nor whether they are the guest's in order: read through the guest view. A
            // format with pinned blocks says [`GuestExtent::Opaque`] in its own extent map.
            BlockState::Pinned { .. } => GuestExtent::Data { host: None },
        };
        push_extent(&mut out, at..end, kind);
        at = end;
    }
    Ok(out)
}

/// Appends `(r, kind)` to an extent map being built in guest order, merged into the last
/// extent when it continues it (the same kind, right after it; data also contiguous in the
/// host file). Opaque extents are never merged: each is one host range that moves whole.
pub fn push_extent(out: &mut Vec<(Range<u64>, GuestExtent)>, r: Range<u64>, kind: GuestExtent) {
    if let Some((last, last_kind)) = out.last_mut() {
        let continues = match (&*last_kind, &kind) {
            (GuestExtent::Data { host: Some(a) }, GuestExtent::Data { host: Some(b) }) => {
                a.0.checked_add(last.end - last.start) == Some(b.0)
            }
            (GuestExtent::Opaque { .. }, _) => false,
            (a, b) => a == b,
        };
        if continues && last.end == r.start {
            last.end = r.end;
            return;
        }
    }
    out.push((r, kind));
}
