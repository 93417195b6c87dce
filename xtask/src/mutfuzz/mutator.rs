//! The field-aware mutator: picks a structure by weight and changes a field, an entry or some
//! bytes of it; or cuts or extends the file; or plants the other format's signature in guest
//! data. Half of the mutations get their checksums recomputed so they pass the checksum gates.
//! The qcow2 field and entry mutations are in [`qcow2`].

use std::fmt;

use super::layout::{self, Format, Shape, Span};

mod qcow2;

/// Deterministic pseudo-random numbers (xorshift64*): a case is replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for case `case` of run `seed`.
    pub fn new(seed: u64, case: u64) -> Rng {
        let mut x = (seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        Rng(x | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One change to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Overwrite bytes at an offset (within the file; clipped).
    Write {
        /// Structure name, for reports.
        what: &'static str,
        /// File offset.
        at: u64,
        /// New bytes.
        bytes: Vec<u8>,
    },
    /// Cut the file to this length.
    Truncate(u64),
    /// Append this many bytes of `fill`.
    Extend(u64, u8),
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Write { what, at, bytes } if bytes.len() <= 8 => {
                write!(f, "{what}@{at:#x}={}", hex(bytes))
            }
            Edit::Write { what, at, bytes } => {
                write!(f, "{what}@{at:#x}:{} bytes", bytes.len())
            }
            Edit::Truncate(n) => write!(f, "truncate({n:#x})"),
            Edit::Extend(n, b) => write!(f, "extend({n:#x},{b:#04x})"),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A mutation: edits applied in order, then (if `fix`) checksums recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The edits.
    pub edits: Vec<Edit>,
    /// Recompute checksums after the edits.
    pub fix: bool,
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e: Vec<String> = self.edits.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}{}",
            e.join(" "),
            if self.fix { " +checksums" } else { "" }
        )
    }
}

impl Mutation {
    /// `original` with the mutation applied.
    pub fn apply(&self, format: Format, original: &[u8]) -> Vec<u8> {
        let mut b = original.to_vec();
        for e in &self.edits {
            match e {
                Edit::Write { at, bytes, .. } => {
                    let Ok(at) = usize::try_from(*at) else {
                        continue;
                    };
                    if at >= b.len() {
                        continue;
                    }
                    let n = bytes.len().min(b.len() - at);
                    b[at..at + n].copy_from_slice(&bytes[..n]);
                }
                Edit::Truncate(n) => b.truncate(usize::try_from(*n).unwrap_or(usize::MAX)),
                Edit::Extend(n, fill) => {
                    b.resize(b.len() + usize::try_from(*n).unwrap_or(0), *fill);
                }
            }
        }
        if self.fix {
            layout::fix_checksums(format, &mut b);
        }
        b
    }

    /// Draws a mutation of `bytes` (an image of `format`).
    pub fn draw(rng: &mut Rng, format: Format, bytes: &[u8]) -> Mutation {
        let spans = layout::spans(format, bytes);
        let n = 1 + rng.below(3);
        let mut edits = Vec::new();
        let mut current = bytes.to_vec();
        for _ in 0..n {
            let e = draw_edit(rng, format, &current, &spans);
            current = Mutation {
                edits: vec![e.clone()],
                fix: false,
            }
            .apply(format, &current);
            edits.push(e);
        }
        // VDI and qcow2 have no checksums: nothing to fix.
        let fix = rng.chance(1, 2) && !matches!(format, Format::Vdi | Format::Qcow2);
        Mutation { edits, fix }
    }
}

/// Offsets of the structures, as a hostile entry would point at them.
fn targets(spans: &[Span], file_len: u64) -> Vec<u64> {
    let mut t: Vec<u64> = spans.iter().map(|s| s.start).collect();
    t.extend([
        0,
        file_len,
        file_len.saturating_sub(512),
        file_len + (1 << 20),
    ]);
    t
}

fn draw_edit(rng: &mut Rng, format: Format, b: &[u8], spans: &[Span]) -> Edit {
    let len = b.len() as u64;
    // Whole-file changes and planted foreign structures take a fixed share.
    match rng.below(100) {
        0..=4 => return truncation(rng, len),
        5..=7 => {
            let n = rng.pick(&[1u64, 511, 512, 4096, 1 << 20, 3 << 20]);
            return Edit::Extend(n, rng.pick(&[0u8, 0xff, 0x5a]));
        }
        8..=10 => return plant(rng, format, len),
        _ => {}
    }
    let total: u64 = spans.iter().map(|s| u64::from(s.weight)).sum();
    if total == 0 {
        return truncation(rng, len);
    }
    let mut r = rng.below(total);
    let s = spans
        .iter()
        .find(|s| {
            let w = u64::from(s.weight);
            if r < w {
                true
            } else {
                r -= w;
                false
            }
        })
        .unwrap_or(&spans[0]);
    let t = targets(spans, len);
    match s.shape {
        Shape::VhdBat => vhd_bat_entry(rng, s, b, &t),
        Shape::VhdxBat => vhdx_bat_entry(rng, s, b, &t),
        Shape::VdiHeader => vdi_field(rng, b, &t),
        Shape::VdiMap => vdi_map_entry(rng, s, b),
        Shape::Qcow2Header => qcow2::header_field(rng, b, &t),
        Shape::Qcow2L1 | Shape::Qcow2L2 | Shape::Qcow2RefcountTable => {
            qcow2::table_entry(rng, s, b, &t)
        }
        Shape::Qcow2RefcountBlock => qcow2::refcount(rng, s, b),
        Shape::Fields if rng.chance(3, 4) => field(rng, format, s, b, &t),
        _ => bytes(rng, s, b, spans),
    }
}

fn truncation(rng: &mut Rng, len: u64) -> Edit {
    let to = match rng.below(5) {
        0 => len.saturating_sub(512),
        1 => len.saturating_sub(1),
        2 => (len.saturating_sub(1) >> 20) << 20,
        3 => len / 2,
        _ => rng.below(len),
    };
    Edit::Truncate(to)
}

/// Another format's signature where guest data lies: a VHD footer (fixed, or dynamic with a
/// header and a two-entry table) at the end of a VHDX; a fixed VHD footer at the end of a VDI
/// (the last slot's data) or a qcow2 (the last cluster's); `vhdxfile` or a VDI header at the start of a VHD (a fixed VHD's
/// first guest sector).
fn plant(rng: &mut Rng, format: Format, len: u64) -> Edit {
    match format {
        Format::Vdi | Format::Qcow2 => Edit::Write {
            what: "planted-vhd-fixed-footer",
            at: len.saturating_sub(512),
            bytes: layout::vhd_footer(2, len.saturating_sub(512), u64::MAX).to_vec(),
        },
        Format::Vhd if rng.chance(1, 3) => {
            let mut v = b"<<< Oracle VM VirtualBox Disk Image >>>\n".to_vec();
            v.resize(0x40, 0);
            v.extend(layout::vdi::SIGNATURE.to_le_bytes());
            v.extend(0x0001_0001u32.to_le_bytes());
            Edit::Write {
                what: "planted-vdi-pre-header",
                at: 0,
                bytes: v,
            }
        }
        Format::Vhdx if rng.chance(1, 2) || len < 4096 => Edit::Write {
            what: "planted-vhd-fixed-footer",
            at: len.saturating_sub(512),
            bytes: layout::vhd_footer(2, len.saturating_sub(512), u64::MAX).to_vec(),
        },
        Format::Vhdx => {
            // footer copy | dynamic header | table (2 entries, padded) | footer, at the end.
            let base = len - 3072;
            let mut v = layout::vhd_footer(3, 4 << 20, base + 512).to_vec();
            v.extend(layout::vhd_dynamic_header(base + 1536, 2, 2 << 20));
            let mut table = [0xffu8; 1024];
            table[0..4].copy_from_slice(&u32::try_from(base / 512).unwrap_or(0).to_be_bytes());
            v.extend(table);
            v.extend(layout::vhd_footer(3, 4 << 20, base + 512));
            Edit::Write {
                what: "planted-vhd-dynamic",
                at: base,
                bytes: v,
            }
        }
        Format::Vhd => {
            let mut v = b"vhdxfile".to_vec();
            if rng.chance(1, 2) {
                v.extend("vdisk-guest".encode_utf16().flat_map(u16::to_le_bytes));
            }
            Edit::Write {
                what: "planted-vhdxfile",
                at: 0,
                bytes: v,
            }
        }
    }
}

fn interesting(rng: &mut Rng, width: usize, old: u64, t: &[u64], file_len: u64) -> u64 {
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let v = match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max >> 1,
        4 => (max >> 1) + 1,
        5 => old.wrapping_add(1),
        6 => old.wrapping_sub(1),
        7 => old ^ (1 << rng.below(8 * width as u64)),
        8 => rng.pick(t),
        9 => rng.pick(t) / 512,
        10 => rng.pick(t) >> 20,
        _ => match rng.below(3) {
            0 => file_len,
            1 => old.wrapping_mul(2),
            _ => rng.next(),
        },
    };
    v & max
}

fn read_int(format: Format, b: &[u8], at: usize, width: usize) -> u64 {
    let Some(s) = b.get(at..at + width) else {
        return 0;
    };
    let mut v = [0u8; 8];
    match format {
        Format::Vhd | Format::Qcow2 => {
            v[8 - width..].copy_from_slice(s);
            u64::from_be_bytes(v)
        }
        Format::Vhdx | Format::Vdi => {
            v[..width].copy_from_slice(s);
            u64::from_le_bytes(v)
        }
    }
}

fn int_bytes(format: Format, v: u64, width: usize) -> Vec<u8> {
    match format {
        Format::Vhd | Format::Qcow2 => v.to_be_bytes()[8 - width..].to_vec(),
        Format::Vhdx | Format::Vdi => v.to_le_bytes()[..width].to_vec(),
    }
}

fn field(rng: &mut Rng, format: Format, s: &Span, b: &[u8], t: &[u64]) -> Edit {
    let width = rng.pick(&[1usize, 2, 4, 4, 8, 8]);
    let slots = (s.len / width as u64).max(1);
    // Fields cluster at the start of a structure: favour the first 128 bytes.
    let slot = if rng.chance(2, 3) {
        rng.below(slots.min(128 / width as u64))
    } else {
        rng.below(slots)
    };
    let at = s.start + slot * width as u64;
    let old = read_int(format, b, usize::try_from(at).unwrap_or(usize::MAX), width);
    let v = interesting(rng, width, old, t, b.len() as u64);
    Edit::Write {
        what: s.name,
        at,
        bytes: int_bytes(format, v, width),
    }
}

fn bytes(rng: &mut Rng, s: &Span, b: &[u8], spans: &[Span]) -> Edit {
    let at = s.start + rng.below(s.len);
    let bytes = match rng.below(4) {
        0 => vec![rng.next() as u8],
        1 => (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect(),
        2 => vec![0; 1 + rng.below(64) as usize],
        _ => {
            // Another structure's first bytes copied over this one (a header over its
            // twin, a footer over a header, ...).
            let other = &spans[rng.below(spans.len() as u64) as usize];
            let n = other.len.min(s.len).min(4096);
            let from = usize::try_from(other.start).unwrap_or(usize::MAX);
            let copy = b
                .get(from..from.saturating_add(n as usize))
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            return Edit::Write {
                what: s.name,
                at: s.start,
                bytes: copy,
            };
        }
    };
    Edit::Write {
        what: s.name,
        at,
        bytes,
    }
}

fn vhd_bat_entry(rng: &mut Rng, s: &Span, b: &[u8], t: &[u64]) -> Edit {
    let entries = (s.len / 4).max(1);
    let i = rng.below(entries);
    let at = s.start + 4 * i;
    let other = |rng: &mut Rng| {
        let j = s.start + 4 * rng.below(entries);
        read_int(Format::Vhd, b, usize::try_from(j).unwrap_or(usize::MAX), 4)
    };
    let old = read_int(Format::Vhd, b, usize::try_from(at).unwrap_or(usize::MAX), 4);
    let v = match rng.below(6) {
        0 => u64::from(u32::MAX),
        1 => other(rng),
        2 => rng.pick(t) / 512,
        3 => old.wrapping_add(rng.pick(&[1, 8, 128, 0xFFFF_FFFF])) & 0xFFFF_FFFF,
        4 => (b.len() as u64 / 512).saturating_sub(1 + rng.below(4)),
        _ => rng.next() & 0xFFFF_FFFF,
    };
    Edit::Write {
        what: "bat",
        at,
        bytes: int_bytes(Format::Vhd, v, 4),
    }
}

fn vhdx_bat_entry(rng: &mut Rng, s: &Span, b: &[u8], t: &[u64]) -> Edit {
    let entries = (s.len / 8).max(1);
    // Most entries of a small image are at the start of the table.
    let i = if rng.chance(3, 4) {
        rng.below(entries.min(16))
    } else {
        rng.below(entries)
    };
    let at = s.start + 8 * i;
    let old = read_int(
        Format::Vhdx,
        b,
        usize::try_from(at).unwrap_or(usize::MAX),
        8,
    );
    let state = rng.pick(&[0u64, 1, 2, 3, 4, 5, 6, 7, 6, 3, 2]);
    let mb = match rng.below(6) {
        0 => 0,
        1 => old >> 20,
        2 => rng.pick(t) >> 20,
        3 => {
            let j = s.start + 8 * rng.below(entries.min(16));
            read_int(Format::Vhdx, b, usize::try_from(j).unwrap_or(usize::MAX), 8) >> 20
        }
        4 => (old >> 20).wrapping_add(1),
        _ => rng.next() >> 20,
    };
    let mut v = (mb << 20) | state;
    if rng.chance(1, 8) {
        v |= (rng.next() & 0xFFFF8) & ((1 << 20) - 1);
    }
    Edit::Write {
        what: "bat",
        at,
        bytes: int_bytes(Format::Vhdx, v, 8),
    }
}

/// One of `fields`, each drawn in proportion to its weight.
fn weighted_field(rng: &mut Rng, fields: &[(layout::Field, u32)]) -> layout::Field {
    let total: u64 = fields.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut r = rng.below(total);
    let (field, _) = fields
        .iter()
        .find(|(_, w)| {
            if r < u64::from(*w) {
                true
            } else {
                r -= u64::from(*w);
                false
            }
        })
        .copied()
        .unwrap_or(fields[0]);
    field
}

fn vdi_field(rng: &mut Rng, b: &[u8], t: &[u64]) -> Edit {
    let h = layout::vdi::Header::read(b);
    header_field(
        rng,
        b,
        t,
        Format::Vdi,
        &layout::vdi::FIELDS,
        |field, len| layout::vdi::boundary_values(field, &h, len),
    )
}

/// A write to one header field of `format`, drawn from `fields` by weight: three times in
/// four one of the field's `boundary` values (given the file's length), else an interesting
/// value near the old one or a structure offset of `t`.
pub(super) fn header_field(
    rng: &mut Rng,
    b: &[u8],
    t: &[u64],
    format: Format,
    fields: &[(layout::Field, u32)],
    boundary: impl Fn(&layout::Field, u64) -> Vec<u64>,
) -> Edit {
    let field = weighted_field(rng, fields);
    let len = b.len() as u64;
    let at = usize::try_from(field.at).unwrap_or(usize::MAX);
    let old = read_int(format, b, at, field.width);
    let v = if rng.chance(3, 4) {
        rng.pick(&boundary(&field, len))
    } else {
        interesting(rng, field.width, old, t, len)
    };
    Edit::Write {
        what: field.name,
        at: field.at,
        bytes: int_bytes(format, v, field.width),
    }
}

fn vdi_map_entry(rng: &mut Rng, s: &Span, b: &[u8]) -> Edit {
    let entries = (s.len / 4).max(1);
    let i = if rng.chance(3, 4) {
        rng.below(entries.min(16))
    } else {
        rng.below(entries)
    };
    let at = s.start + 4 * i;
    let h = layout::vdi::Header::read(b);
    let v = match rng.below(4) {
        // Another entry's slot: two blocks sharing one slot.
        0 => {
            let j = s.start + 4 * rng.below(entries.min(16));
            read_int(Format::Vdi, b, usize::try_from(j).unwrap_or(usize::MAX), 4)
        }
        1 => rng.next() & 0xFFFF_FFFF,
        _ => u64::from(rng.pick(&layout::vdi::entry_values(&h, b.len() as u64))),
    };
    Edit::Write {
        what: "bmap",
        at,
        bytes: int_bytes(Format::Vdi, v, 4),
    }
}
