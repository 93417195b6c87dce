//! The engine's rules, checked on the toy format against a model: random guest writes, zero
//! writes and trims, random slot placement around a table in the middle of the file, every
//! mode.

use std::collections::BTreeSet;
use std::ops::Range;

use proptest::prelude::*;

use super::{Entry, Geometry, SparseFile, ToyImage};
use crate::compact::{
    CompactOptions, CompactPlan, Compactor, GenericCompactor, MetadataMove, Mode, Reason,
};
use crate::error::{ErrorKind, Result};
use crate::extent::GuestExtent;
use crate::image::DiskImage;
use crate::mem_file::MemFile;
use crate::progress::{CancelToken, NoProgress};
use crate::units::BlockIndex;
use crate::zero::is_zero;

/// Five sectors: not a power of two.
pub(super) const BS: u64 = 5 * 512;

/// What one block holds, in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Model {
    Free,
    Data(Vec<u8>),
    Trimmed,
}

pub(super) fn bytes_of(file: &SparseFile) -> Vec<u8> {
    file.0.to_vec()
}

pub(super) fn reopen(bytes: Vec<u8>) -> ToyImage {
    ToyImage::open(Box::new(SparseFile(MemFile::from_bytes(bytes)))).expect("toy opens")
}

pub(super) fn whole(image: &dyn DiskImage) -> Vec<u8> {
    let mut v = vec![0u8; image.size() as usize];
    image.read_at(&mut v, 0).unwrap();
    v
}

pub(super) fn plan(
    image: &dyn DiskImage,
    mode: Mode,
    fs_free: Option<&[Range<u64>]>,
) -> Result<CompactPlan> {
    let mut opts = CompactOptions::new(mode);
    opts.fs_free = fs_free.map(<[_]>::to_vec);
    GenericCompactor.plan(image, &opts, &NoProgress, &CancelToken::new())
}

pub(super) fn compact(
    image: &mut ToyImage,
    mode: Mode,
    fs_free: Option<&[Range<u64>]>,
) -> CompactPlan {
    let p = plan(image, mode, fs_free).expect("plan");
    GenericCompactor
        .apply(image, &p, &NoProgress, &CancelToken::new())
        .expect("apply");
    p
}

/// Builds a toy over a sparse file: `blocks[b]` held in `slots[b]` when it holds one.
pub(super) fn build(
    geo: Geometry,
    blocks: &[Model],
    slots: &[u64],
    fill: u8,
) -> (ToyImage, SparseFile) {
    let file = SparseFile::default();
    let mut it = slots.iter();
    let table: Vec<Entry> = blocks
        .iter()
        .map(|m| match m {
            Model::Free => Entry::Free,
            Model::Data(_) | Model::Trimmed => Entry::Slot {
                slot: *it.next().expect("a slot per held block"),
                trimmed: *m == Model::Trimmed,
            },
        })
        .collect();
    let data = |b: u64| match &blocks[b as usize] {
        // Bytes past the virtual size are never read: garbage.
        Model::Data(d) => {
            let mut v = d.clone();
            v.resize(BS as usize, 0x77);
            v
        }
        _ => vec![0xee; BS as usize],
    };
    let toy = ToyImage::build(Box::new(file.clone()), geo, &table, &data, fill).expect("build");
    (toy, file)
}

#[test]
fn a_block_whose_data_precedes_its_trailer_keeps_data_the_zero_scan_would_skip_as_holes() {
    // Block 0: data in its first sector only, the rest host holes, then its trailer: with the
    // data taken to end the footprint, the scan would look at holes and a trailer and free the
    // block as zeros.
    let geo = Geometry::new(6 * BS, BS, 2, 1024);
    let mut first = vec![0u8; BS as usize];
    first[..512].fill(0x5a);
    let mut last = vec![0u8; BS as usize];
    last[BS as usize - 1] = 1;
    let blocks = vec![
        Model::Data(first),
        Model::Data(vec![0; BS as usize]),
        Model::Data(last),
        Model::Free,
        Model::Free,
        Model::Free,
    ];
    for mode in [Mode::Full, Mode::Prezeroed, Mode::Retrim] {
        let (mut toy, file) = build(geo, &blocks, &[0, 1, 3], 0);
        let before = whole(&toy);
        let p = compact(&mut toy, mode, None);
        assert_eq!(p.reclaim, vec![(BlockIndex(1), Reason::Zero)], "{mode}");
        assert!(
            whole(&reopen(bytes_of(&file))) == before,
            "{mode}: data lost"
        );
    }
}

#[test]
fn a_layout_placing_block_data_past_its_footprint_is_refused_with_the_file_untouched() {
    let geo = Geometry::new(4 * BS, BS, 1, 0);
    let blocks = vec![Model::Data(vec![0; BS as usize]); 4];
    for data_offset in [Some(1024), Some(u64::MAX)] {
        let (mut toy, file) = build(geo, &blocks, &[0, 2, 3, 4], 0);
        toy.data_offset = data_offset;
        let before = bytes_of(&file);
        for mode in [Mode::Full, Mode::Prezeroed, Mode::Retrim] {
            let err = plan(&toy, mode, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
            assert!(err.to_string().contains("past its end"), "{err}");
        }
        assert!(bytes_of(&file) == before, "the file changed");
    }
}

#[test]
fn blocks_move_only_onto_the_slot_grid_measured_from_the_start_of_the_block_area() {
    // Slots of 3072 bytes from 512: the free slot 0 (at 512) is not a multiple of 3072.
    let geo = Geometry::new(4 * BS, BS, 6, 0);
    let blocks = vec![
        Model::Data(vec![1; BS as usize]),
        Model::Data(vec![2; BS as usize]),
        Model::Free,
        Model::Free,
    ];
    let (mut toy, file) = build(geo, &blocks, &[3, 5], 0xab);
    let before = whole(&toy);
    compact(&mut toy, Mode::Pretrimmed, None);
    let after = reopen(bytes_of(&file));
    assert_eq!(after.entry(0).slot(), Some(1));
    assert_eq!(after.entry(1).slot(), Some(0));
    assert!(whole(&after) == before);
    assert_eq!(bytes_of(&file).len() as u64, geo.table().end);
}

/// A guest operation on the model.
#[derive(Debug, Clone)]
enum Op {
    Write { at: u64, len: u64, byte: u8 },
    Zero { at: u64, len: u64 },
    Trim { at: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let span = (any::<u64>(), 1u64..3 * BS);
    prop_oneof![
        3 => (span.clone(), 1u8..=255).prop_map(|((at, len), byte)| Op::Write { at, len, byte }),
        2 => span.clone().prop_map(|(at, len)| Op::Zero { at, len }),
        1 => span.prop_map(|(at, len)| Op::Trim { at, len }),
    ]
}

/// Runs the guest's operations on a model of `n` blocks of a `size`-byte disk.
fn run_ops(n: u64, size: u64, ops: &[Op]) -> Vec<Model> {
    let mut blocks = vec![Model::Free; n as usize];
    let visible = |b: u64| (b * BS)..((b + 1) * BS).min(size);
    for op in ops {
        let (at, len) = match *op {
            Op::Write { at, len, .. } | Op::Zero { at, len } | Op::Trim { at, len } => {
                (at % size, len.min(size - at % size))
            }
        };
        let range = at..at + len;
        for b in at / BS..=(at + len - 1) / BS {
            let v = visible(b);
            let m = &mut blocks[b as usize];
            match *op {
                Op::Trim { .. } if range.start <= v.start && v.end <= range.end => {
                    *m = Model::Trimmed;
                }
                Op::Trim { .. } => {}
                Op::Write { .. } | Op::Zero { .. } => {
                    let byte = if let Op::Write { byte, .. } = *op {
                        byte
                    } else {
                        0
                    };
                    if !matches!(m, Model::Data(_)) {
                        *m = Model::Data(vec![0; (v.end - v.start) as usize]);
                    }
                    let Model::Data(d) = m else { unreachable!() };
                    let (s, e) = (range.start.max(v.start), range.end.min(v.end));
                    d[(s - v.start) as usize..(e - v.start) as usize].fill(byte);
                }
            }
        }
    }
    blocks
}

/// The slots the held blocks take: the first `held + extra` usable slots, shuffled by `seed`.
fn slots(geo: &Geometry, held: usize, extra: usize, mut seed: u64) -> Vec<u64> {
    let mut s: Vec<u64> = (0..)
        .filter(|&k| geo.usable(k))
        .take(held + extra)
        .collect();
    for i in (1..s.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        s.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    s.truncate(held);
    s
}

/// What `mode` must reclaim from `blocks`.
fn expected_reclaim(
    blocks: &[Model],
    size: u64,
    mode: Mode,
    fs: &[Range<u64>],
) -> Vec<(BlockIndex, Reason)> {
    let covered = |v: Range<u64>| fs.iter().any(|r| r.start <= v.start && v.end <= r.end);
    let mut out = Vec::new();
    for (b, m) in blocks.iter().enumerate() {
        let v = (b as u64 * BS)..((b as u64 + 1) * BS).min(size);
        let reason = match m {
            Model::Free => None,
            Model::Trimmed => Some(Reason::Trimmed),
            Model::Data(_) if mode.uses_file_system() && covered(v) => Some(Reason::FsFree),
            Model::Data(d) if mode.scans_for_zeros() && is_zero(d) => Some(Reason::Zero),
            Model::Data(_) => None,
        };
        out.extend(reason.map(|r| (BlockIndex(b as u64), r)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// For random guest writes, zero writes and trims on a toy with a mid-file table and a
    /// five-sector block, in every mode: the engine reclaims exactly what the model says,
    /// every virtual byte reads as before (zeros in reclaimed file-system-free blocks), the
    /// file ends where the model predicts, nothing outside reclaimed blocks changes, the toy's
    /// own check passes, and a second run finds nothing.
    #[test]
    fn every_mode_reclaims_what_the_model_says_and_keeps_every_other_byte(
        n in 3u64..24,
        tail in 0u64..5,
        ops in prop::collection::vec(op(), 0..24),
        slots_before in 0u64..6,
        skew in 0u64..3000,
        extra in 0usize..6,
        seed in any::<u64>(),
        fill in prop_oneof![Just(0u8), Just(0xabu8)],
        fs in prop::collection::vec((any::<u64>(), 1u64..4 * BS), 0..4),
    ) {
        let size = n * BS - tail * 512;
        let geo = Geometry::new(size, BS, slots_before, skew);
        let blocks = run_ops(n, size, &ops);
        let held = blocks.iter().filter(|m| **m != Model::Free).count();
        let slot_of = slots(&geo, held, extra, seed | 1);
        let mut fs_free: Vec<Range<u64>> =
            fs.iter().map(|&(at, len)| at % size..(at % size + len).min(size)).collect();
        crate::fs::coalesce(&mut fs_free);
        for mode in Mode::ALL {
            let (mut toy, file) = build(geo, &blocks, &slot_of, fill);
            let before = bytes_of(&file);
            let old: Vec<Entry> = (0..n).map(|b| toy.entry(b)).collect();
            let model = whole(&toy);
            let p = compact(&mut toy, mode, Some(&fs_free));
            let want = expected_reclaim(&blocks, size, mode, &fs_free);
            prop_assert_eq!(&p.reclaim, &want, "{}", mode);
            let reclaimed: BTreeSet<u64> = want.iter().map(|(b, _)| b.0).collect();

            let after = bytes_of(&file);
            let image = reopen(after.clone());
            let mut expect = model.clone();
            for &(b, r) in &want {
                if r == Reason::FsFree {
                    let v = (b.0 * BS) as usize..(((b.0 + 1) * BS).min(size)) as usize;
                    expect[v].fill(0);
                }
            }
            prop_assert!(whole(&image) == expect, "{}: content", mode);
            prop_assert!(image.check().unwrap().is_empty(), "{}: check", mode);
            prop_assert_eq!(&after[..512], &before[..512], "{}: header", mode);
            let fp = geo.footprint() as usize;
            let footprint = |bytes: &[u8], slot: u64| {
                let r = geo.slot_range(slot);
                bytes[r.start as usize..r.start as usize + fp].to_vec()
            };
            for b in 0..n {
                let now = image.entry(b);
                if reclaimed.contains(&b) {
                    prop_assert_eq!(now, Entry::Free, "{}: block {} freed", mode, b);
                    continue;
                }
                match (old[b as usize], now) {
                    (Entry::Free, now) => prop_assert_eq!(now, Entry::Free),
                    (Entry::Slot { slot: s0, trimmed: t0 }, Entry::Slot { slot: s1, trimmed: t1 }) => {
                        prop_assert_eq!(t0, t1);
                        prop_assert!(footprint(&before, s0) == footprint(&after, s1),
                            "{}: block {} footprint changed in its move", mode, b);
                    }
                    (o, now) => prop_assert!(false, "{}: block {} {:?} became {:?}", mode, b, o, now),
                }
            }
            if mode.moves_blocks() {
                // The survivors fill the lowest usable slots; the file ends after the last of
                // them or after the table.
                let survivors = (0..n).filter(|&b| image.entry(b).slot().is_some()).count();
                let lowest: BTreeSet<u64> =
                    (0..).filter(|&k| geo.usable(k)).take(survivors).collect();
                let used: BTreeSet<u64> = (0..n).filter_map(|b| image.entry(b).slot()).collect();
                prop_assert_eq!(&used, &lowest, "{}: packed", mode);
                let end = lowest.iter().map(|&k| geo.slot_range(k).end).max().unwrap_or(0);
                prop_assert_eq!(after.len() as u64, end.max(geo.table().end), "{}: length", mode);
                prop_assert_eq!(p.bytes_after, after.len() as u64);
            } else {
                // Retrim: the same length; reclaimed footprints are holes, every other byte
                // outside the table is as it was.
                prop_assert_eq!(after.len(), before.len());
                let mut may_change: Vec<Range<u64>> = vec![geo.table()];
                for &b in &reclaimed {
                    let r = geo.slot_range(old[b as usize].slot().unwrap());
                    prop_assert!(is_zero(&after[r.start as usize..r.end as usize]));
                    may_change.push(r);
                }
                for (i, (x, y)) in before.iter().zip(&after).enumerate() {
                    let i = i as u64;
                    if x != y && !may_change.iter().any(|r| r.contains(&i)) {
                        prop_assert!(false, "{}: host byte {:#x} outside reclaimed blocks changed", mode, i);
                    }
                }
            }
            let again = plan(&image, mode, Some(&fs_free)).unwrap();
            prop_assert!(again.reclaim.is_empty() && again.moves.is_empty()
                && again.punch.is_empty() && again.truncate_to.is_none(),
                "{}: a second run finds {:?}", mode, again.report(true));
        }
    }
}

#[test]
fn a_movable_table_moves_down_once_into_the_lowest_hole_and_a_fixed_one_stays() {
    // Slots 0..6 free, the table inside slot 6, blocks in slots 8 and 9.
    for movable in [false, true] {
        let geo = Geometry {
            movable,
            ..Geometry::new(4 * BS, BS, 6, 100)
        };
        let blocks = vec![
            Model::Data(vec![1; BS as usize]),
            Model::Free,
            Model::Data(vec![2; BS as usize]),
            Model::Free,
        ];
        let (mut toy, file) = build(geo, &blocks, &[9, 8], 0xab);
        let before = whole(&toy);
        let p = compact(&mut toy, Mode::Pretrimmed, None);
        let after = reopen(bytes_of(&file));
        assert!(whole(&after) == before, "movable {movable}: content");
        assert!(after.check().unwrap().is_empty());
        assert_eq!(
            (after.entry(0).slot(), after.entry(2).slot()),
            (Some(0), Some(1))
        );
        let table_len = geo.table().end - geo.table().start;
        let (table_at, end) = match movable {
            // Into slot 2, the lowest grid position free once the blocks took slots 0 and 1.
            true => (geo.slot_range(2).start, geo.slot_range(2).start + table_len),
            false => (geo.table_offset, geo.table().end),
        };
        let want: Vec<MetadataMove> = match movable {
            true => vec![MetadataMove {
                from: geo.table(),
                to: table_at,
            }],
            false => Vec::new(),
        };
        assert_eq!(p.metadata_moves, want, "movable {movable}");
        assert_eq!(after.geo.table_offset, table_at, "movable {movable}");
        assert_eq!(bytes_of(&file).len() as u64, end, "movable {movable}");
        let again = plan(&after, Mode::Pretrimmed, None).unwrap();
        assert!(again.moves.is_empty() && again.metadata_moves.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For random guest writes and slot placements around a movable table, in every mode: the
    /// content reads as the model says, the toy's check passes, the table moves at most once
    /// and only down, the file is never longer than with a fixed table, and a second run
    /// reclaims nothing.
    #[test]
    fn a_movable_table_moves_at_most_once_down_and_every_byte_reads_as_before(
        n in 3u64..16,
        ops in prop::collection::vec(op(), 0..16),
        slots_before in 0u64..6,
        skew in 0u64..3000,
        extra in 0usize..6,
        seed in any::<u64>(),
    ) {
        let size = n * BS;
        let fixed = Geometry::new(size, BS, slots_before, skew);
        let geo = Geometry { movable: true, ..fixed };
        let blocks = run_ops(n, size, &ops);
        let held = blocks.iter().filter(|m| **m != Model::Free).count();
        let slot_of = slots(&geo, held, extra, seed | 1);
        for mode in Mode::ALL {
            let (mut toy, file) = build(geo, &blocks, &slot_of, 0);
            let model = whole(&toy);
            let p = compact(&mut toy, mode, None);
            let image = reopen(bytes_of(&file));
            prop_assert!(whole(&image) == model, "{}: content", mode);
            prop_assert!(image.check().unwrap().is_empty(), "{}: check", mode);
            prop_assert!(p.metadata_moves.len() <= 1, "{}", mode);
            prop_assert!(image.geo.table_offset <= geo.table_offset, "{}", mode);
            let (mut toy_fixed, file_fixed) = build(fixed, &blocks, &slot_of, 0);
            compact(&mut toy_fixed, mode, None);
            prop_assert!(bytes_of(&file).len() <= bytes_of(&file_fixed).len(), "{}: length", mode);
            let again = plan(&image, mode, None).unwrap();
            prop_assert!(again.reclaim.is_empty(), "{}: a second run reclaims", mode);
        }
    }
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one free range is the case under test"
)]
fn an_opaque_extent_is_never_freed_or_read_as_zeros_and_moves_only_whole() {
    // Blocks 0 (all zeros), 1 (data the file system calls free) and 3 (trimmed) are shared:
    // opaque. Block 2 is plain zeros. They sit high, above free slots.
    let geo = Geometry::new(5 * BS, BS, 12, 0);
    let blocks = vec![
        Model::Data(vec![0; BS as usize]),
        Model::Data(vec![7; BS as usize]),
        Model::Data(vec![0; BS as usize]),
        Model::Trimmed,
        Model::Free,
    ];
    let fs_free = vec![0..5 * BS];
    for mode in Mode::ALL {
        let (mut toy, file) = build(geo, &blocks, &[8, 9, 10, 11], 0xab);
        for b in [0, 1, 3] {
            toy.make_opaque(b).unwrap();
        }
        let before = bytes_of(&file);
        let model = whole(&toy);
        let p = compact(&mut toy, mode, Some(&fs_free));
        let freed: Vec<u64> = p.reclaim.iter().map(|(b, _)| b.0).collect();
        // Pretrimmed frees trimmed blocks only, and the one trimmed block is opaque.
        let want = if mode == Mode::Pretrimmed {
            vec![]
        } else {
            vec![2]
        };
        assert_eq!(freed, want, "{mode}: only the plain block is freed");
        let after = reopen(bytes_of(&file));
        assert!(after.check().unwrap().is_empty(), "{mode}");
        // Even the file-system-free opaque block keeps its data: nothing reads differently.
        assert!(whole(&after) == model, "{mode}: content");
        for b in [0u64, 1, 3] {
            let (s0, s1) = (
                reopen(before.clone()).entry(b).slot().unwrap(),
                after.entry(b).slot().unwrap(),
            );
            let fp = |bytes: &[u8], s: u64| {
                let r = geo.slot_range(s);
                bytes[r.start as usize..r.end as usize].to_vec()
            };
            assert!(
                fp(&before, s0) == fp(&bytes_of(&file), s1),
                "{mode}: block {b} moved whole, its footprint unchanged"
            );
            assert!(
                mode == Mode::Retrim || s1 < s0,
                "{mode}: block {b} moved down"
            );
            let ext = after.guest_extents(b * BS..(b + 1) * BS).unwrap();
            assert!(
                matches!(ext[..], [(_, GuestExtent::Opaque { .. })]),
                "{mode}"
            );
        }
    }
}

#[test]
fn a_host_space_map_that_disagrees_with_the_allocation_map_is_refused_with_the_file_untouched() {
    let geo = Geometry::new(4 * BS, BS, 6, 0);
    let blocks = vec![Model::Data(vec![0; BS as usize]); 4];
    let (mut toy, file) = build(geo, &blocks, &[7, 8, 9, 10], 0);
    toy.misreport_space = true;
    let before = bytes_of(&file);
    for mode in Mode::ALL {
        let err = plan(&toy, mode, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "{mode}: {err}");
        assert!(err.to_string().contains("host space map"), "{err}");
    }
    assert!(bytes_of(&file) == before, "the file changed");
}

#[test]
fn a_metadata_move_planned_for_another_image_is_refused_before_it_writes() {
    // Planned while the table is movable, applied after it became fixed (another open).
    let geo = Geometry {
        movable: true,
        ..Geometry::new(2 * BS, BS, 6, 100)
    };
    let blocks = vec![Model::Data(vec![1; BS as usize]), Model::Free];
    let (toy, file) = build(geo, &blocks, &[8], 0);
    let p = plan(&toy, Mode::Pretrimmed, None).unwrap();
    assert_eq!(p.metadata_moves.len(), 1);
    let mut bytes = bytes_of(&file);
    bytes[48..56].copy_from_slice(&0u64.to_le_bytes()); // the header's movable flag
    let other = SparseFile(MemFile::from_bytes(bytes.clone()));
    let mut fixed = ToyImage::open(Box::new(other.clone())).unwrap();
    let err = GenericCompactor
        .apply(&mut fixed, &p, &NoProgress, &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("not a movable"), "{err}");
    assert!(bytes_of(&other) == bytes, "the file changed");
}
