//! The oracle of the `btrfs_analysis` target: the btrfs analyser over a volume in memory.

use std::ops::Range;

use vdisk_core::fs::MemDevice;
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict};

/// Runs the btrfs analyser on `bytes` as one volume.
///
/// Oracles: the device never fails, so neither may the analysis (corruption is a verdict,
/// not an error); free ranges are sorted, disjoint and inside the volume; the first MiB
/// (boot area and primary superblock) is never free; an untrusted verdict has a reason.
pub fn exercise(bytes: Vec<u8>) {
    let volume = MemDevice::new(bytes);
    let len = volume.size();
    match vdisk_btrfs::ANALYZER
        .analyze(&volume)
        .expect("an in-memory volume never fails a read")
    {
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            assert!(usage.cluster_size.is_power_of_two());
            let free: Vec<Range<u64>> = usage.free.runs().collect();
            for r in &free {
                assert!(r.start < r.end && r.end <= len, "{r:?} outside 0..{len}");
                assert!(r.start >= 1 << 20, "{r:?} frees the reserved first MiB");
            }
            for w in free.windows(2) {
                assert!(w[0].end < w[1].start, "{w:?} not sorted and disjoint");
            }
        }
        FsVerdict::Untrusted { fs, reason } => {
            assert_eq!(fs, "btrfs");
            assert!(!reason.is_empty(), "empty reason");
        }
        FsVerdict::NotMine => {}
        FsVerdict::Container(_) => panic!("only a volume manager answers Container"),
        // A verdict added after this oracle: nothing it knows to check.
        _ => {}
    }
}
