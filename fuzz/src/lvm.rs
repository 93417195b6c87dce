//! The oracle of the `lvm_metadata` target: the text parser and the allocation of a physical
//! volume's extents never panic, and every container they describe is well formed.

use std::ops::Range;

/// Parses `data[8..]` as LVM metadata for a physical volume of `data[..8]` bytes (LE).
///
/// Oracles: no panic; every inner volume's extents are non-empty, inside the volume and
/// disjoint from each other and from the container's free space.
pub fn exercise(data: &[u8]) {
    let Some((size, text)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(results) = vdisk_lvm::examine_text(text, size) else {
        return;
    };
    for c in results.into_iter().flatten() {
        assert_eq!(c.usage.free.len(), size, "free map of the wrong length");
        let mut all: Vec<Range<u64>> = Vec::new();
        for v in &c.volumes {
            for e in &v.extents {
                assert!(e.start < e.end && e.end <= size, "{e:?} outside 0..{size}");
                assert!(
                    !c.usage.free.any_free(e),
                    "{e:?} of {} is also free",
                    v.name
                );
                all.push(e.clone());
            }
            assert!(
                v.untrusted.is_some() || !v.extents.is_empty(),
                "a trusted volume without extents"
            );
        }
        all.sort_by_key(|e| e.start);
        for w in all.windows(2) {
            assert!(w[0].end <= w[1].start, "volumes overlap: {w:?}");
        }
    }
}
