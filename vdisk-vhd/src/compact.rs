//! Compaction primitives for dynamic VHDs. Without a journal, every step is ordered so that
//! each state a crash can leave is a valid image with the same content (DESIGN.md section 6):
//! BAT changes are single-sector writes made after the data they point at is durable, and the
//! footer is written at the new end before the file is shortened.

use std::collections::BTreeSet;

use vdisk_core::{
    BlockIndex, Compactable, Error, ErrorKind, FreeAs, HostLayout, Relocation, Result,
};
use zerocopy::IntoBytes;

use crate::footer::DiskType;
use crate::format::{BAT_UNALLOCATED, FOOTER_LEN, SECTOR};
use crate::image::{DynState, VhdImage};

impl VhdImage {
    fn dyn_state(&mut self) -> Result<&mut DynState> {
        self.state_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongType,
                "fixed VHD images have no blocks to reclaim; use --mode retrim",
            )
        })
    }
}

impl Compactable for VhdImage {
    fn host_layout(&self) -> Result<HostLayout> {
        let st = self.read_state().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongType,
                "fixed VHD images have no block layout",
            )
        })?;
        let reserved = st.layout.metadata_ranges();
        Ok(HostLayout {
            data_start: FOOTER_LEN,
            block_footprint: st.layout.footprint(),
            data_offset: Some(st.layout.footprint() - st.layout.block_size),
            alignment: SECTOR,
            reserved,
            trailer_len: FOOTER_LEN,
            end_alignment: SECTOR,
        })
    }

    fn deallocate(&mut self, blocks: &[BlockIndex], to: FreeAs) -> Result<()> {
        self.check_writable()?;
        if to == FreeAs::Zero && self.disk_type == DiskType::Differencing {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a differencing vhd has no zero state: a freed block would show the parent's data",
            ));
        }
        let file = &self.file;
        let st = self.state.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongType,
                "fixed VHD images have no blocks to free",
            )
        })?;
        let st = st.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut changed = BTreeSet::new();
        for b in blocks {
            if b.0 >= st.layout.bat.len() {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "block {b} is past the image's {} blocks",
                        st.layout.bat.len()
                    ),
                ));
            }
        }
        for b in blocks {
            changed.extend(st.layout.bat.set(b.0, BAT_UNALLOCATED));
        }
        if changed.is_empty() {
            return Ok(());
        }
        st.layout.bat.commit(&**file, &changed)
    }

    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        self.check_writable()?;
        let layout = self.host_layout()?;
        let footprint = layout.block_footprint;
        let file = &self.file;
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::WrongType,
                    "fixed VHD images have no blocks to move",
                )
            })?
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        let mut sectors = Vec::with_capacity(moves.len());
        for m in moves {
            let now = st.layout.bat.host(m.block.0);
            if now != Some(m.from.0) {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "block {} is not at {} as the move plan assumes; nothing was moved",
                        m.block, m.from
                    ),
                ));
            }
            let to_end = m.to.0.checked_add(footprint);
            let sector = u32::try_from(m.to.0 / SECTOR).ok();
            let ok = m.to.0 % SECTOR == 0
                && m.to.0 >= layout.data_start
                && to_end.is_some_and(|e| e <= st.footer_pos)
                && sector.is_some_and(|s| s != BAT_UNALLOCATED)
                && layout
                    .reserved
                    .iter()
                    .all(|r| to_end.is_some_and(|e| e <= r.start) || m.to.0 >= r.end);
            let Some(sector) = sector.filter(|_| ok) else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "cannot move block {} to {}: not free block space; nothing was moved",
                        m.block, m.to
                    ),
                ));
            };
            sectors.push(sector);
        }
        debug_assert!(targets_are_free(st, moves, footprint));
        for m in moves {
            file.copy_within(m.from.0, m.to.0, footprint)?;
            copied()?;
        }
        file.sync()?;
        let mut changed = BTreeSet::new();
        for (m, &sector) in moves.iter().zip(&sectors) {
            changed.extend(st.layout.bat.set(m.block.0, sector));
        }
        st.layout.bat.commit(&**file, &changed)
    }

    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        self.check_writable()?;
        let footer = self.footer;
        let file_len = self.file.len()?;
        let st = self.dyn_state()?;
        let footprint = st.layout.footprint();
        let metadata_end = st
            .layout
            .metadata_ranges()
            .iter()
            .map(|r| r.end)
            .max()
            .unwrap_or(0);
        let last_block = st
            .layout
            .bat
            .allocated()
            .map(|(_, host)| host + footprint)
            .max()
            .unwrap_or(0);
        let used_end = metadata_end.max(last_block);
        if used_end > data_end {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "cannot end the image at {data_end:#x}: blocks or metadata reach {used_end:#x}"
                ),
            ));
        }
        let footer_pos = st.footer_pos;
        let new_footer = data_end.next_multiple_of(SECTOR);
        let new_len = new_footer + FOOTER_LEN;
        // The new footer must not overwrite any byte of the current one before it is durable
        // (only possible when a foreign writer left the file at an odd length).
        if new_len >= file_len || new_len > footer_pos {
            return Ok(file_len);
        }
        let file = &self.file;
        file.write_at(footer.as_bytes(), new_footer)?;
        file.sync()?;
        file.set_len(new_len)?;
        file.sync()?;
        if let Some(st) = self.state_mut() {
            st.footer_pos = new_footer;
        }
        Ok(new_len)
    }
}

/// Debug check: no move target overlaps a block that stays, or another target.
fn targets_are_free(st: &DynState, moves: &[Relocation], footprint: u64) -> bool {
    let moving: BTreeSet<u64> = moves.iter().map(|m| m.block.0).collect();
    let mut used: Vec<(u64, u64)> = st
        .layout
        .bat
        .allocated()
        .filter(|(b, _)| !moving.contains(b))
        .map(|(_, h)| (h, h + footprint))
        .chain(moves.iter().map(|m| (m.to.0, m.to.0 + footprint)))
        .chain(moves.iter().map(|m| (m.from.0, m.from.0 + footprint)))
        .collect();
    used.sort_unstable();
    used.windows(2).all(|w| w[0].1 <= w[1].0)
}
