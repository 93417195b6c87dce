//! The extra host space a compaction needs is one relocation batch, whatever the image: a toy
//! format over a file that counts the host pages it holds (holes hold none).
#![allow(
    clippy::cast_possible_truncation,
    clippy::single_range_in_vec_init,
    reason = "a toy of a few hundred blocks with one metadata range"
)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Mutex;

use super::{CompactOptions, Compactor, GenericCompactor, Mode, RELOCATE_BATCH_BYTES};
use crate::block::{BlockDevice, check_range};
use crate::error::Result;
use crate::host_file::HostFile;
use crate::image::{BlockState, Compactable, DiskImage, FreeAs, HostLayout, ImageKind, Relocation};
use crate::mem_file::MemFile;
use crate::progress::{CancelToken, NoProgress};
use crate::space::HostSpaceMap;
use crate::units::{BlockIndex, HostOffset};

const PAGE: u64 = 4096;
const BLOCK: u64 = 1 << 20;

/// A file that knows which 4 KiB pages hold storage, and the most it ever held.
#[derive(Debug, Default)]
struct CountingFile {
    bytes: MemFile,
    pages: Mutex<(BTreeSet<u64>, u64)>,
    /// Behave like a Windows host: never punch (a punched file would become sparse).
    no_punch: bool,
}

impl CountingFile {
    fn touch(&self, r: Range<u64>, allocate: bool) {
        let mut p = self.pages.lock().unwrap();
        if allocate {
            p.0.extend(r.start / PAGE..r.end.div_ceil(PAGE));
        } else {
            let whole: Vec<u64> =
                p.0.range(r.start.div_ceil(PAGE)..r.end / PAGE)
                    .copied()
                    .collect();
            for page in whole {
                p.0.remove(&page);
            }
        }
        p.1 = p.1.max(p.0.len() as u64 * PAGE);
    }

    /// (bytes held now, the most held at any moment)
    fn held(&self) -> (u64, u64) {
        let p = self.pages.lock().unwrap();
        (p.0.len() as u64 * PAGE, p.1)
    }
}

impl HostFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.bytes.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.bytes.write_at(buf, offset)?;
        self.touch(offset..offset + buf.len() as u64, true);
        Ok(())
    }
    fn len(&self) -> Result<u64> {
        self.bytes.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.bytes.set_len(len)?;
        self.touch(len..u64::MAX - PAGE, false);
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        if self.no_punch {
            return Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                "this host does not punch",
            ));
        }
        self.bytes
            .write_at(&vec![0; usize::try_from(len).unwrap()], offset)?;
        self.touch(offset..offset + len, false);
        Ok(())
    }
    fn punches_holes(&self) -> bool {
        !self.no_punch
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        let p = self.pages.lock().unwrap();
        let len = self.bytes.len()?;
        Ok(p.0
            .range(offset / PAGE..)
            .next()
            .map(|&page| (page * PAGE).max(offset))
            .filter(|&d| d < len))
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        let p = self.pages.lock().unwrap();
        let mut page = offset / PAGE;
        while p.0.contains(&page) {
            page += 1;
        }
        Ok((page * PAGE).max(offset).min(self.bytes.len()?.max(offset)))
    }
    fn is_writable(&self) -> bool {
        true
    }
}

/// A dynamic toy format: a 1 MiB header page area, then 1 MiB blocks; the table is in memory.
#[derive(Debug)]
struct Toy {
    file: CountingFile,
    table: Vec<Option<u64>>,
}

impl BlockDevice for Toy {
    fn size(&self) -> u64 {
        self.table.len() as u64 * BLOCK
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len())?;
        for span in crate::units::block_spans(offset, buf.len(), BLOCK) {
            match self.table[span.block as usize] {
                Some(h) => self.file.read_at(&mut buf[span.buf], h + span.within)?,
                None => buf[span.buf].fill(0),
            }
        }
        Ok(())
    }
}

impl DiskImage for Toy {
    fn format(&self) -> &'static str {
        "toy"
    }
    fn kind(&self) -> ImageKind {
        ImageKind::Dynamic
    }
    fn block_size(&self) -> u64 {
        BLOCK
    }
    fn block_state(&self, block: BlockIndex) -> Result<BlockState> {
        Ok(match self.table[block.0 as usize] {
            Some(h) => BlockState::Allocated {
                host: HostOffset(h),
            },
            None => BlockState::Unallocated,
        })
    }
    fn host_file(&self) -> &dyn HostFile {
        &self.file
    }
    fn host_space(&self) -> Result<HostSpaceMap> {
        HostSpaceMap::of_image(self, BLOCK, std::iter::once(0..BLOCK), [])
    }
    fn as_compactable(&mut self) -> Result<&mut dyn Compactable> {
        Ok(self)
    }
    fn as_compactable_ref(&self) -> Result<&dyn Compactable> {
        Ok(self)
    }
}

impl Compactable for Toy {
    fn host_layout(&self) -> Result<HostLayout> {
        Ok(HostLayout {
            data_start: BLOCK,
            block_footprint: BLOCK,
            data_offset: Some(0),
            alignment: BLOCK,
            trailer_len: 0,
            end_alignment: BLOCK,
        })
    }
    fn deallocate(&mut self, blocks: &[BlockIndex], _to: FreeAs) -> Result<()> {
        for b in blocks {
            self.table[b.0 as usize] = None;
        }
        Ok(())
    }
    fn relocate(&mut self, moves: &[Relocation], copied: &dyn Fn() -> Result<()>) -> Result<()> {
        for m in moves {
            self.file.copy_within(m.from.0, m.to.0, BLOCK)?;
            copied()?;
        }
        for m in moves {
            self.table[m.block.0 as usize] = Some(m.to.0);
        }
        Ok(())
    }
    fn truncate(&mut self, data_end: u64) -> Result<u64> {
        self.file.set_len(data_end)?;
        Ok(data_end)
    }
}

#[test]
fn peak_extra_host_space_of_a_compaction_is_one_batch_whatever_it_moves() {
    // 200 zero blocks that are host holes, then 200 blocks of data: 200 MiB must move into
    // the holes, more than three batches.
    let (zeros, data) = (200u64, 200u64);
    let file = CountingFile::default();
    file.write_at(&[1; 512], 0).unwrap();
    file.set_len(BLOCK * (1 + zeros + data)).unwrap();
    let mut table = Vec::new();
    for i in 0..zeros + data {
        let host = BLOCK * (1 + i);
        if i >= zeros {
            file.write_at(
                &vec![u8::try_from(i % 200 + 1).unwrap(); BLOCK as usize],
                host,
            )
            .unwrap();
        }
        table.push(Some(host));
    }
    let mut toy = Toy { file, table };
    let content = {
        let mut v = vec![0; toy.size() as usize];
        toy.read_at(&mut v, 0).unwrap();
        v
    };
    let (held_before, _) = toy.file.held();
    toy.file.pages.lock().unwrap().1 = held_before;

    let c = GenericCompactor;
    let plan = c
        .plan(
            &toy,
            &CompactOptions::new(Mode::Prezeroed),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(plan.moves.len() as u64, data, "every data block moves");
    c.apply(&mut toy, &plan, &NoProgress, &CancelToken::new())
        .unwrap();

    let (held_after, peak) = toy.file.held();
    assert!(
        peak - held_before <= RELOCATE_BATCH_BYTES,
        "peak extra host space {} MiB exceeds one batch ({} MiB)",
        (peak - held_before) >> 20,
        RELOCATE_BATCH_BYTES >> 20
    );
    assert!(held_after <= held_before, "the host holds more afterwards");
    let mut now = vec![0; toy.size() as usize];
    toy.read_at(&mut now, 0).unwrap();
    assert!(now == content, "content changed");
}

/// A toy of `zeros` allocated zero blocks followed by `data` blocks of data.
fn zeros_then_data(zeros: u64, data: u64, no_punch: bool) -> Toy {
    let file = CountingFile {
        no_punch,
        ..CountingFile::default()
    };
    file.write_at(&[1; 512], 0).unwrap();
    let mut table = Vec::new();
    for i in 0..zeros + data {
        let host = BLOCK * (1 + i);
        let byte = if i >= zeros { 0x5a } else { 0 };
        file.write_at(&vec![byte; BLOCK as usize], host).unwrap();
        table.push(Some(host));
    }
    Toy { file, table }
}

/// Windows never punches (a sparse VHD/VHDX cannot be attached there): retrim, which can only
/// punch, is refused by the plan and by an apply of a plan made elsewhere, before anything is
/// written; the modes that move blocks still give the space back by truncation.
#[test]
fn retrim_is_refused_before_any_write_where_the_host_cannot_punch_and_moving_modes_still_shrink() {
    let c = GenericCompactor;
    let (go, cancel) = (NoProgress, CancelToken::new());
    let mut toy = zeros_then_data(4, 4, true);
    let before = toy.file.bytes.to_vec();
    let err = c
        .plan(&toy, &CompactOptions::new(Mode::Retrim), &go, &cancel)
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Unsupported, "{err}");
    assert!(err.message().contains("sparse"), "{err}");
    assert!(err.message().contains("nothing was changed"), "{err}");
    let punching = zeros_then_data(4, 4, false);
    let plan = c
        .plan(&punching, &CompactOptions::new(Mode::Retrim), &go, &cancel)
        .unwrap();
    assert!(!plan.punch.is_empty(), "the punching host would punch");
    let err = c.apply(&mut toy, &plan, &go, &cancel).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Unsupported, "{err}");
    assert!(
        toy.file.bytes.to_vec() == before,
        "the refused retrim wrote"
    );
    let plan = c
        .plan(&toy, &CompactOptions::new(Mode::Prezeroed), &go, &cancel)
        .unwrap();
    let report = c.apply(&mut toy, &plan, &go, &cancel).unwrap();
    assert_eq!(report.bytes_after, BLOCK * 5, "header + the 4 data blocks");
    let mut now = vec![0; toy.size() as usize];
    toy.read_at(&mut now, 0).unwrap();
    let data_at = 4 * BLOCK as usize;
    assert!(now[..data_at].iter().all(|&b| b == 0) && now[data_at..].iter().all(|&b| b == 0x5a));
}
