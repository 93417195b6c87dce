//! The internal journal (jbd2, normally inode 8), the resize inode and the multi-mount
//! protection block: structures whose blocks the bitmaps must mark used, and whose state says
//! whether the volume is at rest.
//!
//! The superblock's `needs_recovery` flag is the kernel's own word that the journal holds
//! transactions not yet written home; a journal superblock with a non-zero `s_start` says the
//! same from the journal's side, and a non-zero `s_errno` that the journal was aborted.

use std::ops::Range;

use vdisk_core::fs::{Examined, FreeMap, MetaReader, damaged};

use crate::inode::{self, Piece};
use crate::superblock::Geometry;

/// jbd2 superblock magic (big-endian on disk).
const JBD2_MAGIC: u32 = 0xC03B_3998;
/// jbd2 block types of a journal superblock (v1, v2).
const JBD2_SUPERBLOCK_TYPES: [u32; 2] = [3, 4];
/// The resize inode.
const RESIZE_INO: u64 = 7;
/// `i_block` index of the resize inode's double indirect block.
const DIND: usize = 13;
/// MMP block magic and the sequence of a cleanly released volume.
const MMP_MAGIC: u32 = 0x004D_4D50;
const MMP_SEQ_CLEAN: u32 = 0xFF4D_4D50;

/// Blocks `blocks` as volume bytes.
fn bytes(geo: &Geometry, blocks: &Range<u64>) -> Range<u64> {
    blocks.start * geo.block_size..blocks.end * geo.block_size
}

/// Checks the internal journal (inode `geo.journal_inum`): every block of it, and of its map,
/// is marked used in `free`'s source bitmaps, and the journal is empty and not aborted.
pub(crate) fn check_internal(
    reader: &MetaReader<'_>,
    geo: &Geometry,
    free: &FreeMap,
) -> Examined<()> {
    let journal = inode::read(reader, geo, u64::from(geo.journal_inum))?;
    if journal.blocks == 0 {
        return damaged("ext4 journal inode is empty (run e2fsck)");
    }
    let mut first: Option<u64> = None;
    let mut freed: Option<Range<u64>> = None;
    journal.walk(reader, geo, &mut |p: Piece| {
        if p.logical == Some(0) && first.is_none() {
            first = Some(p.physical.start);
        }
        if freed.is_none() && free.any_free(&bytes(geo, &p.physical)) {
            freed = Some(p.physical);
        }
    })?;
    if let Some(r) = freed {
        return damaged(format!(
            "ext4 block bitmap marks journal blocks {}..{} free: the bitmaps do not match the \
             volume (run e2fsck)",
            r.start, r.end
        ));
    }
    let Some(first) = first else {
        return damaged("ext4 journal has no first block (run e2fsck)");
    };
    let sb = reader.read(first * geo.block_size, 1024, "the journal superblock")?;
    let be = |at: usize| u32::from_be_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if be(0) != JBD2_MAGIC || !JBD2_SUPERBLOCK_TYPES.contains(&be(4)) {
        return damaged("ext4 journal superblock is damaged (run e2fsck)");
    }
    if be(0x1C) != 0 {
        return damaged(needs_recovery());
    }
    if be(0x20) != 0 {
        return damaged(
            "ext4 journal was aborted after an error: the volume needs checking (run e2fsck)",
        );
    }
    Ok(())
}

/// The reason given for a journal that was not replayed.
pub(crate) fn needs_recovery() -> String {
    "ext4 journal needs recovery: the volume was not unmounted cleanly (still mounted, or the \
     machine stopped). For WSL, shut WSL down cleanly with `wsl --shutdown` first; for a Linux \
     VM, shut it down cleanly (or mount and unmount the volume once), then run vdisk again"
        .to_owned()
}

/// The resize inode's double indirect block (which maps the reserved GDT blocks) must be
/// marked used; the reserved GDT blocks themselves are checked with each group's base
/// metadata.
pub(crate) fn check_resize_inode(
    reader: &MetaReader<'_>,
    geo: &Geometry,
    free: &FreeMap,
) -> Examined<()> {
    let resize = inode::read(reader, geo, RESIZE_INO)?;
    let dind = resize.pointer(DIND);
    if dind == 0 {
        return Ok(());
    }
    if dind >= geo.blocks_count || free.any_free(&bytes(geo, &(dind..dind + 1))) {
        return damaged(
            "ext4 block bitmap marks the resize inode's block free: the bitmaps do not match \
             the volume (run e2fsck)",
        );
    }
    Ok(())
}

/// Multi-mount protection: the volume must have been released cleanly by the last host, and
/// its MMP block be marked used.
pub(crate) fn check_mmp(reader: &MetaReader<'_>, geo: &Geometry, free: &FreeMap) -> Examined<()> {
    let block = geo.mmp_block;
    if block < geo.first_data_block || block >= geo.blocks_count {
        return damaged("ext4 multi-mount protection block lies outside the file system");
    }
    if free.any_free(&bytes(geo, &(block..block + 1))) {
        return damaged(
            "ext4 block bitmap marks the multi-mount protection block free (run e2fsck)",
        );
    }
    let mmp = reader.read(
        block * geo.block_size,
        8,
        "the multi-mount protection block",
    )?;
    let le = |at: usize| u32::from_le_bytes([mmp[at], mmp[at + 1], mmp[at + 2], mmp[at + 3]]);
    if le(0) != MMP_MAGIC {
        return damaged("ext4 multi-mount protection block is damaged (run e2fsck)");
    }
    if le(4) != MMP_SEQ_CLEAN {
        return damaged(
            "ext4 volume is in use: multi-mount protection shows it mounted or being checked \
             by another host",
        );
    }
    Ok(())
}
