//! The oracle of the `disk_analysis` target: partition discovery and the NTFS and LVM2
//! analysers over a raw disk held in memory.

use std::ops::Range;

use vdisk_core::fs::MemDevice;
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict, analyze_disk};

/// Sorted, disjoint, non-empty, inside `0..len`.
fn assert_well_formed(ranges: &[Range<u64>], len: u64, what: &str) {
    for r in ranges {
        assert!(
            r.start < r.end && r.end <= len,
            "{what}: {r:?} outside 0..{len}"
        );
    }
    for w in ranges.windows(2) {
        assert!(
            w[0].end < w[1].start,
            "{what}: {w:?} not sorted, disjoint and coalesced"
        );
    }
}

/// Partition discovery and the whole-disk analysis with no file-system analyser: every volume
/// is unrecognised, so nothing may be free; the layout must be consistent.
pub fn partitions(bytes: Vec<u8>) {
    let disk = MemDevice::new(bytes);
    let len = disk.size();
    let analysis = analyze_disk(&disk, &[])
        .expect("an in-memory disk never fails a read: analysis must not return Err");
    assert!(analysis.free.is_empty(), "free space without a file system");
    if let vdisk_core::partition::Layout::Table(table) = &analysis.layout {
        for m in &table.metadata {
            assert!(
                m.start < m.end && m.end <= len,
                "table sectors {m:?} outside 0..{len}"
            );
        }
        for w in table.metadata.windows(2) {
            assert!(
                w[0].end <= w[1].start,
                "table sectors {w:?} not sorted and disjoint"
            );
        }
        for p in &table.partitions {
            assert!(
                p.start.checked_add(p.len).is_some_and(|e| e <= len),
                "{p:?} past the end"
            );
            for m in &table.metadata {
                assert!(
                    p.start + p.len <= m.start || m.end <= p.start,
                    "{p:?} overlaps table sectors {m:?}"
                );
            }
        }
    }
}

/// Runs the whole-disk analysis and the NTFS analyser on the disk as one volume.
///
/// Oracles: the device never fails, so neither may the analysis (corruption is a verdict, not
/// an error); free ranges are well formed, inside the disk, and never overlap the partition
/// tables; a free range lies inside a trusted volume.
pub fn exercise(bytes: Vec<u8>) {
    let disk = MemDevice::new(bytes);
    let len = disk.size();
    let analysis = analyze_disk(&disk, &[&vdisk_ntfs::ANALYZER, &vdisk_lvm::ANALYZER])
        .expect("an in-memory disk never fails a read: analysis must not return Err");
    let free: Vec<Range<u64>> = analysis.free.runs().collect();
    assert_well_formed(&free, len, "disk free ranges");
    if let vdisk_core::partition::Layout::Table(table) = &analysis.layout {
        for m in &table.metadata {
            assert!(
                free
                    .iter()
                    .all(|f| f.end <= m.start || m.end <= f.start),
                "partition table sectors {m:?} reported free"
            );
        }
    }
    for f in &free {
        assert!(
            analysis
                .volumes
                .iter()
                .any(|v| v.range.start <= f.start && f.end <= v.range.end),
            "free range {f:?} lies in no volume"
        );
    }
    match vdisk_ntfs::ANALYZER
        .analyze(&disk)
        .expect("an in-memory volume never fails a read")
    {
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            let free: Vec<Range<u64>> = usage.free.runs().collect();
            assert_well_formed(&free, len, "ntfs free ranges");
            assert!(
                usage.cluster_size.is_power_of_two(),
                "cluster size {}",
                usage.cluster_size
            );
            for r in &free {
                assert!(
                    r.start % usage.cluster_size == 0,
                    "free range {r:?} does not start on a cluster"
                );
            }
        }
        FsVerdict::Untrusted { reason, .. } => assert!(!reason.is_empty(), "empty reason"),
        FsVerdict::NotMine | FsVerdict::Container(_) => {}
        // A verdict added after this oracle: nothing it knows to check.
        _ => {}
    }
}

/// The FAT, exFAT and swap analysers on the input as one volume.
///
/// Oracles: an in-memory volume never fails a read, so no analyser returns `Err`; free ranges
/// are well formed and inside the volume, the map covers exactly the volume; an untrusted
/// verdict names its reason; and what FAT and exFAT call free never includes the first
/// sector (the boot sector every later step depends on).
pub fn fat_family(bytes: Vec<u8>) {
    let disk = MemDevice::new(bytes);
    let len = disk.size();
    let analyzers: [&dyn FsAnalyzer; 3] = [
        &vdisk_fat::ANALYZER,
        &vdisk_exfat::ANALYZER,
        &vdisk_swap::ANALYZER,
    ];
    for a in analyzers {
        match a
            .analyze(&disk)
            .expect("an in-memory volume never fails a read")
        {
            FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
                assert_eq!(usage.free.len(), len, "{}: the map covers the volume", a.id());
                let free: Vec<Range<u64>> = usage.free.runs().collect();
                assert_well_formed(&free, len, a.id());
                assert!(
                    !usage.free.any_free(&(0..512.min(len))),
                    "{}: the boot sector or header is free",
                    a.id()
                );
            }
            FsVerdict::Untrusted { reason, .. } => assert!(!reason.is_empty(), "empty reason"),
            FsVerdict::NotMine => {}
            FsVerdict::Container(_) => panic!("only a volume manager answers Container"),
            // A verdict added after this oracle: nothing it knows to check.
            _ => {}
        }
    }
}
