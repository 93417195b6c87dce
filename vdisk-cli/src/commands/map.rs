//! `vdisk map`: where each guest byte range of an image lives, like `qemu-img map`.
//!
//! Consecutive blocks in the same state whose data sits back to back in the host file form
//! one extent. States, in the words `--json` uses:
//! - `data`: stored in the image file, at `host_offset`;
//! - `zero`: reads as zeros and takes no space (an explicit zero block);
//! - `unallocated`: not stored; reads as zeros in a base image;
//! - `parent`: not stored in this differencing image; reads what its parent holds;
//! - `trimmed`: released by the guest (its content is undefined); it may still take space in
//!   the file at `host_offset` until a compaction gives it back;
//! - `pinned`: stored in the image file in a way compaction leaves exactly where it is
//!   (compressed, or shared with other blocks or an internal snapshot); its bytes there are
//!   not the guest's in order, so it has no `host_offset`;
//! - `other`: a state this version of vdisk does not name (a format brought it).
//!
//! `host_offset` is where the guest's bytes start, as the format's layout says
//! ([`vdisk_core::HostLayout::data_offset`]); none when the format does not store them in
//! order there.

use serde::Serialize;
use vdisk_core::{
    BlockIndex, BlockState, DiskImage, ImageKind, OpenOptions, ParentPolicy, Registry, Result,
};

use crate::cli::MapArgs;
use crate::exit::FirstFailure;
use crate::report::{self, Stage};

/// One guest range and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// First guest byte.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// See the module docs.
    pub state: &'static str,
    /// Where the range's data starts in the image file, for `data` and `trimmed` ranges that
    /// still take space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_offset: Option<u64>,
}

/// `--json`: one object per file.
#[derive(Debug, Serialize)]
struct MapJson<'a> {
    file: String,
    format: &'static str,
    kind: &'static str,
    virtual_size: u64,
    block_size: u64,
    extents: &'a [Extent],
}

/// Runs `vdisk map`.
pub fn run(args: &MapArgs, registry: &Registry, parents: &ParentPolicy) -> u8 {
    let mut result = FirstFailure::default();
    let opts = OpenOptions::read_only()
        .with_parents(parents.clone())
        .with_format(args.format.clone());
    for (i, file) in args.files.iter().enumerate() {
        let mapped = registry
            .open_path(file, &opts)
            .and_then(|image| Ok((extents(&*image)?, image)));
        match mapped {
            Ok((extents, image)) if args.json => report::json_line(&MapJson {
                file: report::shown(file),
                format: image.format(),
                kind: image.kind().as_str(),
                virtual_size: image.size(),
                block_size: image.block_size(),
                extents: &extents,
            }),
            Ok((extents, image)) => {
                if i > 0 {
                    report::out("");
                }
                report::out(&human(&report::shown(file), &*image, &extents));
            }
            Err(e) => result.record(report::failure(file, &e, Stage::Untouched, args.json)),
        }
    }
    result.code()
}

/// The extents of `image`, in guest order, covering `0..image.size()` exactly.
pub fn extents(image: &dyn DiskImage) -> Result<Vec<Extent>> {
    let block = image.block_size();
    let size = image.size();
    let child = image.kind() == ImageKind::Differencing;
    // Where a block's data starts within its host footprint, as the format says (VHD: after
    // the sector bitmap); a fixed image's block is its data.
    let data_within = match image.kind() {
        ImageKind::Fixed => Some(0),
        _ => image
            .as_compactable_ref()
            .and_then(|c| c.host_layout())
            .ok()
            // No layout (e.g. a VHD saved with its VM, which refuses the compaction view):
            // the offset is unknown, never the footprint's start.
            .and_then(|l| l.data_offset),
    };
    let at = |h: vdisk_core::HostOffset| data_within.and_then(|d| h.0.checked_add(d));
    let mut out: Vec<Extent> = Vec::new();
    for i in 0..image.block_count() {
        let start = i.saturating_mul(block);
        if start >= size {
            break;
        }
        let length = block.min(size - start);
        let (state, host) = match image.block_state(BlockIndex(i))? {
            BlockState::Allocated { host } => ("data", at(host)),
            BlockState::Zero => ("zero", None),
            BlockState::Unallocated if child => ("parent", None),
            BlockState::Unallocated => ("unallocated", None),
            BlockState::Trimmed { host } => ("trimmed", host.and_then(at)),
            BlockState::Pinned { .. } => ("pinned", None),
            _ => ("other", None),
        };
        if let Some(last) = out.last_mut()
            && last.state == state
            && last.host_offset.map(|h| h + last.length) == host
        {
            last.length += length;
            continue;
        }
        out.push(Extent {
            start,
            length,
            state,
            host_offset: host,
        });
    }
    Ok(out)
}

/// The human table.
fn human(file: &str, image: &dyn DiskImage, extents: &[Extent]) -> String {
    let mut text = format!(
        "{file}: {} {}, {} virtual, {} blocks\n{:>18}  {:>12}  {:<11}  {}",
        image.format(),
        image.kind().as_str(),
        report::human_size(image.size()),
        report::human_size(image.block_size()),
        "guest offset",
        "length",
        "state",
        "file offset"
    );
    for e in extents {
        let host = e
            .host_offset
            .map_or_else(|| "-".to_owned(), |h| format!("{h:#x}"));
        text.push_str(&format!(
            "\n{:>18}  {:>12}  {:<11}  {host}",
            format!("{:#x}", e.start),
            report::human_size(e.length),
            e.state
        ));
    }
    text
}
