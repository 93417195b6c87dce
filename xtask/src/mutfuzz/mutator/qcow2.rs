//! qcow2 mutations: a header field set to one of its boundary values, an L1/L2 entry or a
//! refcount table entry set to a hostile value, a refcount changed to its neighbours, zero
//! or its width's maximum.

use super::super::layout::qcow2::{self, Header};
use super::super::layout::{Format, Shape, Span};
use super::{Edit, Rng, int_bytes, interesting, read_int};

fn at(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// A header field: a boundary value three times in four, else any interesting value.
pub(super) fn header_field(rng: &mut Rng, b: &[u8], t: &[u64]) -> Edit {
    let h = Header::read(b);
    super::header_field(rng, b, t, Format::Qcow2, &qcow2::FIELDS, |field, len| {
        qcow2::boundary_values(field, &h, len)
    })
}

/// An entry of an L1, L2 or refcount table: mostly the used ones (the first entries of a
/// small image's tables, or any non-zero one).
pub(super) fn table_entry(rng: &mut Rng, s: &Span, b: &[u8], t: &[u64]) -> Edit {
    let entries = (s.len / 8).max(1);
    let entry = |i: u64| read_int(Format::Qcow2, b, at(s.start + 8 * i), 8);
    let used: Vec<u64> = (0..entries.min(1 << 13))
        .filter(|&i| entry(i) != 0)
        .collect();
    let i = match rng.below(4) {
        0 => rng.below(entries),
        1 => rng.below(entries.min(16)),
        _ if !used.is_empty() => rng.pick(&used),
        _ => rng.below(entries),
    };
    let old = entry(i);
    let other = if used.is_empty() {
        0
    } else {
        entry(rng.pick(&used))
    };
    let cluster = Header::read(b).cluster().unwrap_or(65536);
    let values = match s.shape {
        Shape::Qcow2RefcountTable => qcow2::refcount_table_values(old, other, t),
        shape => qcow2::entry_values(old, other, t, cluster, shape == Shape::Qcow2L2),
    };
    let v = if rng.chance(7, 8) {
        rng.pick(&values)
    } else {
        interesting(rng, 8, old, t, b.len() as u64)
    };
    Edit::Write {
        what: s.name,
        at: s.start + 8 * i,
        bytes: v.to_be_bytes().to_vec(),
    }
}

/// One refcount of a refcount block (of the image's width; bytes when it is not sane): a
/// used one lowered, raised, zeroed or set to the maximum, or a free one set.
pub(super) fn refcount(rng: &mut Rng, s: &Span, b: &[u8]) -> Edit {
    let bits = qcow2::refcount_bits(&Header::read(b)).unwrap_or(16);
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let count = s.len * 8 / u64::from(bits);
    // Sub-byte refcounts are edited as their whole byte.
    let get = |i: u64| -> (u64, usize, u64) {
        if bits < 8 {
            let byte = s.start + i * u64::from(bits) / 8;
            let shift = 8 - u64::from(bits) * (i % (8 / u64::from(bits)) + 1);
            let v = read_int(Format::Qcow2, b, at(byte), 1);
            (byte, 1, (v >> shift) & max)
        } else {
            let w = bits as usize / 8;
            let byte = s.start + i * w as u64;
            (byte, w, read_int(Format::Qcow2, b, at(byte), w))
        }
    };
    let used: Vec<u64> = (0..count.min(1 << 16)).filter(|&i| get(i).2 != 0).collect();
    let i = if !used.is_empty() && rng.chance(3, 4) {
        rng.pick(&used)
    } else {
        rng.below(count.clamp(1, 1 << 16))
    };
    let (byte, width, old) = get(i);
    let v = rng.pick(&[
        0,
        old.wrapping_sub(1) & max,
        old.wrapping_add(1) & max,
        max,
        1,
        2,
    ]);
    let new = if bits < 8 {
        let shift = 8 - u64::from(bits) * (i % (8 / u64::from(bits)) + 1);
        let whole = read_int(Format::Qcow2, b, at(byte), 1);
        (whole & !(max << shift)) | (v << shift)
    } else {
        v
    };
    Edit::Write {
        what: "refcount-block",
        at: byte,
        bytes: int_bytes(Format::Qcow2, new, width),
    }
}
