//! Compaction keeps every virtual byte, shrinks the file by exactly the reclaimed footprints,
//! and leaves an image that reopens and checks clean.

use proptest::prelude::*;
use vdisk_core::{BlockIndex, BlockState, DiskImage, Mode, Severity};

use super::util::{check, compact, content, create_dynamic, open};

/// One write of a scenario: where (as a fraction of the size), how long, what byte (0 = zeros).
pub type Write = (f64, usize, u8);

/// Builds a dynamic image of `size` bytes in `block_size` blocks and applies `writes`.
/// Returns the image bytes and the expected virtual content.
pub fn scenario(size: u64, block_size: u64, writes: &[Write]) -> (Vec<u8>, Vec<u8>) {
    let (img, mem) = create_dynamic(size, block_size);
    let size = img.size();
    let mut model = vec![0u8; size as usize];
    for &(frac, len, byte) in writes {
        let off = ((size as f64 * frac) as u64).min(size - 1);
        let len = len.min((size - off) as usize);
        let data = vec![byte; len];
        img.write_at(&data, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    assert_eq!(content(&*img), model);
    (mem.to_vec(), model)
}

pub fn writes_strategy(max_len: usize) -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec(
        (
            0.0f64..1.0,
            1usize..max_len,
            prop_oneof![Just(0u8), 1u8..=255],
        ),
        0..12,
    )
}

fn allocated(img: &dyn DiskImage) -> Vec<(u64, u64)> {
    (0..img.block_count())
        .filter_map(|b| match img.block_state(BlockIndex(b)).unwrap() {
            BlockState::Allocated { host } => Some((b, host.0)),
            _ => None,
        })
        .collect()
}

fn check_compaction(bytes: Vec<u8>, model: &[u8], mode: Mode) -> Result<(), TestCaseError> {
    let before_len = bytes.len() as u64;
    let mut img = open(bytes, true).unwrap();
    let bs = img.block_size();
    let footprint = bs + (bs / 512).div_ceil(8).next_multiple_of(512);
    let report = compact(&mut *img, mode).unwrap();
    prop_assert!(content(&*img) == model, "content kept");
    prop_assert_eq!(
        report.bytes_after,
        before_len - report.blocks_reclaimed * footprint,
        "shorter by exactly the reclaimed footprints"
    );
    let bytes = img.host_file().len().map(|_| ()).and_then(|()| {
        let mut b = vec![0u8; report.bytes_after as usize];
        img.host_file().read_at(&mut b, 0).map(|()| b)
    });
    let bytes = bytes.unwrap();
    drop(img);
    let again = open(bytes.clone(), false).unwrap();
    prop_assert!(content(&*again) == model, "reopened content kept");
    if mode == Mode::Prezeroed {
        for (b, _) in allocated(&*again) {
            let start = (b * bs) as usize;
            let end = ((b + 1) * bs).min(again.size()) as usize;
            prop_assert!(
                model[start..end].iter().any(|&x| x != 0),
                "block {} is all zero but still allocated",
                b
            );
        }
    } else {
        prop_assert_eq!(report.blocks_reclaimed, 0);
    }
    let problems = check(bytes);
    prop_assert!(problems.is_empty(), "{:?}", problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_content_and_shrinks_by_reclaimed_blocks(
        size in 1u64..(3 << 20),
        block_shift in 12u32..=21,
        writes in writes_strategy(300_000),
    ) {
        let block_size = 1u64 << block_shift;
        let (bytes, model) = scenario(size, block_size, &writes);
        check_compaction(bytes.clone(), &model, Mode::Prezeroed)?;
        check_compaction(bytes, &model, Mode::Pretrimmed)?;
    }
}

#[test]
fn compaction_moves_the_last_block_into_a_freed_hole() {
    let bs = 4096u64;
    let (img, mem) = create_dynamic(64 * bs, bs);
    img.write_at(&[1; 4096], 0).unwrap();
    img.write_at(&[0; 4096], 20 * bs).unwrap();
    img.write_at(&[7; 100], 50 * bs + 9).unwrap();
    let model = content(&*img);
    let bytes = mem.to_vec();
    drop(img);
    let mut img = open(bytes, true).unwrap();
    let before = allocated(&*img);
    let report = compact(&mut *img, Mode::Prezeroed).unwrap();
    assert_eq!(report.blocks_reclaimed_zero, 1);
    assert_eq!(report.blocks_moved, 1);
    let after = allocated(&*img);
    assert_eq!(after.len(), 2);
    assert_eq!(
        after[1].1, before[1].1,
        "the last block took the zero block's place"
    );
    assert_eq!(content(&*img), model);
    assert!(
        img.check()
            .unwrap()
            .iter()
            .all(|p| p.severity == Severity::Warning)
    );
}

#[test]
fn truncate_refuses_to_cut_a_block_and_changes_nothing() {
    let (bytes, _) = scenario(64 * 4096, 4096, &[(0.5, 10, 1)]);
    let mut img = open(bytes.clone(), true).unwrap();
    let err = img.as_compactable().unwrap().truncate(2048).unwrap_err();
    assert_eq!(err.kind(), vdisk_core::ErrorKind::Internal);
    let mut now = vec![0u8; bytes.len()];
    img.host_file().read_at(&mut now, 0).unwrap();
    assert_eq!(now, bytes);
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn put32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites an image made by `scenario` the way foreign writers lay files out: blocks in the
/// order given by `order` with `gaps` sectors of garbage before each, and optionally one extra
/// table entry past the virtual size holding an allocated block (qemu's blocks + 1).
fn relayout(bytes: &[u8], order: &[usize], gaps: &[u8], extra_entry: bool) -> Vec<u8> {
    let entries = be32(bytes, 512 + 28) as usize;
    let bs = be32(bytes, 512 + 32) as usize;
    let footprint = bs + (bs / 512).div_ceil(8).next_multiple_of(512);
    let new_entries = entries + usize::from(extra_entry);
    let table_end = 1536 + (new_entries * 4).next_multiple_of(512);
    let mut out = bytes[..1536].to_vec();
    out.resize(table_end, 0xff);
    if extra_entry {
        put32(&mut out, 512 + 28, new_entries as u32);
        put32(&mut out, 512 + 36, 0);
        let sum: u32 = out[512..1536].iter().map(|&b| u32::from(b)).sum();
        put32(&mut out, 512 + 36, !sum);
    }
    let mut blocks: Vec<(usize, Vec<u8>)> = (0..entries)
        .filter_map(|b| {
            let e = be32(bytes, 1536 + 4 * b);
            (e != u32::MAX).then(|| {
                let h = e as usize * 512;
                (b, bytes[h..h + footprint].to_vec())
            })
        })
        .collect();
    if extra_entry {
        blocks.push((entries, vec![0x3c; footprint]));
    }
    let n = blocks.len();
    for i in 0..n {
        let pick = order.get(i).copied().unwrap_or(0) % blocks.len();
        let (b, data) = blocks.swap_remove(pick);
        let gap = usize::from(gaps.get(i).copied().unwrap_or(0) % 4) * 512;
        out.extend(std::iter::repeat_n(0xee, gap));
        let sector = (out.len() / 512) as u32;
        put32(&mut out, 1536 + 4 * b, sector);
        out.extend(data);
    }
    out.extend_from_slice(&bytes[bytes.len() - 512..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_of_foreign_layouts_keeps_content(
        size in 1u64..(1 << 20),
        block_shift in 12u32..=16,
        writes in writes_strategy(100_000),
        order in prop::collection::vec(any::<usize>(), 64),
        gaps in prop::collection::vec(any::<u8>(), 64),
        extra_entry in any::<bool>(),
    ) {
        let (bytes, model) = scenario(size, 1u64 << block_shift, &writes);
        let entries = be32(&bytes, 512 + 28) as usize;
        let extra = extra_entry && !entries.is_multiple_of(128);
        let bytes = relayout(&bytes, &order, &gaps, extra);
        let img = open(bytes.clone(), false).unwrap();
        prop_assert!(content(&*img) == model, "relayout reads the same");
        prop_assert_eq!(img.block_count() as usize, entries + usize::from(extra));
        drop(img);
        for mode in [Mode::Prezeroed, Mode::Pretrimmed] {
            let mut img = open(bytes.clone(), true).unwrap();
            compact(&mut *img, mode).unwrap();
            prop_assert!(content(&*img) == model, "compaction kept content");
            if extra {
                // The block past the virtual size is kept, with its bytes.
                let last = BlockIndex(entries as u64);
                let kept = matches!(img.block_state(last).unwrap(), BlockState::Allocated { .. });
                prop_assert!(kept, "the extra entry's block was kept");
            }
            let mut now = vec![0u8; img.host_file().len().unwrap() as usize];
            img.host_file().read_at(&mut now, 0).unwrap();
            drop(img);
            prop_assert!(check(now.clone()).is_empty());
            let again = open(now, false).unwrap();
            prop_assert!(content(&*again) == model, "reopened content");
        }
    }
}
