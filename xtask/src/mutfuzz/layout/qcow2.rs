//! Where the structures of a qcow2 file lie (all big-endian, no checksums), read from the
//! header without validation (qemu's docs/interop/qcow2.txt), and the values a hostile
//! header field or table entry takes: at and just past each limit a reader must enforce.
//!
//! ```text
//!   0 magic QFI\xfb | 4 version | 8 backing file offset (u64) | 16 backing file size
//!   20 cluster bits | 24 size (u64) | 32 crypt method | 36 l1 size | 40 l1 offset (u64)
//!   48 refcount table offset (u64) | 56 refcount table clusters | 60 snapshots
//!   64 snapshots offset (u64) | v3: 72 incompatible | 80 compatible | 88 autoclear (u64 each)
//!   96 refcount order | 100 header length | 104 compression type (u8)
//!   then header extensions (type u32, length u32, data padded to 8) up to type 0
//!   L1 entry: bit 63 COPIED, bits 9-55 L2 table offset
//!   L2 entry: bit 63 COPIED, bit 62 compressed, bits 9-55 offset, bit 0 zero (v3)
//!   refcount table entry: bits 9-63 refcount block offset; a block holds
//!   cluster * 8 / refcount bits entries of 2^refcount_order bits
//!   snapshot: l1 offset (u64), l1 size, id size (u16), name size (u16), date (2 x u32),
//!   vm clock (u64), vm state size, extra size, extra, id, name, padded to 8
//! ```

use super::{Field, f};

use super::{Shape, Span, be32, be64, inside, span};

/// The qcow2 magic at 0.
pub const MAGIC: u32 = 0x5146_49fb;
/// L1/L2 entry: the cluster's refcount is exactly 1.
pub const COPIED: u64 = 1 << 63;
/// L2 entry: a compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 entry (v3): the cluster reads zeros.
pub const ZERO: u64 = 1;
/// Host offset bits of an L1/L2 entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The header fields a reader acts on, with a weight each.
pub const FIELDS: [(Field, u32); 19] = [
    (f("version", 4, 4), 3),
    (f("backing-file-offset", 8, 8), 4),
    (f("backing-file-size", 16, 4), 4),
    (f("cluster-bits", 20, 4), 8),
    (f("size", 24, 8), 8),
    (f("crypt-method", 32, 4), 2),
    (f("l1-size", 36, 4), 10),
    (f("l1-table-offset", 40, 8), 10),
    (f("refcount-table-offset", 48, 8), 10),
    (f("refcount-table-clusters", 56, 4), 8),
    (f("nb-snapshots", 60, 4), 6),
    (f("snapshots-offset", 64, 8), 6),
    (f("incompatible-features", 72, 8), 6),
    (f("compatible-features", 80, 8), 2),
    (f("autoclear-features", 88, 8), 3),
    (f("refcount-order", 96, 4), 8),
    (f("header-length", 100, 4), 4),
    (f("compression-type", 104, 1), 2),
    (f("magic", 0, 4), 1),
];

/// What the header says, read without validation (0 where the file is too short).
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// Offset and length of the backing file name.
    pub backing: (u64, u64),
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size.
    pub size: u64,
    /// L1 entries.
    pub l1_size: u64,
    /// Offset of the active L1 table.
    pub l1: u64,
    /// Offset of the refcount table.
    pub refcount_table: u64,
    /// Clusters of the refcount table.
    pub refcount_clusters: u64,
    /// Internal snapshots.
    pub snapshots: u64,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// log2 of the refcount width in bits (4 for v2).
    pub refcount_order: u32,
    /// Header length (72 for v2).
    pub header_length: u64,
}

impl Header {
    /// Reads the header fields of `b`.
    pub fn read(b: &[u8]) -> Header {
        let u32_ = |at| be32(b, at).unwrap_or(0);
        let u64_ = |at| be64(b, at).unwrap_or(0);
        let version = u32_(4);
        let v3 = version >= 3;
        Header {
            version,
            backing: (u64_(8), u64::from(u32_(16))),
            cluster_bits: u32_(20),
            size: u64_(24),
            l1_size: u64::from(u32_(36)),
            l1: u64_(40),
            refcount_table: u64_(48),
            refcount_clusters: u64::from(u32_(56)),
            snapshots: u64::from(u32_(60)),
            snapshots_offset: u64_(64),
            refcount_order: if v3 { u32_(96) } else { 4 },
            header_length: if v3 { u64::from(u32_(100)) } else { 72 },
        }
    }

    /// The cluster size, if the cluster bits are sane (9..=21).
    pub fn cluster(&self) -> Option<u64> {
        (9..=21)
            .contains(&self.cluster_bits)
            .then(|| 1 << self.cluster_bits)
    }
}

/// Structures of `b` read as a qcow2 (at most 8 L2 tables, 4 refcount blocks).
pub fn spans(b: &[u8]) -> Vec<Span> {
    let len = b.len() as u64;
    let h = Header::read(b);
    let mut out = vec![
        span("header", 0, 112, Shape::Qcow2Header, 40),
        span("header", 0, 112, Shape::Fields, 6),
    ];
    let Some(cluster) = h.cluster() else {
        return inside(out, len);
    };
    // Header extensions: from the header's end to the end-of-extensions marker.
    let mut at = h.header_length.max(72);
    let mut n = 0;
    while n < 16 && at + 8 <= cluster.min(len) {
        let (kind, ext_len) = (be32(b, at).unwrap_or(0), be32(b, at + 4).unwrap_or(0));
        out.push(span("extension", at, 8, Shape::Fields, 6));
        if kind == 0 {
            break;
        }
        let data = u64::from(ext_len).min(cluster);
        out.push(span("extension-data", at + 8, data, Shape::Data, 2));
        at += 8 + data.next_multiple_of(8);
        n += 1;
    }
    if h.backing.1 > 0 {
        out.push(span(
            "backing-name",
            h.backing.0,
            h.backing.1.min(1023),
            Shape::Data,
            2,
        ));
    }
    out.push(span(
        "l1",
        h.l1,
        8 * h.l1_size.min(1 << 16),
        Shape::Qcow2L1,
        20,
    ));
    let l2s: Vec<u64> = (0..h.l1_size.min(1 << 16))
        .filter_map(|i| be64(b, h.l1.saturating_add(8 * i)))
        .map(|e| e & OFFSET_MASK)
        .filter(|&o| o != 0)
        .take(8)
        .collect();
    for o in l2s {
        out.push(span("l2", o, cluster, Shape::Qcow2L2, 30));
    }
    let table_len = (h.refcount_clusters * cluster).min(1 << 20);
    out.push(span(
        "refcount-table",
        h.refcount_table,
        table_len,
        Shape::Qcow2RefcountTable,
        15,
    ));
    let blocks: Vec<u64> = (0..table_len / 8)
        .filter_map(|i| be64(b, h.refcount_table.saturating_add(8 * i)))
        .map(|e| e & !0x1ff)
        .filter(|&o| o != 0)
        .take(4)
        .collect();
    for o in blocks {
        out.push(span(
            "refcount-block",
            o,
            cluster,
            Shape::Qcow2RefcountBlock,
            20,
        ));
    }
    if h.snapshots > 0 {
        out.push(span(
            "snapshot-table",
            h.snapshots_offset,
            (64 * h.snapshots).min(cluster),
            Shape::Fields,
            12,
        ));
        // The first snapshot's L1 table.
        let l1 = be64(b, h.snapshots_offset).unwrap_or(0);
        let size = u64::from(be32(b, h.snapshots_offset + 8).unwrap_or(0));
        out.push(span(
            "snapshot-l1",
            l1,
            8 * size.min(1 << 16),
            Shape::Qcow2L1,
            6,
        ));
    }
    // The first data cluster the first L2 table names.
    let first = out
        .iter()
        .filter(|s| s.shape == Shape::Qcow2L2)
        .flat_map(|s| (0..cluster / 8).filter_map(move |i| be64(b, s.start + 8 * i)))
        .find(|e| e & COMPRESSED == 0 && e & OFFSET_MASK != 0);
    if let Some(e) = first {
        out.push(span(
            "cluster-data",
            e & OFFSET_MASK,
            cluster.min(1 << 16),
            Shape::Data,
            2,
        ));
    }
    inside(out, len)
}

/// The boundary values of `field` in an image whose header says `h`, in a `file_len`-byte
/// file: each limit a reader must check, and one past it.
pub fn boundary_values(field: &Field, h: &Header, file_len: u64) -> Vec<u64> {
    let cluster = h.cluster().unwrap_or(65536);
    let in_file = |x: u64| {
        [
            x,
            x.wrapping_add(cluster),
            file_len,
            file_len - file_len % cluster,
        ]
    };
    let mut v = match field.name {
        "magic" => vec![u64::from(MAGIC) ^ 1],
        "version" => vec![1, 2, 3, 4, u64::from(h.version ^ 1)],
        "backing-file-offset" => vec![
            h.header_length,
            cluster - 1,
            cluster - 8,
            file_len,
            h.backing.0.wrapping_add(1),
            h.l1,
        ],
        "backing-file-size" => vec![1, 1023, 1024, 1025, h.backing.1.wrapping_add(1), 0x10000],
        "cluster-bits" => vec![8, 9, 12, 16, 20, 21, 22, 31, 63],
        "size" => vec![
            h.size.wrapping_add(1),
            h.size.wrapping_add(cluster),
            h.size.saturating_sub(cluster),
            h.l1_size.wrapping_mul(cluster / 8).wrapping_mul(cluster),
            h.l1_size
                .wrapping_mul(cluster / 8)
                .wrapping_mul(cluster)
                .wrapping_add(1),
            1 << 55,
            1 << 62,
            u64::MAX,
        ],
        "crypt-method" => vec![1, 2, 3],
        "l1-size" => vec![
            h.l1_size.saturating_sub(1),
            h.l1_size.wrapping_add(1),
            h.l1_size.wrapping_mul(2),
            (32 << 20) / 8,
            (32 << 20) / 8 + 1,
            0x0200_0000,
            0x0200_0001,
        ],
        "l1-table-offset" | "refcount-table-offset" | "snapshots-offset" => {
            let mut v = in_file(h.refcount_table).to_vec();
            v.extend([
                h.l1,
                h.l1.wrapping_add(1),
                h.l1.wrapping_add(8),
                h.snapshots_offset,
                1 << 56,
            ]);
            v.extend([h.refcount_table.wrapping_add(512), cluster]);
            v
        }
        "refcount-table-clusters" => vec![
            h.refcount_clusters.saturating_sub(1),
            h.refcount_clusters.wrapping_add(1),
            (8 << 20) / cluster,
            (8 << 20) / cluster + 1,
            0x0100_0000,
        ],
        "nb-snapshots" => vec![1, h.snapshots.wrapping_add(1), 65536, 65537],
        "incompatible-features" => vec![1, 2, 4, 8, 16, 32, 1 << 63],
        "compatible-features" => vec![1, 2, 1 << 63],
        "autoclear-features" => vec![1, 2, 1 << 63],
        "refcount-order" => vec![0, 3, 4, 5, 6, 7, 64],
        "header-length" => vec![
            71,
            72,
            100,
            103,
            104,
            105,
            112,
            113,
            cluster,
            cluster.wrapping_add(8),
        ],
        "compression-type" => vec![1, 2],
        _ => vec![],
    };
    v.extend([0, u64::from(u32::MAX)]);
    let max = match field.width {
        8 => u64::MAX,
        w => (1 << (8 * w)) - 1,
    };
    v.into_iter().map(|x| x & max).collect()
}

/// The values a hostile L1 or L2 entry takes, given the entry `old`, another entry `other`
/// of the same table and the structure offsets `targets` (header, tables, past the end):
/// unallocated, zero (with and without an offset), compressed, COPIED flipped, reserved bits
/// set, an unaligned offset, another entry's cluster (two entries sharing one), the tables'
/// own clusters, and offsets at and past the file's end.
pub fn entry_values(old: u64, other: u64, targets: &[u64], cluster: u64, l2: bool) -> Vec<u64> {
    let off = old & OFFSET_MASK;
    let mut v = vec![
        0,
        old ^ COPIED,
        other,
        other & !COPIED,
        off,
        off + 512,
        old | (1 << 56),
        old | 0x100,
    ];
    v.extend(targets.iter().map(|&t| COPIED | (t & OFFSET_MASK)));
    v.extend(
        targets
            .iter()
            .map(|&t| COPIED | (t.next_multiple_of(cluster) & OFFSET_MASK)),
    );
    if l2 {
        v.extend([
            ZERO,
            old | ZERO,
            (old & !COPIED) | ZERO,
            COMPRESSED | off,
            COMPRESSED | (off + 512) | (0xff << 54),
            old | COMPRESSED,
            COMPRESSED | (u64::MAX >> 2),
        ]);
    }
    v
}

/// The values a hostile refcount table entry takes (block offsets: 0, another block, a
/// table, unaligned, past the end).
pub fn refcount_table_values(old: u64, other: u64, targets: &[u64]) -> Vec<u64> {
    let mut v = vec![
        0,
        other,
        old.wrapping_add(512),
        old.wrapping_add(1),
        1 << 63,
    ];
    v.extend(targets);
    v
}

/// Refcount widths in bits of `h` (1 to 64), if the order is sane.
pub fn refcount_bits(h: &Header) -> Option<u32> {
    (h.refcount_order <= 6).then(|| 1 << h.refcount_order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 image as qemu lays it out with 64 KiB clusters: header, refcount table at
    /// 0x10000, a refcount block at 0x20000, L1 at 0x30000, an L2 table at 0x40000 naming
    /// a data cluster at 0x50000.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 0x60000];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0, &MAGIC.to_be_bytes());
        put(4, &3u32.to_be_bytes());
        put(20, &16u32.to_be_bytes());
        put(24, &(1u64 << 20).to_be_bytes());
        put(36, &1u32.to_be_bytes());
        put(40, &0x30000u64.to_be_bytes());
        put(48, &0x10000u64.to_be_bytes());
        put(56, &1u32.to_be_bytes());
        put(96, &4u32.to_be_bytes());
        put(104, &112u32.to_be_bytes());
        put(100, &112u32.to_be_bytes());
        put(0x10000, &0x20000u64.to_be_bytes());
        put(0x30000, &(COPIED | 0x40000).to_be_bytes());
        put(0x40008, &(COPIED | 0x50000).to_be_bytes());
        b
    }

    #[test]
    fn tables_blocks_and_the_first_data_cluster_are_found_where_the_header_puts_them() {
        let spans = spans(&image());
        let find = |n: &str| spans.iter().find(|s| s.name == n).map(|s| (s.start, s.len));
        assert_eq!(find("l1"), Some((0x30000, 8)));
        assert_eq!(find("l2"), Some((0x40000, 0x10000)));
        assert_eq!(find("refcount-table"), Some((0x10000, 0x10000)));
        assert_eq!(find("refcount-block"), Some((0x20000, 0x10000)));
        assert_eq!(find("cluster-data"), Some((0x50000, 0x10000)));
        assert_eq!(find("extension"), Some((112, 8)));
        assert!(spans.iter().any(|s| s.shape == Shape::Qcow2Header));
    }

    #[test]
    fn header_fields_and_entries_get_the_values_at_and_just_past_each_limit() {
        let b = image();
        let h = Header::read(&b);
        let of = |name: &str| {
            let (field, _) = FIELDS.iter().find(|(f, _)| f.name == name).unwrap();
            boundary_values(field, &h, b.len() as u64)
        };
        assert!(of("cluster-bits").contains(&8) && of("cluster-bits").contains(&22));
        assert!(of("refcount-order").contains(&7));
        assert!(of("l1-size").contains(&2));
        assert!(of("size").contains(&((1 << 20) + 1)));
        assert!(of("incompatible-features").contains(&16));
        let e = entry_values(COPIED | 0x50000, 0, &[0x60000], 0x10000, true);
        assert!(e.contains(&(COPIED | 0x60000)) && e.contains(&ZERO));
        assert!(e.contains(&(COMPRESSED | 0x50000)));
        assert_eq!(refcount_bits(&h), Some(16));
    }
}
