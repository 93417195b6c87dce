//! `$Bitmap` (MFT record 6) to free byte ranges, streamed.
//!
//! Bit `i` of `$Bitmap`'s unnamed `$DATA` stands for cluster `i`, least significant bit first
//! within each byte; 1 = in use. Only bits below the volume's cluster count mean anything: the
//! padding after them (the attribute is rounded up to 8 bytes) and the backup boot sector
//! after the last cluster are never reported free. The bitmap is fed in chunks of any size
//! into core's [`FreeMap`], whose memory is bounded by the volume's size.

use std::ops::Range;

use vdisk_core::fs::FreeMap;

/// Accumulates free runs from consecutive bitmap chunks.
#[derive(Debug, Clone)]
pub(crate) struct FreeRuns {
    cluster_count: u64,
    cluster_size: u64,
    /// Cluster that the next bit fed stands for.
    next: u64,
    /// First cluster of the free run under way.
    open: Option<u64>,
    /// Finished free runs.
    map: FreeMap,
    free_clusters: u64,
}

impl FreeRuns {
    /// A builder for a volume of `volume_len` bytes holding `cluster_count` clusters of
    /// `cluster_size` bytes.
    pub(crate) fn new(cluster_count: u64, cluster_size: u64, volume_len: u64) -> Self {
        FreeRuns {
            cluster_count,
            cluster_size,
            next: 0,
            open: None,
            map: FreeMap::new(volume_len, cluster_size),
            free_clusters: 0,
        }
    }

    fn close(&mut self, start: u64, end: u64) {
        let cs = self.cluster_size;
        self.map
            .mark_free(start.saturating_mul(cs)..end.saturating_mul(cs));
    }

    /// Bitmap bytes still needed to cover every cluster.
    pub(crate) fn bytes_wanted(&self) -> u64 {
        if self.is_complete() {
            return 0;
        }
        // `next` is a multiple of 8 until the last cluster is reached.
        self.cluster_count.div_ceil(8).saturating_sub(self.next / 8)
    }

    /// Feeds the next bytes of the bitmap. Bits past the cluster count are ignored.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let mut words = chunk.chunks_exact(8);
        for word in &mut words {
            if self.next >= self.cluster_count {
                return;
            }
            let w = u64::from_le_bytes(word.try_into().unwrap_or([0xFF; 8]));
            if self.cluster_count - self.next >= 64 && (w == 0 || w == u64::MAX) {
                self.span(w == 0, 64);
            } else {
                for &byte in word {
                    self.byte(byte);
                }
            }
        }
        for &byte in words.remainder() {
            self.byte(byte);
        }
    }

    fn byte(&mut self, byte: u8) {
        if self.next >= self.cluster_count {
            return;
        }
        if self.cluster_count - self.next >= 8 && (byte == 0 || byte == 0xFF) {
            self.span(byte == 0, 8);
            return;
        }
        for bit in 0..8 {
            if self.next >= self.cluster_count {
                return;
            }
            self.span(byte & (1 << bit) == 0, 1);
        }
    }

    /// Records `n` clusters (all within the count) starting at `next`, free or used.
    fn span(&mut self, free: bool, n: u64) {
        if free {
            self.open.get_or_insert(self.next);
            self.free_clusters += n;
        } else if let Some(start) = self.open.take() {
            self.close(start, self.next);
        }
        self.next += n;
    }

    /// Whether every cluster has been covered.
    pub(crate) fn is_complete(&self) -> bool {
        self.next >= self.cluster_count
    }

    /// The free runs in clusters (call once every cluster is covered).
    pub(crate) fn finish(mut self) -> FreeClusters {
        if let Some(start) = self.open.take() {
            self.close(start, self.next.min(self.cluster_count));
        }
        FreeClusters {
            map: self.map,
            cluster_size: self.cluster_size,
            free_clusters: self.free_clusters,
        }
    }
}

/// The free clusters of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FreeClusters {
    map: FreeMap,
    cluster_size: u64,
    free_clusters: u64,
}

impl FreeClusters {
    /// Number of free clusters.
    pub(crate) fn count(&self) -> u64 {
        self.free_clusters
    }

    /// Whether any cluster of `clusters` is free.
    pub(crate) fn any_free(&self, clusters: &Range<u64>) -> bool {
        let cs = self.cluster_size;
        self.map
            .any_free(&(clusters.start.saturating_mul(cs)..clusters.end.saturating_mul(cs)))
    }

    /// The free clusters as byte ranges of the volume.
    #[cfg(test)]
    pub(crate) fn byte_ranges(&self) -> Vec<Range<u64>> {
        self.map.runs().collect()
    }

    /// The free bytes of the volume.
    pub(crate) fn into_map(self) -> FreeMap {
        self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: one bit at a time, no fast paths.
    fn model(bitmap: &[u8], cluster_count: u64) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for c in 0..cluster_count {
            let Some(byte) = bitmap.get(usize::try_from(c / 8).unwrap()) else {
                break;
            };
            if byte & (1 << (c % 8)) == 0 {
                match out.last_mut() {
                    Some(last) if last.end == c => last.end = c + 1,
                    _ => out.push(c..c + 1),
                }
            }
        }
        out
    }

    fn streamed(bitmap: &[u8], cluster_count: u64, cuts: &[usize]) -> FreeClusters {
        let mut runs = FreeRuns::new(cluster_count, 4096, cluster_count * 4096);
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, bitmap.len());
            runs.push(&bitmap[at..cut]);
            at = cut;
        }
        runs.push(&bitmap[at..]);
        runs.finish()
    }

    #[test]
    fn bits_are_lsb_first_and_padding_bits_are_never_free() {
        // Clusters 0 and 3 used, 1, 2, 4..=9 free; 10 clusters, bits 10.. are padding.
        let free = streamed(&[0b0000_1001, 0x00, 0x00], 10, &[]);
        assert_eq!(
            free.byte_ranges(),
            vec![4096..3 * 4096, 4 * 4096..10 * 4096]
        );
        assert_eq!(free.count(), 8);
        assert!(free.any_free(&(2..3)));
        assert!(!free.any_free(&(3..4)));
        assert!(!free.any_free(&(10..11)));
    }

    proptest! {
        /// Streaming in arbitrary chunks gives exactly the bit-by-bit answer: no used cluster
        /// reported free, nothing at or past the cluster count, runs coalesced.
        #[test]
        fn streamed_runs_equal_the_bit_model(
            bitmap in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..300),
            extra in 0u64..70,
            cuts in proptest::collection::vec(0usize..300, 0..6),
            cluster_shift in 9u32..22,
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bits = bitmap.len() as u64 * 8;
            let cluster_count = bits.saturating_sub(extra).max(1);
            let cs = 1u64 << cluster_shift;
            let mut runs = FreeRuns::new(cluster_count, cs, cluster_count * cs);
            let mut at = 0;
            for &cut in &cuts {
                let cut = cut.clamp(at, bitmap.len());
                runs.push(&bitmap[at..cut]);
                at = cut;
            }
            runs.push(&bitmap[at..]);
            prop_assert_eq!(runs.is_complete(), bits >= cluster_count);
            prop_assert_eq!(
                runs.bytes_wanted(),
                cluster_count.div_ceil(8).saturating_sub(bitmap.len() as u64)
            );
            let free = runs.finish();
            let want = model(&bitmap, cluster_count);
            let want_bytes: Vec<_> = want.iter().map(|r| r.start * cs..r.end * cs).collect();
            prop_assert_eq!(free.byte_ranges(), want_bytes);
            prop_assert_eq!(free.count(), want.iter().map(|r| r.end - r.start).sum::<u64>());
            for r in free.byte_ranges() {
                prop_assert!(r.end <= cluster_count * cs);
                for c in r.start / cs..r.end / cs {
                    prop_assert!(bitmap[(c / 8) as usize] & (1 << (c % 8)) == 0);
                }
            }
        }
    }
}
