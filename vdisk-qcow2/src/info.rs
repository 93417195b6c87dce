//! Facts for `vdisk info`.

use crate::format::{AUTOCLEAR_BITMAPS, COMPAT_LAZY_REFCOUNTS, INCOMPAT_COMPRESSION};
use crate::image::Qcow2Image;

/// Names of the feature bits set in `bits` (`table`: 0 incompatible, 1 compatible, 2
/// autoclear), with the image's own feature name table for bits this version does not name.
fn feature_list(image: &Qcow2Image, table: u8, bits: u64) -> String {
    let names = crate::extension::feature_names(&image.layout.extensions);
    let known = |b: u8| -> Option<&str> {
        match (table, 1u64 << b) {
            (0, INCOMPAT_COMPRESSION) => Some("compression type"),
            (1, COMPAT_LAZY_REFCOUNTS) => Some("lazy refcounts"),
            (2, AUTOCLEAR_BITMAPS) => Some("bitmaps"),
            _ => None,
        }
    };
    let list: Vec<String> = (0..64u8)
        .filter(|b| bits >> b & 1 == 1)
        .map(|b| match known(b) {
            Some(n) => n.to_string(),
            None => names
                .iter()
                .find(|(t, n, _)| *t == table && *n == b)
                .map_or_else(|| format!("bit {b}"), |(_, _, n)| format!("{n} (bit {b})")),
        })
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// The details `vdisk info` lists.
pub(crate) fn details(image: &Qcow2Image) -> Vec<(String, String)> {
    let l = &image.layout;
    let mut d = vec![
        ("version".to_string(), l.version.to_string()),
        ("header length".to_string(), l.header_length.to_string()),
        ("cluster size".to_string(), l.cluster_size.to_string()),
        (
            "refcount width".to_string(),
            format!("{} bits", 1u32 << l.refcount_order),
        ),
        (
            "l1 table".to_string(),
            format!("{} entries at {:#x}", l.l1_size, l.l1_offset),
        ),
        (
            "refcount table".to_string(),
            format!(
                "{} clusters at {:#x}",
                l.reftable_clusters, l.reftable_offset
            ),
        ),
        ("snapshots".to_string(), l.nb_snapshots.to_string()),
        (
            "incompatible features".to_string(),
            feature_list(image, 0, l.incompatible),
        ),
        (
            "compatible features".to_string(),
            feature_list(image, 1, l.compatible),
        ),
        (
            "autoclear features".to_string(),
            feature_list(image, 2, l.autoclear),
        ),
        ("compression".to_string(), "zlib".to_string()),
    ];
    // At most this many snapshots are listed one by one (a file may hold 65536).
    const LISTED: usize = 32;
    for s in image.snapshots.iter().take(LISTED) {
        d.push((
            format!("snapshot {}", s.id),
            format!("{:?}, {} bytes", s.name, s.disk_size),
        ));
    }
    if image.snapshots.len() > LISTED {
        d.push((
            "more snapshots".to_string(),
            (image.snapshots.len() - LISTED).to_string(),
        ));
    }
    if let Some(b) = &l.backing {
        d.push(("backing file".to_string(), b.clone()));
    }
    if let Some(f) = l.backing_format() {
        d.push(("backing format".to_string(), f));
    }
    if let Some(p) = &image.parent_path {
        d.push(("backing path".to_string(), p.display().to_string()));
    }
    let exts: Vec<String> = l
        .extensions
        .iter()
        .map(|e| format!("{} ({} bytes at {:#x})", e.name(), e.data.len(), e.offset))
        .collect();
    d.push((
        "header extensions".to_string(),
        if exts.is_empty() {
            "none".to_string()
        } else {
            exts.join(", ")
        },
    ));
    d
}
