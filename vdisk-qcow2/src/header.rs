//! The header: read, bounded by the format's limits and the file's length, and every feature
//! this version does not handle refused with its reason, before any table is read.

use vdisk_core::{Confidence, Error, ErrorKind, HostFile, Result};
use zerocopy::FromBytes;

use crate::extension::{self, Extension};
use crate::format::{
    AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, EXT_BACKING_FORMAT,
    EXT_CRYPTO, EXT_DATA_FILE, HEADER_LEN, Header, INCOMPAT_COMPRESSION, INCOMPAT_CORRUPT,
    INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_EXTL2, MAGIC, MAX_BACKING_NAME, MAX_CLUSTER_BITS,
    MAX_L1_BYTES, MAX_REFCOUNT_ORDER, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS, MIN_CLUSTER_BITS,
    V2_HEADER_LEN, V3_MIN_HEADER_LEN, idx,
};

/// Every incompatible bit this version knows (it refuses all but the compression type bit
/// with zlib).
const KNOWN_INCOMPAT: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// The header's facts, validated.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size (9..=21).
    pub cluster_bits: u32,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Virtual size in bytes.
    pub size: u64,
    /// Entries of the active L1 table.
    pub l1_size: u64,
    /// Offset of the active L1 table.
    pub l1_offset: u64,
    /// Offset of the refcount table.
    pub reftable_offset: u64,
    /// Clusters of the refcount table.
    pub reftable_clusters: u64,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits (kept as they are).
    pub compatible: u64,
    /// Autoclear feature bits (kept as they are).
    pub autoclear: u64,
    /// log2 of the refcount width in bits (0..=6).
    pub refcount_order: u32,
    /// Where the header ends and extensions start.
    pub header_length: u64,
    /// The backing file name, as stored.
    pub backing: Option<String>,
    /// Where the backing file name lies.
    pub backing_offset: u64,
    /// The header extensions, in file order.
    pub extensions: Vec<Extension>,
    /// The file's length when opened.
    pub file_len: u64,
}

impl Layout {
    /// Entries per L2 table (and per cluster of any u64 table).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size / 8
    }

    /// Refcount entries per refcount block.
    pub fn refblock_entries(&self) -> u64 {
        (self.cluster_size * 8) >> self.refcount_order
    }

    /// Bytes of the active L1 table.
    pub fn l1_bytes(&self) -> u64 {
        self.l1_size * 8
    }

    /// Bytes of the refcount table.
    pub fn reftable_bytes(&self) -> u64 {
        self.reftable_clusters << self.cluster_bits
    }

    /// Guest clusters of the virtual size.
    pub fn guest_clusters(&self) -> u64 {
        self.size.div_ceil(self.cluster_size)
    }

    /// The backing format the backing-format extension names, if any.
    pub fn backing_format(&self) -> Option<String> {
        self.extensions
            .iter()
            .find(|e| e.kind == EXT_BACKING_FORMAT)
            .map(|e| {
                let end = e.data.iter().position(|&b| b == 0).unwrap_or(e.data.len());
                String::from_utf8_lossy(&e.data[..end]).to_string()
            })
    }

    /// `x` rounded up to whole clusters.
    pub fn cluster_align(&self, x: u64) -> u64 {
        x.div_ceil(self.cluster_size)
            .saturating_mul(self.cluster_size)
    }
}

/// Whether `file` is a qcow2: the magic at offset 0 and version 2 or 3 with a cluster size and
/// refcount width in the format's range is [`Confidence::Yes`]; the magic alone (version 1, a
/// damaged header) [`Confidence::Maybe`], so the driver still gives its precise error.
pub(crate) fn probe(file: &dyn HostFile) -> Result<Confidence> {
    let len = file.len()?;
    if len < V2_HEADER_LEN {
        return Ok(Confidence::No);
    }
    let mut buf = [0u8; idx(HEADER_LEN)];
    let n = idx(HEADER_LEN.min(len));
    file.read_at(&mut buf[..n], 0)?;
    let Ok(h) = Header::read_from_bytes(&buf) else {
        return Ok(Confidence::No);
    };
    if h.magic != MAGIC {
        return Ok(Confidence::No);
    }
    let version = h.version.get();
    let cb = h.cluster_bits.get();
    let sane = matches!(version, 2 | 3)
        && (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cb)
        && (version == 2 || h.refcount_order.get() <= MAX_REFCOUNT_ORDER);
    Ok(if sane {
        Confidence::Yes
    } else {
        Confidence::Maybe
    })
}

fn invalid(msg: String, at: u64) -> Error {
    Error::invalid(msg, at)
}

fn unsupported(msg: String) -> Error {
    Error::new(ErrorKind::Unsupported, msg)
}

/// Reads and validates the header and its extensions. Never writes. Refusals:
/// [`ErrorKind::Unsupported`] for what this version does not handle (version, encryption,
/// external data file, extended L2 entries, zstd, unknown incompatible bits, the dirty bit),
/// [`ErrorKind::InvalidImage`] for damage (the corrupt bit, fields out of range, tables past
/// the end of the file or overlapping).
pub(crate) fn inspect(file: &dyn HostFile) -> Result<(Header, Layout)> {
    let file_len = file.len()?;
    if file_len < V2_HEADER_LEN {
        return Err(invalid(
            format!("the file is {file_len} bytes, too short for a qcow2 header"),
            0,
        ));
    }
    let mut raw = [0u8; idx(HEADER_LEN)];
    file.read_at(&mut raw[..idx(HEADER_LEN.min(file_len))], 0)?;
    let mut h = Header::read_from_bytes(&raw).map_err(|_| invalid("short header".into(), 0))?;
    if h.magic != MAGIC {
        return Err(invalid("not a qcow2 image (no QFI\\xfb magic)".into(), 0));
    }
    let version = h.version.get();
    if !matches!(version, 2 | 3) {
        return Err(unsupported(format!(
            "qcow version {version} is not supported (qcow2 versions 2 and 3 are)"
        )));
    }
    let cluster_bits = h.cluster_bits.get();
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(invalid(
            format!(
                "cluster_bits {cluster_bits} is outside 9..=21 (clusters of 512 bytes to 2 MiB)"
            ),
            20,
        ));
    }
    let cluster_size = 1u64 << cluster_bits;
    let (header_length, refcount_order) = if version == 2 {
        // Only the v2 fields are the header's: the rest is cluster data or extensions.
        let v2 = [0u8; idx(HEADER_LEN - V2_HEADER_LEN)];
        h = Header::read_from_bytes(&[&raw[..idx(V2_HEADER_LEN)], &v2[..]].concat())
            .map_err(|_| invalid("short header".into(), 0))?;
        (V2_HEADER_LEN, 4)
    } else {
        let hl = u64::from(h.header_length.get());
        if hl < V3_MIN_HEADER_LEN || !hl.is_multiple_of(8) || hl > cluster_size || hl > file_len {
            return Err(invalid(
                format!(
                    "header_length {hl} is not a multiple of 8 between 104 and the cluster size \
                     {cluster_size}"
                ),
                100,
            ));
        }
        if hl < HEADER_LEN {
            h.compression_type = 0;
        }
        (hl, h.refcount_order.get())
    };
    if refcount_order > MAX_REFCOUNT_ORDER {
        return Err(invalid(
            format!("refcount_order {refcount_order} is above 6 (refcounts of 1 to 64 bits)"),
            96,
        ));
    }
    let cluster0_len = cluster_size.min(file_len);
    let mut cluster0 = vec![0u8; idx(cluster0_len)];
    file.read_at(&mut cluster0, 0)?;
    let mut layout = Layout {
        version,
        cluster_bits,
        cluster_size,
        size: h.size.get(),
        l1_size: u64::from(h.l1_size.get()),
        l1_offset: h.l1_table_offset.get(),
        reftable_offset: h.refcount_table_offset.get(),
        reftable_clusters: u64::from(h.refcount_table_clusters.get()),
        nb_snapshots: h.nb_snapshots.get(),
        snapshots_offset: h.snapshots_offset.get(),
        incompatible: h.incompatible_features.get(),
        compatible: h.compatible_features.get(),
        autoclear: h.autoclear_features.get(),
        refcount_order,
        header_length,
        backing: None,
        backing_offset: h.backing_file_offset.get(),
        extensions: Vec::new(),
        file_len,
    };
    read_backing_name(&h, &mut layout, &cluster0)?;
    let ext_end = match layout.backing {
        Some(_) => layout.backing_offset,
        None => cluster_size,
    };
    if ext_end < header_length {
        return Err(invalid(
            format!(
                "the backing file name at {ext_end:#x} lies inside the {header_length}-byte header"
            ),
            8,
        ));
    }
    layout.extensions = extension::parse(&cluster0, header_length, ext_end)?;
    refuse_features(&h, &layout)?;
    check_tables(&layout)?;
    Ok((h, layout))
}

/// Reads the backing file name (bounded to cluster 0 and 1023 bytes, UTF-8).
fn read_backing_name(h: &Header, layout: &mut Layout, cluster0: &[u8]) -> Result<()> {
    let off = h.backing_file_offset.get();
    if off == 0 {
        return Ok(());
    }
    let len = h.backing_file_size.get();
    if len == 0 {
        return Ok(());
    }
    if len > MAX_BACKING_NAME {
        return Err(invalid(
            format!("the backing file name is {len} bytes, more than the format's 1023"),
            16,
        ));
    }
    let end = off.saturating_add(u64::from(len));
    if end > layout.cluster_size || end > cluster0.len() as u64 {
        return Err(invalid(
            format!(
                "the backing file name ({len} bytes at {off:#x}) does not lie in the first \
                 cluster"
            ),
            8,
        ));
    }
    let name = std::str::from_utf8(&cluster0[idx(off)..idx(end)]).map_err(|_| {
        Error::new(
            ErrorKind::Unsupported,
            "the backing file name is not valid UTF-8",
        )
    })?;
    layout.backing = Some(name.to_string());
    Ok(())
}

/// Refuses what this version does not handle, each with its reason.
fn refuse_features(h: &Header, l: &Layout) -> Result<()> {
    let repair = "run `qemu-img check -r all <file>` first";
    if l.incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(invalid(
            format!("qemu marked this image corrupt (incompatible feature bit 1); {repair}"),
            72,
        ));
    }
    if l.incompatible & INCOMPAT_DIRTY != 0 {
        return Err(unsupported(format!(
            "the image was not closed cleanly (dirty bit set: its refcounts may be out of date); \
             {repair}"
        )));
    }
    if h.crypt_method.get() != 0 || l.extensions.iter().any(|e| e.kind == EXT_CRYPTO) {
        return Err(unsupported(format!(
            "encrypted qcow2 images (crypt_method {}) are not supported",
            h.crypt_method.get()
        )));
    }
    if l.incompatible & INCOMPAT_DATA_FILE != 0
        || l.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0
        || l.extensions.iter().any(|e| e.kind == EXT_DATA_FILE)
    {
        return Err(unsupported(
            "qcow2 images with an external data file are not supported".into(),
        ));
    }
    if l.incompatible & INCOMPAT_EXTL2 != 0 {
        return Err(unsupported(
            "qcow2 images with extended l2 entries (subclusters) are not supported".into(),
        ));
    }
    match h.compression_type {
        0 => {}
        1 => {
            return Err(unsupported(
                "qcow2 images with zstd compression are not supported (only zlib)".into(),
            ));
        }
        t => {
            return Err(unsupported(format!(
                "compression type {t} is unknown (only zlib is supported)"
            )));
        }
    }
    let unknown = l.incompatible & !KNOWN_INCOMPAT;
    if unknown != 0 {
        let names = crate::extension::feature_names(&l.extensions);
        let bits: Vec<String> = (0..64u8)
            .filter(|b| unknown >> b & 1 == 1)
            .map(
                |b| match names.iter().find(|(t, n, _)| *t == 0 && *n == b) {
                    Some((_, _, name)) => format!("bit {b} ({name})"),
                    None => format!("bit {b}"),
                },
            )
            .collect();
        return Err(unsupported(format!(
            "unknown incompatible features: {}",
            bits.join(", ")
        )));
    }
    let _ = (COMPAT_LAZY_REFCOUNTS, AUTOCLEAR_BITMAPS);
    Ok(())
}

/// The L1 table, refcount table and snapshot table: in range, aligned, inside the file, and
/// apart from each other and from the header cluster.
fn check_tables(l: &Layout) -> Result<()> {
    let cs = l.cluster_size;
    // Guest clusters addressable through the L1 table must cover the virtual size.
    let per_l1 = l.l2_entries() * cs;
    let needed = l.size.div_ceil(per_l1);
    if l.l1_bytes() > MAX_L1_BYTES {
        return Err(invalid(
            format!(
                "the l1 table has {} entries, more than the {} qemu allows",
                l.l1_size,
                MAX_L1_BYTES / 8
            ),
            36,
        ));
    }
    if l.l1_size < needed {
        return Err(invalid(
            format!(
                "the l1 table has {} entries, too few for the {}-byte virtual size ({needed} \
                 needed)",
                l.l1_size, l.size
            ),
            36,
        ));
    }
    if l.reftable_bytes() > MAX_REFTABLE_BYTES || l.reftable_clusters == 0 {
        return Err(invalid(
            format!(
                "the refcount table has {} clusters; between 1 and {} are allowed",
                l.reftable_clusters,
                MAX_REFTABLE_BYTES / cs
            ),
            56,
        ));
    }
    if l.nb_snapshots > MAX_SNAPSHOTS {
        return Err(invalid(
            format!(
                "{} snapshots, more than the {MAX_SNAPSHOTS} qemu allows",
                l.nb_snapshots
            ),
            60,
        ));
    }
    let mut tables = vec![("the header cluster", 0..cs)];
    let mut table = |what: &'static str, off: u64, len: u64, at: u64| -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if !off.is_multiple_of(cs) {
            return Err(invalid(
                format!("{what} at {off:#x} is not aligned to the {cs}-byte cluster"),
                at,
            ));
        }
        let end = off.checked_add(len).filter(|&e| e <= l.file_len);
        let Some(end) = end else {
            return Err(invalid(
                format!(
                    "{what} ({len} bytes at {off:#x}) lies past the end of the {}-byte file",
                    l.file_len
                ),
                at,
            ));
        };
        let end = l.cluster_align(end);
        if let Some((other, _)) = tables.iter().find(|(_, r)| r.start < end && off < r.end) {
            return Err(invalid(format!("{what} at {off:#x} overlaps {other}"), at));
        }
        tables.push((what, off..end));
        Ok(())
    };
    table("the l1 table", l.l1_offset, l.l1_bytes(), 40)?;
    table(
        "the refcount table",
        l.reftable_offset,
        l.reftable_bytes(),
        48,
    )?;
    if l.nb_snapshots > 0 {
        // The table's length is known only once parsed; its first entry must be in the file.
        table("the snapshot table", l.snapshots_offset, 40, 64)?;
    }
    Ok(())
}
