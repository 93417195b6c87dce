//! The oracle of the `xfs_analysis` target: the XFS analyser over a volume held in memory.

use std::ops::Range;

use vdisk_core::fs::MemDevice;
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict};

/// Runs the XFS analyser on `bytes` as one volume.
///
/// Oracles: the device never fails, so neither may the analysis (damage is a verdict); free
/// ranges are sorted, disjoint, inside the volume, start on a block and never cover the
/// primary superblock and AGF sectors; an untrusted verdict has a reason.
pub fn exercise(bytes: Vec<u8>) {
    let volume = MemDevice::new(bytes);
    let len = volume.size();
    let verdict = vdisk_xfs::ANALYZER
        .analyze(&volume)
        .expect("an in-memory volume never fails a read");
    match verdict {
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            let free: Vec<Range<u64>> = usage.free.runs().collect();
            let block = usage.cluster_size;
            assert!(block.is_power_of_two() && block >= 512, "block size {block}");
            for r in &free {
                assert!(r.start < r.end && r.end <= len, "{r:?} outside 0..{len}");
                assert!(r.start % block == 0, "free range {r:?} does not start on a block");
                assert!(r.start >= 1024, "free range {r:?} covers the AG 0 headers");
            }
            for w in free.windows(2) {
                assert!(w[0].end < w[1].start, "{w:?} not sorted and coalesced");
            }
        }
        FsVerdict::Untrusted { reason, .. } => assert!(!reason.is_empty(), "empty reason"),
        FsVerdict::NotMine => {}
        FsVerdict::Container(_) => panic!("only a volume manager answers Container"),
        // A verdict added after this oracle: nothing it knows to check.
        _ => {}
    }
}
