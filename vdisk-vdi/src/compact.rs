//! Compaction primitives for dynamic and differencing VDIs. Without a journal, every step is
//! ordered so that each state a crash can leave is a valid image with the same content:
//!
//! ```text
//!   deallocate  map pages (entries -> free/zero), sync        slots become holes; the header
//!                                                             count still covers them
//!   relocate    copy slots into holes, sync; map pages, sync  a block reads from its old slot
//!                                                             or its new one, both intact
//!   truncate    header count = slots in use, sync;            only once no entry points at or
//!               shorten the file, sync                        past the new count
//! ```
//!
//! The one rule VirtualBox and qemu rely on: a new block goes into slot `blocks_allocated`, so
//! no entry may ever point at or past it. Lowering the count is therefore the last step, and
//! holes below it (after a cut) only waste space until the next compaction.

use std::collections::BTreeSet;

use vdisk_core::{
    BlockIndex, Compactable, Error, ErrorKind, FreeAs, HostLayout, ImageKind, Relocation, Result,
};

use crate::bmap::Entry;
use crate::format::BLOCKS_ALLOCATED_OFFSET;
use crate::image::VdiImage;

fn internal(msg: String) -> Error {
    Error::new(ErrorKind::Internal, msg)
}

impl VdiImage {
    /// The slot whose extra data starts at host offset `at`, if `at` is one.
    fn slot_at(&self, at: u64) -> Option<u32> {
        let l = &self.layout;
        let rel = at.checked_sub(l.data_offset)?;
        if rel % l.footprint() != 0 {
            return None;
        }
        u32::try_from(rel / l.footprint()).ok()
    }
}

impl Compactable for VdiImage {
    /// Slots follow each other from the data offset with nothing between them: the data area is
    /// the block area, and blocks are placed only on the slot grid (the alignment is the
    /// footprint, measured from the data offset). Each slot holds the extra data, then the
    /// block's data.
    fn host_layout(&self) -> Result<HostLayout> {
        let l = &self.layout;
        Ok(HostLayout {
            data_start: l.data_offset,
            block_footprint: l.footprint(),
            data_offset: Some(l.block_extra),
            alignment: l.footprint(),
            reserved: Vec::new(),
            trailer_len: 0,
            end_alignment: 1,
        })
    }

    /// Base images: the free entry either way (it reads zeros there, and qemu and VirtualBox
    /// allocate over it alike). Differencing images: [`FreeAs::Parent`] is the free entry,
    /// [`FreeAs::Zero`] the zero entry (reads zeros, hides the parent).
    fn deallocate(&mut self, blocks: &[BlockIndex], to: FreeAs) -> Result<()> {
        self.check_writable()?;
        let entry = match (to, self.layout.kind) {
            (FreeAs::Zero, ImageKind::Differencing) => Entry::Zero,
            _ => Entry::Free,
        };
        let count = self.layout.blocks;
        if let Some(b) = blocks.iter().find(|b| b.0 >= count) {
            return Err(internal(format!(
                "block {b} is past the image's {count} blocks; nothing was freed"
            )));
        }
        let file = &self.file;
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let changes: Vec<(u64, Entry)> = blocks
            .iter()
            .filter(|b| matches!(st.map.get(b.0), Entry::Slot(_)))
            .map(|b| (b.0, entry))
            .collect();
        let done = st.map.update(&**file, &changes);
        st.high = st.map.high();
        done
    }

    fn can_free_as_zero(&self) -> bool {
        true
    }

    /// The header counts the slots in use and new blocks go after that count: freed slots
    /// may only vanish by packing (the moving modes), never stay holes (retrim).
    fn holes_allowed(&self) -> bool {
        false
    }

    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        self.check_writable()?;
        let footprint = self.layout.footprint();
        let mut targets = Vec::with_capacity(moves.len());
        {
            let st = self.read_state();
            let in_use: BTreeSet<u32> = st.map.slots().map(|(_, s)| s).collect();
            let mut taken = BTreeSet::new();
            for m in moves {
                let now = match st.map.get(m.block.0) {
                    Entry::Slot(s) if m.block.0 < self.layout.blocks => Some(s),
                    _ => None,
                };
                if now.is_none() || now != self.slot_at(m.from.0) {
                    return Err(internal(format!(
                        "block {} is not at {} as the move plan assumes; nothing was moved",
                        m.block, m.from
                    )));
                }
                // The target must be a hole below the header's count: never a slot in use, and
                // never one the next allocation would take.
                let target = self.slot_at(m.to.0).filter(|&t| {
                    u64::from(t) < st.allocated && !in_use.contains(&t) && taken.insert(t)
                });
                let Some(target) = target else {
                    return Err(internal(format!(
                        "cannot move block {} to {}: not a free slot; nothing was moved",
                        m.block, m.to
                    )));
                };
                targets.push(target);
            }
        }
        for m in moves {
            self.file.copy_within(m.from.0, m.to.0, footprint)?;
            copied()?;
        }
        self.file.sync()?;
        let file = &self.file;
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let changes: Vec<(u64, Entry)> = moves
            .iter()
            .zip(&targets)
            .map(|(m, &t)| (m.block.0, Entry::Slot(t)))
            .collect();
        let done = st.map.update(&**file, &changes);
        st.high = st.map.high();
        done
    }

    /// Lowers the header's count to the slots below `data_end`, then shortens the file to
    /// `data_end`. Refuses, changing nothing, if a block's slot reaches past `data_end` or
    /// `data_end` is not on the slot grid.
    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        self.check_writable()?;
        let l = self.layout;
        let file_len = self.file.len()?;
        let bmap_end = l.bmap_offset + l.bmap_len();
        let slots = data_end
            .checked_sub(l.data_offset)
            .filter(|rel| rel % l.footprint() == 0)
            .map(|rel| rel / l.footprint())
            .filter(|_| data_end >= bmap_end && data_end >= l.header_end);
        let Some(slots) = slots else {
            return Err(internal(format!(
                "cannot end the image at {data_end:#x}: not the end of a slot after the block map"
            )));
        };
        let st = self.state_mut();
        if let Some((b, s)) = st.map.slots().find(|&(_, s)| u64::from(s) >= slots) {
            return Err(internal(format!(
                "cannot end the image at {data_end:#x}: block {b} is in slot {s}"
            )));
        }
        if slots < st.allocated {
            let count = u32::try_from(slots).unwrap_or(u32::MAX);
            self.file
                .write_at(&count.to_le_bytes(), BLOCKS_ALLOCATED_OFFSET)?;
            self.file.sync()?;
            self.state_mut().allocated = slots;
        }
        if data_end >= file_len {
            return Ok(file_len);
        }
        self.file.set_len(data_end)?;
        self.file.sync()?;
        Ok(data_end)
    }
}
