//! Whole-disk analysis against a model: random partition layouts (MBR with logical partitions,
//! GPT, no table), each volume holding a toy file system with a random cluster bitmap, read by
//! a fake analyser. The model knows where it put every volume and which clusters it marked
//! used; the analysis must free exactly the model's free clusters and nothing else.
#![allow(
    clippy::cast_possible_truncation,
    clippy::single_range_in_vec_init,
    clippy::type_complexity,
    reason = "test disks are small and tests run on 64-bit hosts"
)]

use std::ops::Range;

use proptest::prelude::*;

use super::*;
use crate::block::BlockDevice;
use crate::error::Result;
use crate::fs::{FreeMap, FsAnalyzer, FsUsage, FsVerdict};
use crate::partition::tests::build::{BASIC_DATA, Disk};

/// The toy file system: "TOYFS" at 0, cluster size (u32 LE) at 8, cluster count at 12, a dirty
/// byte at 16; the bitmap (bit i = cluster i in use, LSB first) at 512.
#[derive(Debug)]
struct Toy;

static TOY: Toy = Toy;

const MAGIC: &[u8; 5] = b"TOYFS";

impl FsAnalyzer for Toy {
    fn id(&self) -> &'static str {
        "toy"
    }

    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        if volume.size() < 1024 {
            return Ok(FsVerdict::NotMine);
        }
        let mut head = [0u8; 17];
        volume.read_at(&mut head, 0)?;
        if &head[..5] != MAGIC {
            return Ok(FsVerdict::NotMine);
        }
        if head[16] != 0 {
            return Ok(FsVerdict::Untrusted {
                fs: "toy",
                reason: "volume is marked dirty".into(),
            });
        }
        let cs = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
        let n = u64::from(u32::from_le_bytes([head[12], head[13], head[14], head[15]]));
        let mut bitmap = vec![0u8; n.div_ceil(8) as usize];
        volume.read_at(&mut bitmap, 512)?;
        let mut free: Vec<Range<u64>> = (0..n)
            .filter(|&i| bitmap[(i / 8) as usize] & (1 << (i % 8)) == 0)
            .map(|i| i * cs..(i + 1) * cs)
            .collect();
        // A careless analyser: its map is longer than the volume and claims space past the
        // volume's end, which must be cut off.
        free.push(volume.size()..volume.size() + 65536);
        crate::fs::coalesce(&mut free);
        Ok(FsVerdict::Analysed(FsUsage {
            fs: "toy",
            cluster_size: cs,
            free: FreeMap::from_ranges(volume.size() + 65536, cs, free),
            details: Vec::new(),
        }))
    }
}

/// One generated volume: where (sectors), its file system, and the model's free bytes on disk.
#[derive(Debug, Clone)]
struct Vol {
    start: u64,
    len: u64,
    /// None: no file system; Some((cluster size, used bitmap, dirty)).
    fs: Option<(u64, Vec<bool>, bool)>,
}

/// Writes the toy file system of `v` into `disk`; returns its free bytes in disk offsets.
fn put_fs(disk: &mut Disk, v: &Vol, ss: u64) -> Vec<Range<u64>> {
    let Some((cs, used, dirty)) = &v.fs else {
        return Vec::new();
    };
    let at = v.start * ss;
    let n = used.len() as u64;
    let mut head = [0u8; 17];
    head[..5].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&(*cs as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    head[16] = u8::from(*dirty);
    disk.put(at, &head);
    let mut bitmap = vec![0u8; used.len().div_ceil(8)];
    for (i, &u) in used.iter().enumerate() {
        if u {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    disk.put(at + 512, &bitmap);
    if *dirty {
        return Vec::new();
    }
    let mut free: Vec<Range<u64>> = used
        .iter()
        .enumerate()
        .filter(|&(_, &u)| !u)
        .map(|(i, _)| at + i as u64 * cs..at + (i as u64 + 1) * cs)
        .collect();
    crate::fs::coalesce(&mut free);
    free
}

/// A volume strategy: length in sectors, cluster size, random bitmap (the clusters holding
/// the header and bitmap are forced used), dirty flag, or no file system.
fn vol_strategy() -> impl Strategy<Value = (u64, Option<(u64, Vec<bool>, bool)>)> {
    (
        64u64..1024,
        0usize..4,
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 1024),
        0u8..8,
    )
        .prop_map(|(len, csi, dirty_bit, bits, kind)| {
            let cs = 512u64 << csi;
            let n = (len * 512 / cs) as usize;
            let fs = (kind != 0 && n > 1024 / cs as usize).then(|| {
                let mut used: Vec<bool> = bits[..n].to_vec();
                for u in used.iter_mut().take((1024 / cs).max(1) as usize + 1) {
                    *u = true;
                }
                (cs, used, dirty_bit && kind == 1)
            });
            (len, fs)
        })
}

/// Lays out volumes from sector `first` with the given gaps; the scheme decides the table.
fn build(
    scheme: u8,
    vols: &[(u64, Option<(u64, Vec<bool>, bool)>)],
    gaps: &[u64],
) -> (Disk, Vec<Vol>) {
    let ss = 512u64;
    let disk_sectors = 8192u64;
    let mut disk = Disk::new((disk_sectors * ss) as usize, 512);
    let mut placed = Vec::new();
    match scheme {
        // No table: one volume over the whole disk.
        0 => {
            let (_, fs) = vols[0].clone();
            let fs = fs.map(|(cs, mut used, dirty)| {
                used.truncate(((disk_sectors * ss) / cs) as usize);
                (cs, used, dirty)
            });
            placed.push(Vol {
                start: 0,
                len: disk_sectors,
                fs,
            });
        }
        // GPT from the first usable LBA (34).
        1 => {
            let mut next = 34;
            for ((len, fs), gap) in vols.iter().zip(gaps) {
                let start = next + gap;
                if start + len > disk_sectors - 34 {
                    break;
                }
                placed.push(Vol {
                    start,
                    len: *len,
                    fs: fs.clone(),
                });
                next = start + len;
            }
            let parts: Vec<([u8; 16], u64, u64, &str)> = placed
                .iter()
                .map(|v| (BASIC_DATA, v.start, v.start + v.len - 1, "v"))
                .collect();
            disk.gpt(&parts, 128, 128);
        }
        // MBR: the first volume primary, the rest logical partitions behind EBRs.
        _ => {
            let mut next = 1;
            let mut ebrs = Vec::new();
            for (i, ((len, fs), gap)) in vols.iter().zip(gaps).enumerate() {
                let start = next + gap + 1;
                if start + len > disk_sectors {
                    break;
                }
                if i > 0 {
                    ebrs.push(start - 1 - gap / 2);
                }
                placed.push(Vol {
                    start,
                    len: *len,
                    fs: fs.clone(),
                });
                next = start + len;
            }
            let first = &placed[0];
            let mut entries = vec![(0u8, 0x07u8, first.start as u32, first.len as u32)];
            if let Some(&ebr0) = ebrs.first() {
                let end = placed.last().map_or(0, |v| v.start + v.len);
                entries.push((0, 0x0F, ebr0 as u32, (end - ebr0) as u32));
                for (j, &ebr) in ebrs.iter().enumerate() {
                    let v = &placed[j + 1];
                    let this = (0, 0x07, (v.start - ebr) as u32, v.len as u32);
                    let link = ebrs
                        .get(j + 1)
                        .map_or((0, 0, 0, 0), |&n| (0, 0x05, (n - ebr0) as u32, 1));
                    disk.boot_record(ebr * ss, &[this, link]);
                }
            }
            disk.boot_record(0, &entries);
        }
    }
    (disk, placed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The analysis frees exactly the model's free clusters of clean volumes, in disk offsets,
    /// whatever the layout; so with any block size, a block is wholly free (and so reclaimable
    /// as file-system free) only if it holds no used cluster, no dirty or unrecognised volume
    /// and no byte outside the volumes or in the partition tables.
    #[test]
    fn free_space_is_exactly_the_clean_volumes_free_clusters(
        scheme in 0u8..3,
        vols in prop::collection::vec(vol_strategy(), 1..6),
        gaps in prop::collection::vec(0u64..40, 6),
        block_shift in 12u32..17,
    ) {
        let (mut disk, placed) = build(scheme, &vols, &gaps);
        let mut model: Vec<Range<u64>> = Vec::new();
        for v in &placed {
            model.extend(put_fs(&mut disk, v, 512));
        }
        crate::fs::coalesce(&mut model);
        let analysis = analyze_disk(&disk, &[&TOY]).unwrap();
        prop_assert!(!matches!(analysis.layout, Layout::Unknown { .. }), "{:?}", analysis.layout);
        prop_assert_eq!(analysis.volumes.len(), placed.len());
        prop_assert_eq!(analysis.free.runs().collect::<Vec<_>>(), model);

        // Block view: a block wholly inside `free` holds only free clusters of clean volumes.
        let block = 1u64 << block_shift;
        let metadata = match &analysis.layout {
            Layout::Table(t) => t.metadata.clone(),
            _ => Vec::new(),
        };
        for b in 0..disk.size() / block {
            let r = b * block..(b + 1) * block;
            let reclaimed = analysis.free.is_free(&r);
            if reclaimed {
                prop_assert!(metadata.iter().all(|m| m.end <= r.start || r.end <= m.start));
                let v = placed.iter().find(|v| v.start * 512 <= r.start && r.end <= (v.start + v.len) * 512);
                let v = v.expect("a reclaimed block lies inside one volume");
                let (cs, used, dirty) = v.fs.clone().expect("the volume has a file system");
                prop_assert!(!dirty);
                let base = v.start * 512;
                for c in (r.start - base) / cs..(r.end - base).div_ceil(cs) {
                    prop_assert!(!used.get(c as usize).copied().unwrap_or(true), "cluster {} is used", c);
                }
            }
        }
    }
}

#[test]
fn unknown_layouts_and_dirty_or_foreign_volumes_free_nothing() {
    // A table that overlaps itself: unknown, no volume examined.
    let mut d = Disk::new(1 << 20, 512);
    d.boot_record(0, &[(0, 0x07, 64, 512), (0, 0x07, 100, 50)]);
    let a = analyze_disk(&d, &[&TOY]).unwrap();
    assert!(matches!(a.layout, Layout::Unknown { .. }));
    assert!(a.volumes.is_empty() && a.free.is_empty());

    // One dirty toy volume, one empty partition.
    let mut d = Disk::new(1 << 20, 512);
    d.boot_record(0, &[(0, 0x07, 64, 512), (0, 0x83, 600, 400)]);
    let v = Vol {
        start: 64,
        len: 512,
        fs: Some((512, vec![false; 512], true)),
    };
    put_fs(&mut d, &v, 512);
    let a = analyze_disk(&d, &[&TOY]).unwrap();
    assert!(a.free.is_empty());
    assert!(!a.any_trusted());
    assert_eq!(
        a.volumes[0].state,
        VolumeState::Untrusted {
            fs: "toy",
            reason: "volume is marked dirty".into()
        }
    );
    assert_eq!(a.volumes[1].state, VolumeState::Unrecognised);
    assert_eq!(a.volumes[1].name(), "partition 2");
}

#[test]
fn an_analyser_reading_outside_its_volume_makes_it_untrusted() {
    // Cluster count so large the bitmap read runs off the volume.
    let mut d = Disk::new(1 << 20, 512);
    d.boot_record(0, &[(0, 0x07, 64, 4)]);
    let mut head = [0u8; 17];
    head[..5].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&512u32.to_le_bytes());
    head[12..16].copy_from_slice(&100_000u32.to_le_bytes());
    d.put(64 * 512, &head);
    let a = analyze_disk(&d, &[&TOY]).unwrap();
    assert!(
        matches!(&a.volumes[0].state, VolumeState::Untrusted { reason, .. } if reason.contains("outside the volume"))
    );
    assert!(a.free.is_empty());
}

/// An analyser of the whole disk that always answers `Guarded` with the toy bitmap's free
/// space and a hazard whose keep ranges are `KEEP` (or unknown).
#[derive(Debug)]
struct Snapshotted(Option<&'static [Range<u64>]>);

static SNAP_KNOWN: Snapshotted = Snapshotted(Some(&[4096..8192, 20_000..30_000]));
static SNAP_UNKNOWN: Snapshotted = Snapshotted(None);

impl FsAnalyzer for Snapshotted {
    fn id(&self) -> &'static str {
        "snap"
    }

    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        Ok(FsVerdict::Guarded {
            usage: FsUsage {
                fs: "snap",
                cluster_size: 512,
                free: FreeMap::from_ranges(volume.size(), 512, [1024..volume.size()]),
                details: Vec::new(),
            },
            hazard: crate::fs::Hazard {
                id: "snapshots",
                reason: "snapshots would lose their data".into(),
                keep: self.0.map(<[Range<u64>]>::to_vec),
            },
        })
    }
}

#[test]
fn a_guarded_volume_keeps_what_its_hazard_needs_or_is_untrusted_unless_the_hazard_is_accepted() {
    let d = Disk::new(1 << 16, 512);
    let all = vec![1024..1 << 16];

    let a = analyze_disk(&d, &[&SNAP_KNOWN]).unwrap();
    // Kept ranges not on a 512-byte unit keep the whole units they touch.
    let free: Vec<_> = a.free.runs().collect();
    assert_eq!(free, vec![1024..4096, 8192..19_968, 30_208..1 << 16]);
    let g = a.volumes[0].guard.as_ref().unwrap();
    assert_eq!((g.hazard, g.outcome), ("snapshots", GuardOutcome::Kept));

    let a = analyze_disk(&d, &[&SNAP_UNKNOWN]).unwrap();
    assert!(a.free.is_empty());
    assert_eq!(
        a.volumes[0].state,
        VolumeState::Untrusted {
            fs: "snap",
            reason: "snapshots would lose their data".into()
        }
    );
    assert_eq!(
        a.volumes[0].guard.as_ref().unwrap().outcome,
        GuardOutcome::Refused
    );

    // Another hazard's acceptance changes nothing; this one's frees everything.
    let other = AnalysisOptions::default().accepting("something-else");
    assert!(
        analyze_disk_with(&d, &[&SNAP_UNKNOWN], &other)
            .unwrap()
            .free
            .is_empty()
    );
    for analyser in [&SNAP_KNOWN, &SNAP_UNKNOWN] {
        let yes = AnalysisOptions::default().accepting("snapshots");
        let a = analyze_disk_with(&d, &[analyser], &yes).unwrap();
        assert_eq!(a.free.runs().collect::<Vec<_>>(), all);
        assert_eq!(
            a.volumes[0].guard.as_ref().unwrap().outcome,
            GuardOutcome::Accepted
        );
    }
}

mod container;

/// A second reader of the toy format (as if another file system's signature sat in the same
/// place): it claims the same volume and calls all of it free.
#[derive(Debug)]
struct Impostor;

static IMPOSTOR: Impostor = Impostor;

impl FsAnalyzer for Impostor {
    fn id(&self) -> &'static str {
        "impostor"
    }

    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        let mut head = [0u8; 5];
        volume.read_at(&mut head, 0)?;
        if &head != MAGIC {
            return Ok(FsVerdict::NotMine);
        }
        Ok(FsVerdict::Analysed(FsUsage {
            fs: "impostor",
            cluster_size: 512,
            free: FreeMap::from_ranges(volume.size(), 512, [0..volume.size()]),
            details: Vec::new(),
        }))
    }
}

/// Two file systems' signatures on one volume: whichever analyser comes first, none decides,
/// nothing is freed, and the note names both. A volume only one recognises is unaffected.
#[test]
fn a_volume_two_analysers_claim_is_untrusted_whatever_their_order() {
    let mut d = Disk::new(1 << 20, 512);
    d.boot_record(0, &[(0, 0x07, 64, 512), (0, 0x07, 700, 200)]);
    let v = Vol {
        start: 64,
        len: 512,
        fs: Some((512, vec![true; 512], false)),
    };
    put_fs(&mut d, &v, 512);
    for order in [[&TOY as &dyn FsAnalyzer, &IMPOSTOR], [&IMPOSTOR, &TOY]] {
        let a = analyze_disk(&d, &order).unwrap();
        assert!(a.free.is_empty(), "nothing freed: {:?}", a.free.runs());
        match &a.volumes[0].state {
            VolumeState::Untrusted { reason, .. } => {
                assert!(
                    reason.contains("toy") && reason.contains("impostor"),
                    "{reason}"
                );
                assert!(reason.contains("wipefs"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.volumes[1].state, VolumeState::Unrecognised);
    }
    // Alone, each decides as before.
    let a = analyze_disk(&d, &[&TOY]).unwrap();
    assert!(a.any_trusted());
}
