//! Features this version does not handle, and damaged or hostile headers: refused with a
//! clear lowercase reason, no panic, the file byte-identical.

use super::util::{open, poke, qemu_create, qemu_io};
use vdisk_core::ErrorKind;

/// Byte edits: (file offset, new bytes).
type Edits = Vec<(u64, Vec<u8>)>;

/// Makes a small v3 image with data, applies `edit` (offset, bytes), and opens it: returns
/// the error, after checking the file did not change.
fn refused_after(edits: &[(u64, Vec<u8>)]) -> vdisk_core::Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    qemu_io(&path, "qcow2", &["write -P 5 0 128k"]);
    for (at, bytes) in edits {
        poke(&path, *at, bytes);
    }
    let before = std::fs::read(&path).unwrap();
    let Err(err) = open(&path) else {
        panic!("{edits:?} was not refused");
    };
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    let first = err.message().chars().next().unwrap();
    assert!(!first.is_uppercase(), "messages start lowercase: {err}");
    err
}

#[test]
fn unhandled_feature_bits_are_refused_with_their_reason_and_the_file_unchanged() {
    let cases: [(u64, &str, ErrorKind); 6] = [
        (1 << 0, "qemu-img check -r all", ErrorKind::Unsupported),
        (1 << 1, "corrupt", ErrorKind::InvalidImage),
        (1 << 2, "external data file", ErrorKind::Unsupported),
        (1 << 4, "extended l2", ErrorKind::Unsupported),
        (
            1 << 9,
            "unknown incompatible features: bit 9",
            ErrorKind::Unsupported,
        ),
        (1 << 3, "", ErrorKind::Unsupported),
    ];
    for (bit, words, kind) in cases {
        let mut edits = vec![(72, bit.to_be_bytes().to_vec())];
        if bit == 1 << 3 {
            // The compression type bit with zstd.
            edits.push((104, vec![1]));
        }
        let err = refused_after(&edits);
        assert_eq!(err.kind(), kind, "bit {bit}: {err}");
        let words = if words.is_empty() { "zstd" } else { words };
        assert!(err.message().contains(words), "bit {bit}: {err}");
    }
    let err = refused_after(&[(32, 1u32.to_be_bytes().to_vec())]);
    assert!(err.message().contains("encrypted"), "{err}");
}

#[test]
fn hostile_headers_are_refused_without_panic_and_the_file_unchanged() {
    let cases: Vec<(Edits, &str)> = vec![
        (vec![(36, u32::MAX.to_be_bytes().to_vec())], "l1 table"),
        (
            vec![(40, (1u64 << 40).to_be_bytes().to_vec())],
            "past the end",
        ),
        (
            vec![(48, (1u64 << 40).to_be_bytes().to_vec())],
            "past the end",
        ),
        (vec![(20, 30u32.to_be_bytes().to_vec())], "cluster_bits"),
        (vec![(96, 7u32.to_be_bytes().to_vec())], "refcount_order"),
        (
            vec![(100, 0x1_0008u32.to_be_bytes().to_vec())],
            "header_length",
        ),
        (
            vec![(56, u32::MAX.to_be_bytes().to_vec())],
            "refcount table",
        ),
        (vec![(60, u32::MAX.to_be_bytes().to_vec())], "snapshots"),
        (
            vec![
                (16, 2000u32.to_be_bytes().to_vec()),
                (8, 200u64.to_be_bytes().to_vec()),
            ],
            "backing file name",
        ),
        (
            vec![(112, vec![0, 0, 0, 9, 0xff, 0xff, 0xff, 0xf0])],
            "header extension",
        ),
    ];
    for (edits, words) in cases {
        let err = refused_after(&edits);
        assert!(
            matches!(err.kind(), ErrorKind::InvalidImage | ErrorKind::Unsupported),
            "{edits:?}: {err}"
        );
        assert!(err.message().contains(words), "{edits:?}: {err}");
    }
}

#[test]
fn tables_that_overlap_each_other_or_the_header_are_refused() {
    // The refcount table moved onto the L1 table, then the L1 table onto the header.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    let l1 = super::util::peek64(&path, 40);
    drop(dir);
    let err = refused_after(&[(48, l1.to_be_bytes().to_vec())]);
    assert!(err.message().contains("overlaps"), "{err}");
    let err = refused_after(&[(40, 0u64.to_be_bytes().to_vec())]);
    assert!(
        err.message().contains("overlaps the header cluster"),
        "{err}"
    );
}
