//! Containers against a model: a toy container (a toy LVM) holding toy file systems in volumes
//! made of shuffled extents, placed on the whole disk or in a GPT partition. The analysis must
//! free exactly the container's unused extents and the inner volumes' free clusters, mapped
//! back to the disk extent by extent, and nothing of an untrusted, overlapping, misplaced or
//! too deeply nested volume.

use std::ops::Range;

use proptest::prelude::*;

use super::{MAGIC, TOY};
use crate::analysis::{MAX_NESTING, VolumeState, analyze_disk};
use crate::block::BlockDevice;
use crate::error::Result;
use crate::fs::{ContainerUsage, FreeMap, FsAnalyzer, FsUsage, FsVerdict, InnerVolume, coalesce};
use crate::partition::Layout;
use crate::partition::tests::build::{BASIC_DATA, Disk};

/// The toy container: "TOYPV" at 0, extent size (u32 LE) at 8, extent count at 12, volume
/// count at 16, a "claims every extent free" byte at 17; from 512 each volume as (untrusted
/// u8, extent count u8, extent indices u16 LE...). Extent 0 holds the header. Its free space
/// is every extent no volume lists, or every extent but 0 when it claims so (the caller
/// must then still keep the volumes' extents).
#[derive(Debug)]
struct ToyPv;

static TOYPV: ToyPv = ToyPv;

impl FsAnalyzer for ToyPv {
    fn id(&self) -> &'static str {
        "toypv"
    }

    fn analyze(&self, volume: &dyn BlockDevice) -> Result<FsVerdict> {
        if volume.size() < 1024 {
            return Ok(FsVerdict::NotMine);
        }
        let mut head = [0u8; 1024];
        volume.read_at(&mut head, 0)?;
        if &head[..5] != b"TOYPV" {
            return Ok(FsVerdict::NotMine);
        }
        let es = u64::from(u32::from_le_bytes(head[8..12].try_into().unwrap()));
        let n = u64::from(u32::from_le_bytes(head[12..16].try_into().unwrap()));
        let mut volumes = Vec::new();
        let mut listed = vec![false; n as usize];
        let mut at = 512;
        for i in 0..head[16] {
            let (untrusted, count) = (head[at] != 0, usize::from(head[at + 1]));
            at += 2;
            let mut extents = Vec::new();
            for _ in 0..count {
                let e = u64::from(u16::from_le_bytes([head[at], head[at + 1]]));
                at += 2;
                if let Some(l) = listed.get_mut(e as usize) {
                    *l = true;
                }
                extents.push(e * es..(e + 1) * es);
            }
            volumes.push(InnerVolume {
                name: format!("vg/lv{i}"),
                extents,
                untrusted: untrusted.then(|| "a thin volume".to_string()),
            });
        }
        let lying = head[17] != 0;
        let free = (1..n)
            .filter(|&e| lying || !listed[e as usize])
            .map(|e| e * es..(e + 1) * es);
        Ok(FsVerdict::Container(ContainerUsage {
            usage: FsUsage {
                fs: "toypv",
                cluster_size: es,
                free: FreeMap::from_ranges(volume.size(), es, free),
                details: Vec::new(),
            },
            volumes,
        }))
    }
}

/// A toy file system image of `len` bytes: cluster size `cs`, `used` clusters (bit set =
/// used), dirty flag; and its free bytes (volume offsets) if clean.
fn toy_fs(len: u64, cs: u64, used: &[bool], dirty: bool) -> (Vec<u8>, Vec<Range<u64>>) {
    let mut img = vec![0u8; len as usize];
    img[..5].copy_from_slice(MAGIC);
    img[8..12].copy_from_slice(&(cs as u32).to_le_bytes());
    img[12..16].copy_from_slice(&(used.len() as u32).to_le_bytes());
    img[16] = u8::from(dirty);
    for (i, &u) in used.iter().enumerate() {
        if u {
            img[512 + i / 8] |= 1 << (i % 8);
        }
    }
    let free = if dirty {
        Vec::new()
    } else {
        used.iter()
            .enumerate()
            .filter(|&(_, &u)| !u)
            .map(|(i, _)| i as u64 * cs..(i as u64 + 1) * cs)
            .collect()
    };
    (img, free)
}

/// Writes `img` (volume bytes) to the disk `extents` (disk ranges, volume order).
fn scatter(disk: &mut Disk, extents: &[Range<u64>], img: &[u8]) {
    let mut done = 0usize;
    for e in extents {
        let n = ((e.end - e.start) as usize).min(img.len() - done);
        disk.put(e.start, &img[done..done + n]);
        done += n;
    }
}

/// Volume byte ranges `free` mapped to the disk through `extents`.
fn gather(extents: &[Range<u64>], free: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut vo = 0;
    for e in extents {
        let len = e.end - e.start;
        for f in free {
            let (a, b) = (f.start.max(vo), f.end.min(vo + len));
            if a < b {
                out.push(e.start + a - vo..e.start + b - vo);
            }
        }
        vo += len;
    }
    out
}

/// One generated inner volume: extent count, untrusted flag, file-system cluster shift, a
/// used-cluster pattern, dirty flag, whether it holds a file system at all.
type VolGen = (usize, bool, u32, Vec<bool>, bool, bool);

/// Writes a toy container with `vols` at disk bytes `at..at + n * es` (extent 0 the header);
/// extents are dealt to volumes in `order`. Returns the model's free disk ranges.
fn put_container(
    disk: &mut Disk,
    at: u64,
    es: u64,
    n: u64,
    vols: &[VolGen],
    order: &[u16],
    lying: bool,
) -> Vec<Range<u64>> {
    let mut pool: Vec<u64> = (1..n).collect();
    for (i, k) in order.iter().enumerate().take(pool.len()) {
        let j = usize::from(*k) % pool.len();
        pool.swap(i, j);
    }
    let mut head = vec![0u8; 1024];
    head[..5].copy_from_slice(b"TOYPV");
    head[8..12].copy_from_slice(&(es as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    head[17] = u8::from(lying);
    let mut model = Vec::new();
    let mut p = 512;
    let mut count = 0u8;
    for (want, untrusted, shift, bits, dirty, has_fs) in vols {
        let take = (*want).min(pool.len()).min(20);
        if take == 0 || p + 2 + 2 * take > 1024 {
            break;
        }
        let mine: Vec<u64> = pool.drain(..take).collect();
        head[p] = u8::from(*untrusted);
        head[p + 1] = take as u8;
        for (j, e) in mine.iter().enumerate() {
            head[p + 2 + 2 * j..p + 4 + 2 * j].copy_from_slice(&(*e as u16).to_le_bytes());
        }
        p += 2 + 2 * take;
        count += 1;
        let extents: Vec<Range<u64>> = mine
            .iter()
            .map(|e| at + e * es..at + (e + 1) * es)
            .collect();
        let len = take as u64 * es;
        let cs = 512u64 << shift;
        let clusters = (len / cs) as usize;
        if !has_fs || clusters < 3 {
            continue;
        }
        let mut used = bits[..clusters.min(bits.len())].to_vec();
        for u in used.iter_mut().take((1024 / cs).max(1) as usize + 1) {
            *u = true;
        }
        let (img, free) = toy_fs(len, cs, &used, *dirty);
        scatter(disk, &extents, &img);
        if !*untrusted {
            model.extend(gather(&extents, &free));
        }
    }
    head[16] = count;
    disk.put(at, &head);
    // Unlisted extents are the container's free space.
    model.extend(pool.iter().map(|e| at + e * es..at + (e + 1) * es));
    model
}

fn vol_gen() -> impl Strategy<Value = VolGen> {
    (
        1usize..8,
        prop::bool::weighted(0.2),
        0u32..3,
        prop::collection::vec(any::<bool>(), 128),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.9),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// The disk's free space is exactly the container's unlisted extents plus the free
    /// clusters of clean, trusted inner volumes mapped back through their shuffled extents;
    /// whatever the container claims free inside a volume, and whatever an untrusted or dirty
    /// volume holds, stays used.
    #[test]
    fn a_containers_free_space_is_its_unused_extents_and_its_volumes_free_clusters(
        in_gpt in any::<bool>(),
        gap in 0u64..40,
        es_shift in 12u32..14,
        vols in prop::collection::vec(vol_gen(), 0..6),
        order in prop::collection::vec(any::<u16>(), 64),
        lying in any::<bool>(),
    ) {
        let ss = 512u64;
        let sectors = 8192u64;
        let mut disk = Disk::new((sectors * ss) as usize, 512);
        let es = 1u64 << es_shift;
        let (at, len) = if in_gpt {
            let first = 34 + gap;
            let last = sectors - 34;
            disk.gpt(&[(BASIC_DATA, first, last - 1, "pv")], 128, 128);
            (first * ss, (last - first) * ss)
        } else {
            (0, sectors * ss)
        };
        let n = (len / es).min(64);
        let mut model = put_container(&mut disk, at, es, n, &vols, &order, lying);
        coalesce(&mut model);
        let a = analyze_disk(&disk, &[&TOY, &TOYPV]).unwrap();
        prop_assert!(!matches!(a.layout, Layout::Unknown { .. }), "{:?}", a.layout);
        prop_assert_eq!(a.free.runs().collect::<Vec<_>>(), model);
        prop_assert_eq!(a.volumes[0].fs(), Some("toypv"));
        for v in &a.volumes[1..] {
            let inside = v.inside.as_ref().expect("an inner volume");
            prop_assert_eq!(inside.container, 0);
            prop_assert!(v.name().starts_with("toypv volume vg/lv"));
        }
    }
}

/// A disk whose whole extent is a toy container with the given raw volume table.
fn container_disk(es: u64, n: u64, table: &[u8], lying: bool) -> Disk {
    let mut disk = Disk::new((es * n) as usize, 512);
    let mut head = vec![0u8; 512];
    head[..5].copy_from_slice(b"TOYPV");
    head[8..12].copy_from_slice(&(es as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    head[16] = table[0];
    head[17] = u8::from(lying);
    disk.put(0, &head);
    disk.put(512, &table[1..]);
    disk
}

#[test]
fn overlapping_or_misplaced_inner_volumes_make_the_container_untrusted_and_free_nothing() {
    let es = 4096;
    // Two volumes both listing extent 3: overlap.
    let overlap = [2u8, 0, 2, 2, 0, 3, 0, 0, 1, 3, 0];
    // A volume listing extent 40 of a 16-extent container: outside.
    let outside = [1u8, 0, 1, 40, 0];
    for (table, why) in [(&overlap[..], "overlap"), (&outside[..], "outside")] {
        let mut d = container_disk(es, 16, table, false);
        // A clean toy file system in extent 2, which would free most of it.
        let (img, _) = toy_fs(es, 512, &[true, true, true, false, false, false], false);
        d.put(2 * es, &img);
        let a = analyze_disk(&d, &[&TOY, &TOYPV]).unwrap();
        assert!(a.free.is_empty(), "{why}: {:?}", a.free);
        assert_eq!(a.volumes.len(), 1);
        match &a.volumes[0].state {
            VolumeState::Untrusted { fs, reason } => {
                assert_eq!(*fs, "toypv");
                assert!(reason.contains(why), "{reason}");
            }
            s => panic!("{why}: {s:?}"),
        }
    }
}

#[test]
fn an_untrusted_inner_volume_is_reported_and_keeps_its_extents_even_if_the_container_calls_them_free()
 {
    let es = 4096;
    // Volume 0 untrusted over extents 1 and 2; volume 1 trusted over extent 3, unformatted.
    let table = [2u8, 1, 2, 1, 0, 2, 0, 0, 1, 3, 0];
    let d = container_disk(es, 8, &table, true);
    let a = analyze_disk(&d, &[&TOY, &TOYPV]).unwrap();
    // The container claims 1..8 free; 1..4 belong to volumes.
    assert_eq!(a.free.runs().collect::<Vec<_>>(), vec![4 * es..8 * es]);
    assert_eq!(a.volumes.len(), 3);
    assert_eq!(a.volumes[1].name(), "toypv volume vg/lv0 in the whole disk");
    assert_eq!(a.volumes[1].extents, vec![es..3 * es]);
    assert_eq!(
        a.volumes[1].state,
        VolumeState::Untrusted {
            fs: "toypv",
            reason: "a thin volume".into()
        }
    );
    assert_eq!(a.volumes[2].state, VolumeState::Unrecognised);
    assert_eq!(a.volumes[2].inside.as_ref().unwrap().container, 0);
}

/// Puts a toy container over `extents` of `disk` (volume order) whose single volume covers
/// its extents `1..n`; returns the disk extents of that volume.
fn nest(disk: &mut Disk, extents: &[Range<u64>], es: u64) -> Vec<Range<u64>> {
    let len: u64 = extents.iter().map(|e| e.end - e.start).sum();
    let n = len / es;
    let mut head = vec![0u8; 1024];
    head[..5].copy_from_slice(b"TOYPV");
    head[8..12].copy_from_slice(&(es as u32).to_le_bytes());
    head[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    head[16] = 1;
    head[513] = (n - 1) as u8;
    // Listed last to first, so each level reverses the extent order.
    for (j, e) in (1..n).rev().enumerate() {
        head[514 + 2 * j..516 + 2 * j].copy_from_slice(&(e as u16).to_le_bytes());
    }
    scatter(disk, extents, &head);
    let inner: Vec<Range<u64>> = (1..n).rev().map(|e| e * es..(e + 1) * es).collect();
    let mut out = Vec::new();
    for r in inner {
        out.extend(gather(extents, &[r]));
    }
    out
}

#[test]
fn nested_containers_are_opened_up_to_the_depth_limit_and_their_free_space_maps_to_the_disk() {
    let es = 512 * 8;
    let disk_len = es * 32;
    for depth in 1..=MAX_NESTING + 1 {
        let mut d = Disk::new(disk_len as usize, 512);
        let mut extents = vec![0..disk_len];
        for _ in 0..depth {
            extents = nest(&mut d, &extents, es);
        }
        // The innermost volume holds a clean toy file system, all free after its header.
        let len: u64 = extents.iter().map(|e| e.end - e.start).sum();
        let clusters = (len / 512) as usize;
        let mut used = vec![false; clusters];
        used[..3].fill(true);
        let (img, free) = toy_fs(len, 512, &used, false);
        scatter(&mut d, &extents, &img);
        let a = analyze_disk(&d, &[&TOY, &TOYPV]).unwrap();
        if depth <= MAX_NESTING {
            let mut want = gather(&extents, &free);
            coalesce(&mut want);
            assert_eq!(a.free.runs().collect::<Vec<_>>(), want, "depth {depth}");
            assert_eq!(a.volumes.len() as u32, depth + 1);
            assert_eq!(a.volumes.last().unwrap().fs(), Some("toy"));
        } else {
            assert!(a.free.is_empty(), "depth {depth}: {:?}", a.free);
            match &a.volumes.last().unwrap().state {
                VolumeState::Untrusted { reason, .. } => assert!(reason.contains("nested")),
                s => panic!("{s:?}"),
            }
        }
    }
}

#[test]
fn partitions_are_examined_by_content_except_types_that_hold_no_file_system() {
    let mut d = Disk::new(1 << 20, 512);
    // A toy file system in a "linux raid" (0xFD) partition and in a "linux" (0x83) one.
    d.boot_record(0, &[(0, 0xFD, 64, 512), (0, 0x83, 600, 512)]);
    let mut used = vec![false; 100];
    used[..3].fill(true);
    let (img, _) = toy_fs(512 * 512, 512, &used, false);
    d.put(64 * 512, &img);
    d.put(600 * 512, &img);
    let a = analyze_disk(&d, &[&TOY]).unwrap();
    assert!(matches!(
        a.volumes[0].state,
        VolumeState::Skipped { reason } if reason.contains("raid")
    ));
    assert_eq!(a.volumes[1].fs(), Some("toy"));
    assert!(a.free.runs().all(|r| r.start >= 600 * 512));
    assert!(!a.free.is_empty());
}
