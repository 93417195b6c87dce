//! Differencing images: verifying the parent core's gate opened, and reading or filling
//! blocks that are only partly this image's own.
//!
//! ```text
//!  open_with     locators ─► vdisk_core::open_backing (policy, depth, cycles, format
//!                detected with the registry, opened read-only with its own parents)
//!  check_parent  must be VHDX; DataWriteGuid ∈ {parent_linkage, parent_linkage2}, same size
//!                and sector
//!  read_partial  PARTIALLY_PRESENT: runs of sectors, bit 1 = this file, bit 0 = the parent
//!  fill          a block about to become FULLY_PRESENT gets the parent's data wherever it
//!                does not hold its own yet
//!  clear bits    freed blocks' sector bits, through the log
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use uuid::Uuid;
use vdisk_core::{
    BlockDevice, DiskImage, Error, ErrorKind, FormatDriver, HostFile, Result, is_zero,
};

use crate::bat::BatEntry;
use crate::compact::writable;
use crate::format::{LOG_SECTOR, SB_PRESENT};
use crate::image::VhdxImage;
use crate::locator::ParentLocator;
use crate::log_write::{PAGE, Page};

/// Bytes copied per request when filling a block from the parent.
const FILL_CHUNK: u64 = 1 << 20;

/// Checks that `parent`, opened by core's gate at `path`, is the image `child` (whose locator
/// is `locator`) was made from: its DataWriteGuid is the parent_linkage (or
/// parent_linkage2), and it has the child's virtual size and logical sector size.
///
/// A parent of another format is refused, naming both formats: MS-VHDX's parent locator is
/// of the VHDX type (its linkage is a VHDX DataWriteGuid) and Hyper-V reads a differencing
/// VHDX only over a VHDX; another format has no DataWriteGuid to verify the linkage with.
pub(crate) fn check_parent(
    child: &VhdxImage,
    locator: &ParentLocator,
    parent: &dyn DiskImage,
    path: &Path,
) -> Result<()> {
    let shown = path.display().to_string();
    let link = "a vhdx parent locator holding its DataWriteGuid";
    vdisk_core::parent::own_format_only(parent, &shown, crate::DRIVER.id(), link)?;
    let dwg = parent
        .identity()
        .version
        .and_then(|v| Uuid::from_slice(&v).ok())
        .unwrap_or_default();
    if !locator.accepts(dwg) {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!(
                "parent {} has DataWriteGuid {{{dwg}}} but the child's parent_linkage is \
                 {{{}}}: the parent changed after the child was made, or it is another image",
                path.display(),
                locator.linkage
            ),
        ));
    }
    if parent.size() != child.size() || parent.sector_size() != child.sector_size() {
        return Err(Error::new(
            ErrorKind::InvalidImage,
            format!(
                "parent {} has {} bytes in {}-byte sectors but the child has {} bytes in \
                 {}-byte sectors",
                path.display(),
                parent.size(),
                parent.sector_size(),
                child.size(),
                child.sector_size()
            ),
        ));
    }
    Ok(())
}

/// The sector bitmap bits of a PARTIALLY_PRESENT block, with what they cover.
struct Bits {
    /// Bitmap bytes from the byte holding `first`.
    bytes: Vec<u8>,
    /// Index (within the chunk's bitmap) of the first bit in `bytes`, a multiple of 8.
    base: u64,
}

impl Bits {
    fn get(&self, bit: u64) -> bool {
        let i = usize::try_from((bit - self.base) / 8).unwrap_or(usize::MAX);
        self.bytes
            .get(i)
            .is_some_and(|b| b >> ((bit - self.base) % 8) & 1 == 1)
    }
}

impl VhdxImage {
    /// Reads the bits of sectors `first..=last` (relative to the block) of `block`.
    fn bitmap_bits(&self, block: u64, first: u64, last: u64) -> Result<Bits> {
        let (sb_host, bit0) = {
            let bat = self.bat();
            let sb = bat
                .bitmap_of(block)
                .map(|(_, e)| e.host_offset())
                .ok_or_else(|| {
                    Error::invalid(format!("block {block} has no sector bitmap entry"), 0)
                })?;
            (sb, bat.bitmap_bit(block))
        };
        let base = (bit0 + first) / 8 * 8;
        let len = usize::try_from((bit0 + last) / 8 - base / 8 + 1).unwrap_or(0);
        let mut bytes = vec![0u8; len];
        self.view.read_at(&mut bytes, sb_host + base / 8)?;
        // Re-base so that bit indices are relative to the block.
        Ok(Bits {
            bytes,
            base: base.wrapping_sub(bit0),
        })
    }

    /// Reads `part` at `within` of PARTIALLY_PRESENT `block` (host block at `entry`): sectors
    /// whose bit is set from this file, the others from `parent`.
    pub(crate) fn read_partial(
        &self,
        parent: &dyn DiskImage,
        part: &mut [u8],
        block: u64,
        within: u64,
        entry: BatEntry,
    ) -> Result<()> {
        if part.is_empty() {
            return Ok(());
        }
        let ls = u64::from(self.sector_size());
        let bs = self.bat().block_size;
        let last = within + part.len() as u64 - 1;
        let bits = self.bitmap_bits(block, within / ls, last / ls)?;
        let mut pos = within;
        while pos <= last {
            let present = bits.get(pos / ls);
            let mut end = (pos / ls + 1) * ls;
            while end <= last && bits.get(end / ls) == present {
                end += ls;
            }
            let end = end.min(last + 1);
            let dst = &mut part[index(pos - within)..index(end - within)];
            if present {
                self.view.read_at(dst, entry.host_offset() + pos)?;
            } else {
                parent.read_at(dst, block * bs + pos)?;
            }
            pos = end;
        }
        Ok(())
    }

    /// Puts the parent's data into host block `host` of `block` wherever the block does not
    /// hold this image's own data yet: everywhere for a block being allocated (`partial`
    /// false; the new space reads zeros, so zero chunks are skipped), the sectors whose bit is
    /// clear for a PARTIALLY_PRESENT block. Reads do not change (the BAT does not point at the
    /// filled bytes as this image's own until the caller makes it FULLY_PRESENT).
    pub(crate) fn fill_from_parent(
        &self,
        file: &dyn HostFile,
        parent: &dyn DiskImage,
        block: u64,
        host: u64,
        partial: bool,
    ) -> Result<()> {
        let bs = self.bat().block_size;
        let ls = u64::from(self.sector_size());
        // The last block may reach past the end of the disk: only its visible part is filled.
        let visible = bs.min(self.size().saturating_sub(block * bs));
        if visible == 0 {
            return Ok(());
        }
        let bits = if partial {
            Some(self.bitmap_bits(block, 0, visible.div_ceil(ls) - 1)?)
        } else {
            None
        };
        let mut buf = vec![0u8; index(FILL_CHUNK.min(bs))];
        let mut pos = 0;
        while pos < visible {
            let mut end = (pos + FILL_CHUNK).min(visible);
            if let Some(bits) = &bits {
                if bits.get(pos / ls) {
                    pos += ls;
                    continue;
                }
                let mut e = pos + ls;
                while e < end && !bits.get(e / ls) {
                    e += ls;
                }
                end = e;
            }
            let chunk = &mut buf[..index(end - pos)];
            parent.read_at(chunk, block * bs + pos)?;
            if partial || !is_zero(chunk) {
                file.write_at(chunk, host + pos)?;
            }
            pos = end;
        }
        Ok(())
    }

    /// Clears the sector bitmap bits of `blocks` through the log (only pages with a bit set
    /// are logged), a few pages per entry, then empties the log. Nothing for images without
    /// sector bitmaps.
    pub(crate) fn clear_sector_bits(&mut self, blocks: &[u64]) -> Result<()> {
        if blocks.is_empty() || !self.bat().differencing {
            return Ok(());
        }
        let mut pages: BTreeMap<u64, Box<[u8; PAGE]>> = BTreeMap::new();
        let mut changed = false;
        let file = self.view.file();
        {
            let bat = self.bat();
            let bytes_per_block = bat.sectors_per_block / 8;
            for &block in blocks {
                let Some((_, sb)) = bat
                    .bitmap_of(block)
                    .filter(|(_, e)| e.state() == SB_PRESENT)
                else {
                    continue;
                };
                let start = sb.host_offset() + bat.bitmap_bit(block) / 8;
                let end = start + bytes_per_block;
                let mut at = start / LOG_SECTOR * LOG_SECTOR;
                while at < end {
                    let page = match pages.entry(at) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let mut page = Box::new([0u8; PAGE]);
                            // Through the view: the file may still lack a pending log.
                            self.view.read_at(&mut page[..], at)?;
                            e.insert(page)
                        }
                    };
                    let a = usize::try_from(start.max(at) - at).unwrap_or(PAGE);
                    let b = usize::try_from(end.min(at + LOG_SECTOR) - at).unwrap_or(PAGE);
                    if let Some(bits) = page.get_mut(a..b) {
                        changed |= !is_zero(bits);
                        bits.fill(0);
                    }
                    at += LOG_SECTOR;
                }
            }
        }
        if !changed {
            return Ok(());
        }
        let session = writable(&mut self.session, &self.view)?;
        let pages: Vec<Page> = pages.into_iter().collect();
        let mut rest = pages.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(session.max_pages().max(1).min(rest.len()));
            session.log_pages(file, chunk.to_vec())?;
            session.apply(file)?;
            rest = tail;
        }
        session.finish(file)
    }
}

/// A distance already bounded by a buffer length, as an index.
fn index(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
