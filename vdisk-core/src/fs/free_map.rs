//! Free space as a bitmap of fixed-size units: memory bounded by the volume's size, whatever
//! the number of free runs.
//!
//! A 1 TiB ext4 whose free space is fragmented into tens of millions of runs would need
//! hundreds of MiB as a list of ranges; as a bitmap of 8 KiB units it needs 16 MiB. The unit
//! is the analyser's allocation unit (cluster), raised to a power of two and to at least
//! `len / MAX_UNITS`, so no map holds more than [`FreeMap::MAX_UNITS`] bits (16 MiB).
//!
//! The map is conservative by construction: a unit is free only when every byte of it was
//! marked free and none was marked used since. Marking a range free sets only the units wholly
//! inside it; marking a range used clears every unit it touches. So rounding can only make the
//! map report less free space than the analyser found, never more.

use std::fmt;
use std::ops::Range;

/// Smallest unit a map uses: one 512-byte sector.
const MIN_UNIT: u64 = 512;

/// Free bytes of a volume or disk: see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct FreeMap {
    /// Bytes covered; the last unit may extend past it (its tail does not exist).
    len: u64,
    /// log2 of the unit in bytes.
    shift: u32,
    /// Bit `i` (LSB first in each word) set: unit `i` is free.
    words: Vec<u64>,
}

impl FreeMap {
    /// Most units a map holds (2^27 bits: 16 MiB of bitmap).
    pub const MAX_UNITS: u64 = 1 << 27;

    /// A map of `len` bytes, all used, whose unit is `granularity` (e.g. the file system's
    /// cluster size) rounded up to a power of two, at least 512, and large enough that the
    /// map stays within [`FreeMap::MAX_UNITS`].
    pub fn new(len: u64, granularity: u64) -> FreeMap {
        let unit = granularity
            .max(MIN_UNIT)
            .max(len.div_ceil(Self::MAX_UNITS))
            .checked_next_power_of_two()
            .unwrap_or(1 << 63);
        let shift = unit.trailing_zeros();
        let units = len.div_ceil(unit);
        let words = usize::try_from(units.div_ceil(64)).unwrap_or(usize::MAX);
        FreeMap {
            len,
            shift,
            words: vec![0; words],
        }
    }

    /// [`FreeMap::new`] with `ranges` marked free.
    pub fn from_ranges(
        len: u64,
        granularity: u64,
        ranges: impl IntoIterator<Item = Range<u64>>,
    ) -> FreeMap {
        let mut map = FreeMap::new(len, granularity);
        for r in ranges {
            map.mark_free(r);
        }
        map
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The unit in bytes: the map's precision.
    pub fn unit(&self) -> u64 {
        1 << self.shift
    }

    fn units(&self) -> u64 {
        self.len.div_ceil(self.unit())
    }

    /// Units wholly inside `r` (clamped to the map); a range reaching `len` takes the last,
    /// partial unit.
    fn inner_units(&self, r: &Range<u64>) -> Range<u64> {
        let end = r.end.min(self.len);
        if r.start >= end {
            return 0..0;
        }
        let first = r.start.div_ceil(self.unit());
        let last = if end == self.len {
            self.units()
        } else {
            end >> self.shift
        };
        first..last.max(first)
    }

    /// Units that hold any byte of `r` (clamped to the map).
    fn touched_units(&self, r: &Range<u64>) -> Range<u64> {
        let end = r.end.min(self.len);
        if r.start >= end {
            return 0..0;
        }
        (r.start >> self.shift)..end.div_ceil(self.unit())
    }

    /// Marks the units wholly inside `r` free. Bytes outside `0..len` are ignored.
    pub fn mark_free(&mut self, r: Range<u64>) {
        let u = self.inner_units(&r);
        self.set_units(u, true);
    }

    /// Marks every unit holding a byte of `r` used.
    pub fn mark_used(&mut self, r: Range<u64>) {
        let u = self.touched_units(&r);
        self.set_units(u, false);
    }

    fn set_units(&mut self, u: Range<u64>, free: bool) {
        let mut i = u.start;
        while i < u.end {
            let bit = i % 64;
            let n = (64 - bit).min(u.end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            if let Some(w) = self.words.get_mut(word_of(i)) {
                if free {
                    *w |= mask;
                } else {
                    *w &= !mask;
                }
            }
            i += n;
        }
    }

    fn unit_free(&self, i: u64) -> bool {
        self.words
            .get(word_of(i))
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Whether every byte of `r` is free. False for an empty range or one reaching past `len`.
    pub fn is_free(&self, r: &Range<u64>) -> bool {
        if r.start >= r.end || r.end > self.len {
            return false;
        }
        let u = self.touched_units(r);
        self.first_unit(u.clone(), false).is_none()
    }

    /// Whether any byte of `r` is free.
    pub fn any_free(&self, r: &Range<u64>) -> bool {
        let u = self.touched_units(r);
        self.first_unit(u, true).is_some()
    }

    /// The first unit in `u` whose state is `free`.
    fn first_unit(&self, u: Range<u64>, free: bool) -> Option<u64> {
        let mut i = u.start;
        while i < u.end {
            let word = self.words.get(word_of(i)).copied().unwrap_or(0);
            let word = if free { word } else { !word };
            let bits = word >> (i % 64);
            if bits != 0 {
                let at = i + u64::from(bits.trailing_zeros());
                return (at < u.end).then_some(at);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// The free space as sorted, disjoint, coalesced byte ranges within `0..len`, computed as
    /// they are read (nothing is stored).
    pub fn runs(&self) -> Runs<'_> {
        Runs { map: self, next: 0 }
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        let mut total: u64 = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        total <<= self.shift;
        // The last unit's tail past `len` does not exist.
        let units = self.units();
        if units > 0 && self.unit_free(units - 1) {
            total -= (units << self.shift) - self.len;
        }
        total
    }

    /// True when nothing is free.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Marks free in `self` the free bytes of `other`, shifted by `offset` (a volume's map into
    /// its disk's map). Units of `self` only partly covered stay used.
    pub fn add_shifted(&mut self, other: &FreeMap, offset: u64) {
        for r in other.runs() {
            self.mark_free(r.start.saturating_add(offset)..r.end.saturating_add(offset));
        }
    }

    /// The free ranges rounded inwards to multiples of `block` (a range reaching `len` keeps
    /// its end: the last block may be short), dropping what covers no whole block. At most one
    /// range per block, so bounded by the number of blocks.
    pub fn whole_blocks(&self, block: u64) -> Vec<Range<u64>> {
        let block = block.max(1);
        self.runs()
            .filter_map(|r| {
                let start = r.start.div_ceil(block).saturating_mul(block);
                let end = if r.end == self.len {
                    r.end
                } else {
                    r.end / block * block
                };
                (start < end).then_some(start..end)
            })
            .collect()
    }
}

/// The index of the word holding unit `i` (units are bounded by [`FreeMap::MAX_UNITS`]).
fn word_of(i: u64) -> usize {
    usize::try_from(i / 64).unwrap_or(usize::MAX)
}

impl fmt::Debug for FreeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let mut list = f.debug_list();
        let mut runs = self.runs();
        list.entries(runs.by_ref().take(SHOWN));
        if runs.next().is_some() {
            list.entry(&format_args!("..."));
        }
        list.finish()
    }
}

impl<'a> IntoIterator for &'a FreeMap {
    type Item = Range<u64>;
    type IntoIter = Runs<'a>;

    fn into_iter(self) -> Runs<'a> {
        self.runs()
    }
}

/// Iterator of [`FreeMap::runs`].
#[derive(Debug, Clone)]
pub struct Runs<'a> {
    map: &'a FreeMap,
    next: u64,
}

impl Iterator for Runs<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        let units = self.map.units();
        let start = self.map.first_unit(self.next..units, true)?;
        let end = self.map.first_unit(start..units, false).unwrap_or(units);
        self.next = end;
        let shift = self.map.shift;
        Some((start << shift)..(end << shift).min(self.map.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_unit_grows_so_a_terabyte_map_stays_within_sixteen_mebibytes() {
        let tib = 1u64 << 40;
        let map = FreeMap::new(tib, 4096);
        assert_eq!(map.unit(), 8192);
        assert!(map.words.len() * 8 <= 16 << 20);
        assert_eq!(FreeMap::new(1 << 20, 1).unit(), 512);
        assert_eq!(FreeMap::new(1 << 20, 3000).unit(), 4096);
        assert_eq!(FreeMap::new(u64::MAX, u64::MAX).unit(), 1 << 63);
    }

    #[test]
    fn marking_is_conservative_at_unit_edges() {
        let mut m = FreeMap::new(10_000, 1024);
        m.mark_free(1000..5000);
        assert_eq!(m.runs().collect::<Vec<_>>(), vec![1024..4096]);
        m.mark_used(3000..3001);
        assert_eq!(m.runs().collect::<Vec<_>>(), vec![1024..2048, 3072..4096]);
        // The last unit is partial: a range reaching the end takes it.
        m.mark_free(9000..20_000);
        assert_eq!(m.runs().last(), Some(9216..10_000));
        assert_eq!(m.free_bytes(), 1024 + 1024 + 784);
        assert!(m.is_free(&(9216..10_000)));
        assert!(!m.is_free(&(9216..10_001)));
        assert!(m.any_free(&(0..1100)) && !m.any_free(&(2048..3072)));
        assert_eq!(
            m.whole_blocks(512),
            vec![1024..2048, 3072..4096, 9216..10_000]
        );
        assert_eq!(m.whole_blocks(2048), vec![]);
        assert_eq!(
            m.whole_blocks(1024),
            vec![1024..2048, 3072..4096, 9216..10_000]
        );
    }

    /// The model: one byte at a time.
    fn model(len: u64, unit: u64, ops: &[(bool, Range<u64>)]) -> Vec<bool> {
        let mut units = vec![false; usize::try_from(len.div_ceil(unit)).unwrap()];
        for (free, r) in ops {
            for (i, u) in units.iter_mut().enumerate() {
                let a = i as u64 * unit;
                let b = (a + unit).min(len);
                let inside = r.start <= a && b <= r.end;
                // An empty range touches nothing (it marks no byte).
                let touches = r.start < r.end && r.start < b && a < r.end;
                if *free && inside {
                    *u = true;
                } else if !*free && touches {
                    *u = false;
                }
            }
        }
        units
    }

    proptest! {
        /// Marks in any order give exactly the unit-by-unit model; runs, free bytes and
        /// `is_free` agree with it.
        #[test]
        fn the_bitmap_equals_the_unit_model(
            len in 1u64..40_000,
            shift in 9u32..12,
            ops in proptest::collection::vec((any::<bool>(), 0u64..45_000, 0u64..9_000), 0..20),
        ) {
            let unit = 1u64 << shift;
            let ops: Vec<(bool, Range<u64>)> =
                ops.into_iter().map(|(f, s, l)| (f, s..s + l)).collect();
            let mut m = FreeMap::new(len, unit);
            for (free, r) in &ops {
                if *free { m.mark_free(r.clone()) } else { m.mark_used(r.clone()) }
            }
            let want = model(len, unit, &ops);
            let mut runs: Vec<Range<u64>> = Vec::new();
            for (i, &f) in want.iter().enumerate() {
                if f {
                    let a = i as u64 * unit;
                    let b = (a + unit).min(len);
                    match runs.last_mut() {
                        Some(l) if l.end == a => l.end = b,
                        _ => runs.push(a..b),
                    }
                }
            }
            prop_assert_eq!(m.runs().collect::<Vec<_>>(), runs.clone());
            prop_assert_eq!(m.free_bytes(), runs.iter().map(|r| r.end - r.start).sum::<u64>());
            prop_assert_eq!(m.is_empty(), runs.is_empty());
            for r in &runs {
                prop_assert!(m.is_free(r));
                prop_assert!(!m.is_free(&(r.start..r.end + 1)));
            }
        }
    }
}
