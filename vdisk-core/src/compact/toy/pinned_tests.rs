//! Pinned blocks ([`BlockState::Pinned`]) on the toy: kept exactly where they are by every
//! mode (never freed, moved, scanned for zeros or punched), their bytes fixed metadata, while
//! the rest of the image compacts around them; crash cuts included.

use super::engine_tests::{BS, Model, build, bytes_of, compact, plan, reopen, whole};
use super::{Geometry, ToyImage};
use crate::compact::{Compactor, GenericCompactor, Mode};
use crate::error::ErrorKind;
use crate::extent::{GuestExtent, extents_from_block_states};
use crate::host_file::HostFile;
use crate::image::{BlockState, DiskImage, image_info};
use crate::mem_file::MemFile;
use crate::progress::{CancelToken, NoProgress};
use crate::space::HostUse;
use crate::testing::{ALL_FAULTS, CrashCase, cut_each, noise, report_cuts};
use crate::units::BlockIndex;

/// Six blocks, all held high above free slots 1..=7 (the table covers slot 0): 0 pinned and
/// all zeros, 1 pinned data the file system calls free, 2 plain zeros, 3 plain data, 4
/// pinned data (the last slot), 5 trimmed. Returns the toy, its file and each block's slot.
fn pinned_toy() -> (ToyImage, super::SparseFile, Vec<u64>) {
    let geo = Geometry::new(6 * BS, BS, 0, 0);
    let blocks = vec![
        Model::Data(vec![0; BS as usize]),
        Model::Data(noise(BS as usize, 1)),
        Model::Data(vec![0; BS as usize]),
        Model::Data(noise(BS as usize, 3)),
        Model::Data(noise(BS as usize, 4)),
        Model::Trimmed,
    ];
    // Block 1 sits below block 3, block 4 above it: the plain blocks must move around both.
    let slots = vec![11, 8, 12, 10, 13, 9];
    let (mut toy, file) = build(geo, &blocks, &slots, 0xab);
    for b in [0, 1, 4] {
        toy.make_pinned(b).unwrap();
    }
    (toy, file, slots)
}

fn slot_bytes(bytes: &[u8], geo: &Geometry, slot: u64) -> Vec<u8> {
    let r = geo.slot_range(slot);
    bytes[r.start as usize..r.end as usize].to_vec()
}

#[test]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "one free range is the case under test"
)]
fn a_pinned_block_is_never_freed_moved_scanned_or_punched_in_any_mode_and_the_rest_compacts_around_it()
 {
    let fs_free = vec![0..6 * BS];
    for mode in Mode::ALL {
        let (mut toy, file, slots) = pinned_toy();
        let geo = toy.geo;
        let before = bytes_of(&file);
        let content = whole(&toy);
        let p = compact(&mut toy, mode, Some(&fs_free));
        let freed: Vec<u64> = p.reclaim.iter().map(|(b, _)| b.0).collect();
        let want: Vec<u64> = match mode {
            Mode::Pretrimmed => vec![5],
            Mode::Prezeroed => vec![2, 5],
            // The file system calls every block free: every block but the pinned ones goes.
            _ => vec![2, 3, 5],
        };
        assert_eq!(freed, want, "{mode}: pinned blocks 0, 1, 4 are never freed");
        assert!(
            p.moves.iter().all(|m| ![0, 1, 4].contains(&m.block.0)),
            "{mode}: a pinned block is never moved: {:?}",
            p.moves
        );
        assert_eq!(
            p.blocks_allocated, 6,
            "{mode}: pinned blocks count as allocated"
        );
        for b in [0u64, 1, 4] {
            let r = geo.slot_range(slots[b as usize]);
            assert!(
                p.punch.iter().all(|x| x.end <= r.start || r.end <= x.start),
                "{mode}: block {b}'s bytes are never punched"
            );
        }
        let after_bytes = bytes_of(&file);
        let after = reopen(after_bytes.clone());
        assert!(after.check().unwrap().is_empty(), "{mode}");
        for b in [0u64, 1, 4] {
            let s = slots[b as usize];
            assert_eq!(
                after.entry(b).slot(),
                Some(s),
                "{mode}: block {b} stays put"
            );
            assert!(
                slot_bytes(&before, &geo, s) == slot_bytes(&after_bytes, &geo, s),
                "{mode}: block {b}'s bytes are unchanged"
            );
            assert!(
                matches!(after.block_state(BlockIndex(b)).unwrap(), BlockState::Pinned { host } if host.0 == geo.slot_range(s).start),
                "{mode}"
            );
        }
        // Only what was freed reads differently, and only as zeros.
        let got = whole(&after);
        for b in 0..6usize {
            let r = b * BS as usize..(b + 1) * BS as usize;
            match freed.contains(&(b as u64)) {
                true => assert!(got[r].iter().all(|&x| x == 0), "{mode}: block {b}"),
                false => assert!(got[r.clone()] == content[r], "{mode}: block {b} content"),
            }
        }
        if mode.moves_blocks() {
            // The plain blocks that survive (where the file system is not asked) move down
            // below the pinned blocks; the file ends with the last pinned block, never
            // before it.
            for b in [2u64, 3].into_iter().filter(|b| !freed.contains(b)) {
                let s = after.entry(b).slot().unwrap();
                assert!(
                    (1..8).contains(&s),
                    "{mode}: block {b} moves down, to slot {s}"
                );
            }
            assert_eq!(
                after_bytes.len() as u64,
                geo.slot_range(13).end,
                "{mode}: the file ends with the highest pinned block"
            );
        }
    }
}

#[test]
fn a_pinned_blocks_host_bytes_are_fixed_metadata_and_its_default_extent_is_data_with_no_offset() {
    let (toy, _, slots) = pinned_toy();
    let space = toy.host_space().unwrap();
    let r = toy.geo.slot_range(slots[0]);
    assert_eq!(space.use_at(r.start), Some(HostUse::FIXED));
    assert_eq!(space.use_at(r.end - 1), Some(HostUse::FIXED));
    assert!(
        space
            .blocks()
            .iter()
            .all(|(b, _)| ![0, 1, 4].contains(&b.0))
    );
    let state = toy.block_state(BlockIndex(0)).unwrap();
    assert_eq!(state.host(), None, "a pinned block has no footprint");
    assert!(state.stored());
    assert_eq!(image_info(&toy).unwrap().allocated_blocks, 6);
    // The toy's own extent map says opaque; the default one, from the state alone, data read
    // through the guest view.
    assert!(matches!(
        toy.guest_extents(0..BS).unwrap()[..],
        [(_, GuestExtent::Opaque { .. })]
    ));
    assert_eq!(
        extents_from_block_states(&toy, 0..BS).unwrap(),
        vec![(0..BS, GuestExtent::Data { host: None })]
    );
}

#[test]
fn a_plan_that_frees_or_moves_a_block_pinned_since_is_refused_before_anything_is_written() {
    for mode in [Mode::Prezeroed, Mode::Pretrimmed] {
        // Planned while block 2 (zeros) and block 3 (data) were plain; applied once pinned.
        let (toy, file, _) = pinned_toy();
        let p = plan(&toy, mode, None).unwrap();
        drop(toy);
        assert!(
            p.reclaim.iter().any(|(b, _)| b.0 == 2) || p.moves.iter().any(|m| m.block.0 == 3),
            "{mode}: the plan frees block 2 or moves block 3"
        );
        let mut other = ToyImage::open(Box::new(file.clone())).unwrap();
        other.make_pinned(2).unwrap();
        other.make_pinned(3).unwrap();
        let pinned = bytes_of(&file);
        let err = GenericCompactor
            .apply(&mut other, &p, &NoProgress, &CancelToken::new())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "{mode}: {err}");
        assert!(err.to_string().contains("pinned"), "{err}");
        assert!(bytes_of(&file) == pinned, "{mode}: nothing was written");
    }
}

fn open(file: Box<dyn HostFile>) -> crate::Result<Box<dyn DiskImage>> {
    Ok(Box::new(ToyImage::open(file)?))
}

#[test]
fn every_cut_of_a_compaction_around_pinned_blocks_keeps_them_in_place_and_reads_as_before() {
    let (toy, file, slots) = pinned_toy();
    drop(toy);
    let original = bytes_of(&file);
    let geo = reopen(original.clone()).geo;
    for mode in [Mode::Prezeroed, Mode::Pretrimmed] {
        let (kept, slots) = (original.clone(), slots.clone());
        let c = CrashCase::new(
            format!("toy {mode} around pinned blocks"),
            original.clone(),
            open,
            |b| open(Box::new(MemFile::from_bytes(b))),
            move |image| crate::testing::compact(image, mode, None).map(|_| ()),
            move |bytes: Vec<u8>| match ToyImage::open(Box::new(MemFile::from_bytes(bytes.clone())))
            {
                Err(e) => vec![e.to_string()],
                Ok(t) => {
                    let mut errs: Vec<String> =
                        t.check().unwrap().into_iter().map(|p| p.message).collect();
                    for b in [0u64, 1, 4] {
                        let s = slots[b as usize];
                        if t.entry(b).slot() != Some(s)
                            || slot_bytes(&bytes, &geo, s) != slot_bytes(&kept, &geo, s)
                        {
                            errs.push(format!("pinned block {b} moved or changed"));
                        }
                    }
                    errs
                }
            },
        );
        let stats = cut_each(&c, &ALL_FAULTS);
        let cuts = report_cuts(&c.name, &ALL_FAULTS, &stats);
        assert!(
            cuts >= 3,
            "{mode}: the compaction writes ({cuts} cut points)"
        );
        assert_eq!(
            stats[0].final_len,
            geo.slot_range(13).end,
            "{mode}: the file ends with the last pinned block"
        );
    }
}
