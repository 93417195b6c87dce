//! Refcounts: the refcount table (u64 offsets of refcount blocks) and the blocks, each a
//! cluster of 2^refcount_order-bit entries, one per host cluster. Widths below a byte are
//! packed from the least significant bit of each byte; wider ones are big-endian.

use vdisk_core::{Error, HostFile, Result};

use crate::format::{REFTABLE_RESERVED, idx};
use crate::header::Layout;

/// Entry `index` of a refcount block of `order` (bits per entry = 2^order). `None` if the
/// block is too short to hold it.
pub(crate) fn get(block: &[u8], order: u32, index: u64) -> Option<u64> {
    let bits = 1u64 << order;
    if order < 3 {
        let per_byte = 8 / bits;
        let byte = *block.get(usize::try_from(index / per_byte).ok()?)?;
        let shift = (index % per_byte) * bits;
        return Some(u64::from(byte >> shift) & ((1 << bits) - 1));
    }
    let width = idx(bits / 8);
    let at = usize::try_from(index).ok()?.checked_mul(width)?;
    let bytes = block.get(at..at + width)?;
    Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// Stores `value` as entry `index` of a refcount block of `order`. `None` (and nothing
/// written) if the block is too short or `value` does not fit the width.
#[allow(
    clippy::cast_possible_truncation,
    reason = "values are masked to 8 bits"
)]
pub(crate) fn set(block: &mut [u8], order: u32, index: u64, value: u64) -> Option<()> {
    let bits = 1u64 << order;
    if bits < 64 && value >> bits != 0 {
        return None;
    }
    if order < 3 {
        let per_byte = 8 / bits;
        let byte = block.get_mut(usize::try_from(index / per_byte).ok()?)?;
        let shift = (index % per_byte) * bits;
        let mask = (((1u64 << bits) - 1) << shift) as u8;
        *byte = (*byte & !mask) | ((value << shift) as u8 & mask);
        return Some(());
    }
    let width = idx(bits / 8);
    let at = usize::try_from(index).ok()?.checked_mul(width)?;
    let bytes = block.get_mut(at..at + width)?;
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (value >> (8 * (width - 1 - i))) as u8;
    }
    Some(())
}

/// The refcount table, read whole: the offset of each refcount block (0: none).
pub(crate) fn read_table(file: &dyn HostFile, l: &Layout) -> Result<Vec<u64>> {
    let mut buf = vec![0u8; usize::try_from(l.reftable_bytes()).unwrap_or(0)];
    file.read_at(&mut buf, l.reftable_offset)?;
    let mut out = Vec::with_capacity(buf.len() / 8);
    for (i, c) in buf.chunks_exact(8).enumerate() {
        let raw = u64::from_be_bytes(c.try_into().unwrap_or_default());
        let at = l.reftable_offset + i as u64 * 8;
        if raw & REFTABLE_RESERVED != 0 {
            return Err(Error::invalid(
                format!("refcount table entry {i} ({raw:#018x}) has reserved bits set"),
                at,
            ));
        }
        if raw != 0
            && (!raw.is_multiple_of(l.cluster_size)
                || raw < l.cluster_size
                || raw
                    .checked_add(l.cluster_size)
                    .is_none_or(|e| e > l.file_len))
        {
            return Err(Error::invalid(
                format!(
                    "refcount block {i} at {raw:#x} is unaligned, in the header cluster or past \
                     the end of the {}-byte file",
                    l.file_len
                ),
                at,
            ));
        }
        out.push(raw);
    }
    Ok(out)
}

/// The stored refcounts of host clusters, read block by block on demand.
#[derive(Debug)]
pub(crate) struct Refcounts<'a> {
    file: &'a dyn HostFile,
    layout: &'a Layout,
    table: &'a [u64],
    /// The block last read: (table index, bytes).
    cached: Option<(u64, Vec<u8>)>,
}

impl<'a> Refcounts<'a> {
    /// A reader over `table` (from [`read_table`]).
    pub fn new(file: &'a dyn HostFile, layout: &'a Layout, table: &'a [u64]) -> Refcounts<'a> {
        Refcounts {
            file,
            layout,
            table,
            cached: None,
        }
    }

    /// The refcount of host cluster `cluster` (0 when no refcount block covers it).
    pub fn get(&mut self, cluster: u64) -> Result<u64> {
        let per = self.layout.refblock_entries();
        let ti = cluster / per;
        let Some(&block) = self.table.get(usize::try_from(ti).unwrap_or(usize::MAX)) else {
            return Ok(0);
        };
        if block == 0 {
            return Ok(0);
        }
        if self.cached.as_ref().is_none_or(|(i, _)| *i != ti) {
            let mut buf = vec![0u8; idx(self.layout.cluster_size)];
            self.file.read_at(&mut buf, block)?;
            self.cached = Some((ti, buf));
        }
        let (_, buf) = self.cached.as_ref().expect("just filled");
        Ok(get(buf, self.layout.refcount_order, cluster % per).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sub_byte_widths_pack_from_the_least_significant_bit() {
        // Order 0: entry 0 is bit 0 of byte 0.
        assert_eq!(get(&[0b0000_0010], 0, 1), Some(1));
        assert_eq!(get(&[0b0000_0010], 0, 0), Some(0));
        // Order 2: entry 1 is the high nibble.
        assert_eq!(get(&[0xa5], 2, 1), Some(0xa));
        // Order 4: big-endian u16.
        assert_eq!(get(&[0, 0, 0x01, 0x02], 4, 1), Some(0x0102));
        assert_eq!(get(&[0x01], 4, 0), None);
    }

    proptest! {
        #[test]
        fn every_refcount_width_round_trips_and_leaves_its_neighbours_alone(
            order in 0u32..=6,
            index in 0u64..512,
            value in any::<u64>(),
            fill in any::<u8>(),
        ) {
            let bits = 1u64 << order;
            let value = if bits == 64 { value } else { value & ((1 << bits) - 1) };
            let mut block = vec![fill; 4096];
            let before: Vec<Option<u64>> =
                (0..512).map(|i| get(&block, order, i)).collect();
            set(&mut block, order, index, value).unwrap();
            prop_assert_eq!(get(&block, order, index), Some(value));
            for i in (0..512).filter(|&i| i != index) {
                prop_assert_eq!(get(&block, order, i), before[idx(i)]);
            }
            if bits < 64 {
                prop_assert!(set(&mut block, order, index, 1 << bits).is_none());
            }
        }
    }
}
