//! The oracle of the `ext4_analysis` target: the ext2/3/4 analyser on a volume held in
//! memory, alone and through the whole-disk analysis (the bare WSL layout).

use std::ops::Range;

use vdisk_core::fs::MemDevice;
use vdisk_core::{BlockDevice, FsAnalyzer, FsVerdict, analyze_disk};

/// Oracles: the device never fails, so neither may the analysis (corruption is a verdict, not
/// an error); free ranges are sorted, disjoint, inside the volume and start on a cluster; the
/// boot block and the superblock (bytes 0..2048) are never free; an untrusted verdict has a
/// reason.
pub fn exercise(bytes: Vec<u8>) {
    let volume = MemDevice::new(bytes);
    let len = volume.size();
    match vdisk_ext4::ANALYZER
        .analyze(&volume)
        .expect("an in-memory volume never fails a read")
    {
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            let free: Vec<Range<u64>> = usage.free.runs().collect();
            for r in &free {
                assert!(r.start < r.end && r.end <= len, "{r:?} outside 0..{len}");
                assert!(r.start >= 2048, "{r:?} frees the superblock");
                assert!(
                    r.start % usage.cluster_size == 0,
                    "free range {r:?} does not start on a {}-byte cluster",
                    usage.cluster_size
                );
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
    analyze_disk(&volume, &[&vdisk_ext4::ANALYZER])
        .expect("an in-memory disk never fails a read: analysis must not return Err");
}
