//! Differencing chains under stress: a crash at every write of a child's compaction, and
//! random chains compacted member by member against a model of what every level shows.

use proptest::prelude::*;
use vdisk_core::testing::{Fault, FaultyFile, Survivors};
use vdisk_core::{BlockDevice, DiskImage, HostFile, MemFile, Mode};

use super::chain_util::{bytes, create_base, create_child, in_memory, open_path, ours, write};
use super::util::{compact, content};

const BS: u64 = 4096;

/// A base with data everywhere and a child whose blocks are: same as parent, zeros over data,
/// partly new, new over nothing; many blocks, so compaction frees and moves.
fn child_over_base() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = create_base(d, "b.vhd", 48 * BS, BS);
    let data: Vec<u8> = (0..48 * BS).map(|i| (i % 253 + 1) as u8).collect();
    write(&base, 0, &data);
    let child = create_child(d, "c.vhd", &base);
    let img = open_path(&child, true).unwrap();
    for b in 0..48u64 {
        let at = b * BS;
        match b % 4 {
            0 => img
                .write_at(&data[at as usize..(at + BS) as usize], at)
                .unwrap(),
            1 => img.write_at(&[0; 512], at + 1024).unwrap(),
            2 => img.write_at(&[b as u8; 100], at + 2000).unwrap(),
            _ => {}
        }
    }
    let model = content(&*img);
    drop(img);
    (bytes(&base), bytes(&child), model)
}

fn open_child(base: &[u8], child: Box<dyn HostFile>) -> Box<dyn DiskImage> {
    Box::new(in_memory(&[base.to_vec()], child).unwrap())
}

fn recovered_ok(base: &[u8], child: Vec<u8>, model: &[u8], final_len: usize, what: &str) {
    let mut img = in_memory(&[base.to_vec()], Box::new(MemFile::from_bytes(child)))
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(content(&img) == model, "{what}: content changed");
    assert!(img.check().unwrap().is_empty(), "{what}: check");
    compact(&mut img, Mode::Prezeroed).unwrap();
    assert!(
        content(&img) == model,
        "{what}: content changed by the re-run"
    );
    assert_eq!(
        img.host_file().len().unwrap() as usize,
        final_len,
        "{what}: re-run size"
    );
}

#[test]
fn child_compaction_survives_a_crash_at_every_write_and_never_shows_other_data() {
    let (base, child, model) = child_over_base();
    let counter = FaultyFile::new(child.clone());
    let mut img = open_child(&base, Box::new(counter.clone()));
    let report = compact(&mut *img, Mode::Prezeroed).unwrap();
    assert_eq!(report.blocks_reclaimed_parent, 12, "{report:?}");
    let total = counter.ops();
    let final_len = counter.live_bytes().len();
    assert!(final_len < child.len());
    drop(img);
    for n in 1..=total {
        let f = FaultyFile::new(child.clone());
        let mut img = open_child(&base, Box::new(f.clone()));
        f.set_limit(n, Fault::Crash);
        assert!(
            compact(&mut *img, Mode::Prezeroed).is_err(),
            "cut {n} fires"
        );
        drop(img);
        let pending = f.pending();
        for s in [
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(1),
            Survivors::Prefix(pending / 2),
            Survivors::Mask(0x5555_5555_5555_5555),
            Survivors::Mask(0xaaaa_aaaa_aaaa_aaaa),
        ] {
            let what = format!("cut {n}/{total}, {s:?}");
            recovered_ok(&base, f.after_crash(s), &model, final_len, &what);
        }
    }
    assert!(total >= 5, "only {total} writes");
}

#[test]
fn child_compaction_failing_for_lack_of_space_at_any_write_can_be_rerun() {
    let (base, child, model) = child_over_base();
    let counter = FaultyFile::new(child.clone());
    let mut img = open_child(&base, Box::new(counter.clone()));
    compact(&mut *img, Mode::Prezeroed).unwrap();
    let total = counter.ops();
    let final_len = counter.live_bytes().len();
    drop(img);
    for n in 1..=total {
        let f = FaultyFile::new(child.clone());
        let mut img = open_child(&base, Box::new(f.clone()));
        f.set_limit(n, Fault::FailOnce(vdisk_core::ErrorKind::NoSpace));
        let err = compact(&mut *img, Mode::Prezeroed).unwrap_err();
        assert_eq!(err.kind(), vdisk_core::ErrorKind::NoSpace, "op {n}");
        assert!(
            content(&*img) == model,
            "op {n}: the open image still reads the same"
        );
        compact(&mut *img, Mode::Prezeroed).unwrap();
        assert!(content(&*img) == model, "op {n}: after the re-run");
        assert_eq!(f.live_bytes().len(), final_len, "op {n}: same final size");
        drop(img);
        recovered_ok(&base, f.live_bytes(), &model, final_len, &format!("op {n}"));
    }
}

/// An exact model of a chain: each level owns whole sectors; a level shows its own bytes in
/// sectors it owns and its parent's view elsewhere (the base owns everything).
struct Model {
    own: Vec<Vec<bool>>,
    data: Vec<Vec<u8>>,
}

impl Model {
    fn new(levels: usize, size: usize) -> Model {
        let sectors = size.div_ceil(512);
        let mut own = vec![vec![false; sectors]; levels];
        own[0].fill(true);
        Model {
            own,
            data: vec![vec![0; size]; levels],
        }
    }

    fn byte(&self, level: usize, i: usize) -> u8 {
        (0..=level)
            .rev()
            .find(|&l| self.own[l][i / 512])
            .map_or(0, |l| self.data[l][i])
    }

    fn view(&self, level: usize) -> Vec<u8> {
        (0..self.data[0].len())
            .map(|i| self.byte(level, i))
            .collect()
    }

    fn write(&mut self, level: usize, off: usize, data: &[u8]) {
        let size = self.data[0].len();
        let (s0, s1) = (off / 512, (off + data.len()).div_ceil(512));
        for s in s0..s1 {
            if !self.own[level][s] {
                for i in s * 512..((s + 1) * 512).min(size) {
                    self.data[level][i] = self.byte(level, i);
                }
                self.own[level][s] = true;
            }
        }
        self.data[level][off..off + data.len()].copy_from_slice(data);
    }
}

/// One write: (level 0 = base, fraction of the size, length, byte or copy-the-parent marker).
type ChainWrite = (usize, f64, usize, Option<u8>);

fn chain_writes() -> impl Strategy<Value = Vec<ChainWrite>> {
    prop::collection::vec(
        (
            0usize..3,
            0.0f64..1.0,
            1usize..9000,
            prop_oneof![Just(None), Just(Some(0u8)), (1u8..=255).prop_map(Some)],
        ),
        1..16,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random 3-level chains with random writes (new bytes, zeros, or bytes equal to what the
    /// parent shows, at any alignment) read as the model says, and compacting any member
    /// keeps every level's view.
    #[test]
    fn compacting_any_member_keeps_every_view(
        writes in chain_writes(),
        member in 0usize..3,
        mode in prop_oneof![Just(Mode::Prezeroed), Just(Mode::Pretrimmed)],
    ) {
        let size = 24 * BS;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = create_base(d, "0.vhd", size, BS);
        let mid = create_child(d, "1.vhd", &base);
        let top = create_child(d, "2.vhd", &mid);
        let paths = [base, mid, top];
        let mut model = Model::new(3, size as usize);
        for &(level, frac, len, byte) in &writes {
            let off = ((size as f64 * frac) as u64).min(size - 1);
            let len = len.min((size - off) as usize);
            let (o, l) = (off as usize, len);
            let data = match byte {
                Some(b) => vec![b; l],
                None if level == 0 => (0..l).map(|i| (i % 7 + 1) as u8).collect(),
                None => model.view(level - 1)[o..o + l].to_vec(),
            };
            write(&paths[level], off, &data);
            model.write(level, o, &data);
        }
        let before: Vec<Vec<u8>> = (0..3).map(|l| model.view(l)).collect();
        for (i, p) in paths.iter().enumerate() {
            prop_assert!(ours(p) == before[i], "level {} differs from the model", i);
        }
        let mut img = open_path(&paths[member], true).unwrap();
        compact(&mut *img, mode).unwrap();
        drop(img);
        for (i, p) in paths.iter().enumerate() {
            prop_assert!(ours(p) == before[i], "level {} changed after compacting {}", i, member);
        }
    }
}

#[test]
fn allocating_child_write_survives_a_crash_at_every_step() {
    let (base, child, old) = child_over_base();
    // Block 3 (untouched in the child) gets a partial-sector write, block 4 (already the
    // child's) too: the child must show, per block, either all old or all new bytes.
    let (off, data) = (3 * BS + 700, vec![0xabu8; BS as usize]);
    let counter = FaultyFile::new(child.clone());
    let img = open_child(&base, Box::new(counter.clone()));
    img.write_at(&data, off).unwrap();
    let new = content(&*img);
    let total = counter.ops();
    drop(img);
    assert_ne!(old, new);
    for n in 1..=total {
        let f = FaultyFile::new(child.clone());
        let img = open_child(&base, Box::new(f.clone()));
        f.set_limit(n, Fault::Crash);
        assert!(img.write_at(&data, off).is_err(), "cut {n} fires");
        drop(img);
        for s in [
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(1),
            Survivors::Mask(0b1010),
        ] {
            let got = in_memory(
                std::slice::from_ref(&base),
                Box::new(MemFile::from_bytes(f.after_crash(s))),
            )
            .unwrap_or_else(|e| panic!("cut {n}, {s:?}: {e}"));
            let c = content(&got);
            for b in [3usize, 4] {
                let r = b * BS as usize..(b + 1) * BS as usize;
                assert!(
                    c[r.clone()] == old[r.clone()] || c[r.clone()] == new[r.clone()],
                    "cut {n}, {s:?}, block {b}"
                );
            }
            got.write_at(&data, off).unwrap();
            assert!(
                content(&got) == new,
                "cut {n}, {s:?}: the write goes through after"
            );
        }
    }
}
