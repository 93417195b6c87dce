//! Features this version does not handle, and damaged or hostile headers: refused with a
//! clear lowercase reason, no panic, the file byte-identical.

use super::compact_util::compact_path;
use super::util::{open, peek64, poke, qemu_create, qemu_io};
use vdisk_core::{ErrorKind, Mode};

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

/// The offsets of a fresh test image's L1 table and its first L2 table.
fn tables() -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    qemu_io(&path, "qcow2", &["write -P 5 0 128k"]);
    let l1 = super::util::peek64(&path, 40);
    let l2 = super::util::peek64(&path, l1) & 0x00ff_ffff_ffff_fe00;
    (l1, l2)
}

#[test]
fn hostile_l1_and_l2_entries_are_refused_at_open_without_panic() {
    let (l1, l2) = tables();
    let copied = 1u64 << 63;
    let cases: Vec<(Edits, &str)> = vec![
        (
            vec![(l1, (copied | 1 << 40).to_be_bytes().to_vec())],
            "past the end",
        ),
        (
            vec![(l1, (copied | 0x1000).to_be_bytes().to_vec())],
            "unaligned",
        ),
        (
            vec![(l1, (copied | 1 << 62).to_be_bytes().to_vec())],
            "reserved bits",
        ),
        (
            vec![(l2, (copied | 0x50002).to_be_bytes().to_vec())],
            "reserved bits",
        ),
        (
            vec![(l2, (copied | 0x58000).to_be_bytes().to_vec())],
            "not cluster-aligned",
        ),
        (
            vec![(l2, (copied | 1 << 45).to_be_bytes().to_vec())],
            "past the end",
        ),
        (
            vec![(l2, (copied | 0x100).to_be_bytes().to_vec())],
            "reserved bits",
        ),
        (
            vec![(l2, (copied | 1 << 62 | 0x50000).to_be_bytes().to_vec())],
            "COPIED",
        ),
        (
            vec![(l2 + 8, (3u64 << 62).to_be_bytes().to_vec())],
            "compressed",
        ),
    ];
    for (edits, words) in cases {
        let err = refused_after(&edits);
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{edits:?}: {err}");
        assert!(err.message().contains(words), "{edits:?}: {err}");
    }
}

#[test]
fn a_zero_flag_in_a_version_2_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.qcow2");
    qemu_create(&path, "compat=0.10,cluster_size=65536", "4M");
    qemu_io(&path, "qcow2", &["write -P 5 0 64k"]);
    let l2 = super::util::peek64(&path, super::util::peek64(&path, 40)) & 0x00ff_ffff_ffff_fe00;
    poke(&path, l2 + 8 * 3, &1u64.to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    let err = open(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("version 2 images do not have"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_damaged_compressed_cluster_fails_its_read_cleanly_and_the_rest_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.qcow2");
    let path = dir.path().join("c.qcow2");
    qemu_create(&src, "", "4M");
    qemu_io(&src, "qcow2", &["write -P 5 0 64k", "write -P 6 64k 64k"]);
    super::util::tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            super::util::s(&src),
            super::util::s(&path),
        ],
    );
    let l2 = super::util::peek64(&path, super::util::peek64(&path, 40)) & 0x00ff_ffff_ffff_fe00;
    let entry = super::util::peek64(&path, l2);
    let offset = entry & ((1 << 54) - 1);
    poke(&path, offset, &[0xff; 64]);
    let img = open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = img.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("does not inflate"), "{err}");
    img.read_at(&mut buf, 65536).unwrap();
    assert!(buf.iter().all(|&b| b == 6));
}

#[test]
fn a_data_cluster_pointed_into_the_l1_table_is_reported_as_an_overlap_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ov.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    qemu_io(&path, "qcow2", &["write -P 5 0 128k"]);
    let l1 = super::util::peek64(&path, 40);
    let l2 = super::util::peek64(&path, l1) & 0x00ff_ffff_ffff_fe00;
    poke(&path, l2 + 8, &((1u64 << 63) | l1).to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    let problems = super::util::check(&path);
    let errors: Vec<_> = problems
        .iter()
        .filter(|p| p.severity == vdisk_core::Severity::Error)
        .map(|p| p.message.clone())
        .collect();
    assert!(
        errors.iter().any(|m| m.contains("overlaps the l1 table")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains("refcount 1 but 2 references")),
        "{errors:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_hostile_snapshot_table_is_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sn.qcow2");
    qemu_create(&path, "cluster_size=65536", "4M");
    qemu_io(&path, "qcow2", &["write -P 5 0 64k"]);
    let end = std::fs::metadata(&path).unwrap().len();
    // One snapshot entry at a new cluster at the end, claiming 4 GiB of extra data.
    let mut entry = vec![0u8; 65536];
    entry[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    poke(&path, end, &entry);
    let edits = [
        (60, 1u32.to_be_bytes().to_vec()),
        (64, end.to_be_bytes().to_vec()),
    ];
    for (at, bytes) in &edits {
        poke(&path, *at, bytes);
    }
    let before = std::fs::read(&path).unwrap();
    let err = open(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("extra data"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn check_reports_a_compressed_cluster_that_does_not_inflate() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.qcow2");
    let path = dir.path().join("c.qcow2");
    qemu_create(&src, "", "4M");
    qemu_io(&src, "qcow2", &["write -P 5 0 64k"]);
    super::util::tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            super::util::s(&src),
            super::util::s(&path),
        ],
    );
    assert!(super::util::check(&path).is_empty());
    let l2 = super::util::peek64(&path, super::util::peek64(&path, 40)) & 0x00ff_ffff_ffff_fe00;
    let offset = super::util::peek64(&path, l2) & ((1 << 54) - 1);
    poke(&path, offset, &[0xff; 64]);
    let problems = super::util::check(&path);
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("guest cluster 0: the compressed cluster")),
        "{problems:?}"
    );
}

/// A v3 header of 512-byte clusters with the L1 table at `l1` (`l1_size` entries) and a
/// one-cluster refcount table at 512.
fn header(size: u64, l1: u64, l1_size: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&9u32.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&l1_size.to_be_bytes());
    h[40..48].copy_from_slice(&l1.to_be_bytes());
    h[48..56].copy_from_slice(&512u64.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    h
}

#[test]
fn an_l1_table_naming_more_l2_entries_than_the_memory_cap_is_refused_before_loading_them() {
    // 600,000 L1 entries all naming the same L2 table: 38 million L2 entries to load.
    let entries = 600_000u32;
    let l1 = 1536u64;
    let mut bytes = header(512, l1, entries);
    bytes.resize(l1 as usize + entries as usize * 8, 0);
    let entry = ((1u64 << 63) | 1024).to_be_bytes();
    for e in bytes[l1 as usize..].chunks_exact_mut(8) {
        e.copy_from_slice(&entry);
    }
    let err = vdisk_core::testing::open_bytes(&vdisk_qcow2::DRIVER, bytes, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.message().contains("at most"), "{err}");
}

#[test]
fn an_l2_table_pointed_onto_the_refcount_table_is_refused_by_every_compaction_mode_and_the_file_unchanged()
 {
    // The mutation fuzzer's first qcow2 finding: with L1[0] naming the refcount table's
    // cluster as an L2 table, guest cluster 0 read the refcount block, and compaction
    // (nothing to reclaim, a truncation) rewrote that block: the guest content changed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.qcow2");
    qemu_create(&path, "cluster_size=65536", "8M");
    qemu_io(
        &path,
        "qcow2",
        &["write -P 0x55 0 100k", "write -P 0x66 5M 4k"],
    );
    let (l1, refcount_table) = (peek64(&path, 40), peek64(&path, 48));
    poke(&path, l1, &((1u64 << 63) | refcount_table).to_be_bytes());
    let before = std::fs::read(&path).unwrap();
    for mode in Mode::ALL {
        let err = compact_path(&path, mode).expect_err("a damaged image was compacted");
        assert_eq!(err.kind(), ErrorKind::InvalidImage, "{mode:?}: {err}");
        let message = err.message();
        assert!(
            message.contains("damaged") && message.contains("overlaps the refcount table"),
            "{mode:?}: {err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{mode:?}: the file changed"
        );
    }
}

/// Runs `f` on a thread and fails if it has not returned after two minutes: a guard against
/// an unbounded walk (never a measure of speed).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{what} did not finish: an unbounded walk"))
}

#[test]
fn a_snapshot_l1_table_naming_one_l2_table_4m_times_is_checked_once_and_compaction_refused() {
    // A 34 MiB image: a snapshot whose 32 MiB L1 table (qemu's largest) names one crafted L2
    // table 4M times, that table naming one data cluster 8192 times: 3.4e10 references.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.qcow2");
    let cs = 65536u64;
    qemu_create(&path, "cluster_size=65536", "64M");
    qemu_io(&path, "qcow2", &["write -P 5 0 64k"]);
    super::util::tool(
        "qemu-img",
        &["snapshot", "-c", "s1", path.to_str().unwrap()],
    );
    let snapshot_table = peek64(&path, 64);
    let l2 = peek64(&path, peek64(&path, 40)) & 0x00ff_ffff_ffff_fe00;
    let data = peek64(&path, l2) & 0x00ff_ffff_ffff_fe00;
    let x = std::fs::metadata(&path).unwrap().len().div_ceil(cs) * cs;
    let table: Vec<u8> = (0..cs / 8).flat_map(|_| data.to_be_bytes()).collect();
    poke(&path, x, &table);
    let entries = 4u64 << 20;
    let l1: Vec<u8> = (0..entries).flat_map(|_| x.to_be_bytes()).collect();
    poke(&path, x + cs, &l1);
    poke(&path, snapshot_table, &(x + cs).to_be_bytes());
    poke(&path, snapshot_table + 8, &(entries as u32).to_be_bytes());
    let before = std::fs::read(&path).unwrap();

    let image = vdisk_qcow2::Qcow2Image::open_with(
        Box::new(vdisk_core::StdFile::open(&path, vdisk_core::Access::ReadOnly).unwrap()),
        &vdisk_core::OpenOptions::read_only(),
    )
    .unwrap();
    let (problems, map) = finishes("the check and the host space map", move || {
        let problems = vdisk_core::DiskImage::check(&image).unwrap();
        (problems, image.host_map().map(|_| ()))
    });
    // Counted as qemu counts them: the crafted table 4M times, the data cluster far more
    // often than its refcount says.
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == vdisk_core::Severity::Error)
        .map(|p| p.message.clone())
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains(&format!("{x:#x} has refcount 0 but"))),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains(&format!("{data:#x} has refcount 2 but"))),
        "{errors:?}"
    );
    let _ = map; // refused or not, it returned
    let p = path.clone();
    let err = finishes("compaction", move || {
        compact_path(&p, Mode::Full).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
}

#[test]
fn snapshot_l1_tables_that_together_need_more_bytes_than_the_file_are_refused_at_open() {
    // Two snapshots each naming the same 32 MiB L1 table (4M unallocated entries): each fits
    // in the 33 MiB file, both together cannot, so they share clusters (qemu never does that)
    // and every walk over them would repeat the work.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.qcow2");
    let cs = 65536u64;
    qemu_create(&path, "cluster_size=65536", "64M");
    qemu_io(&path, "qcow2", &["write -P 5 0 64k"]);
    for name in ["a", "b"] {
        super::util::tool(
            "qemu-img",
            &["snapshot", "-c", name, path.to_str().unwrap()],
        );
    }
    let x = std::fs::metadata(&path).unwrap().len().div_ceil(cs) * cs;
    let entries = 4u64 << 20;
    poke(&path, x, &vec![0u8; (entries * 8) as usize]);
    let bytes = std::fs::read(&path).unwrap();
    let be = |at: u64, n: usize| -> u64 {
        bytes[at as usize..at as usize + n]
            .iter()
            .fold(0, |v, &b| (v << 8) | u64::from(b))
    };
    let first = peek64(&path, 64);
    // Entry: l1 offset (8), l1 entries (4), id length (2), name length (2), ..., extra data
    // length at 36; then extra data, id and name, padded to 8 bytes.
    let second = (first + 40 + be(first + 36, 4) + be(first + 12, 2) + be(first + 14, 2))
        .next_multiple_of(8);
    let mut edits: Edits = Vec::new();
    for at in [first, second] {
        edits.push((at, x.to_be_bytes().to_vec()));
        edits.push((at + 8, (entries as u32).to_be_bytes().to_vec()));
    }
    for (at, b) in &edits {
        poke(&path, *at, b);
    }
    let before = std::fs::read(&path).unwrap();
    let Err(err) = open(&path) else {
        panic!("snapshot l1 tables sharing clusters were not refused");
    };
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    assert!(err.message().contains("more than the"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
}

#[test]
fn a_virtual_size_of_more_clusters_than_vdisk_plans_with_is_refused_as_unsupported() {
    // qemu makes these in a few MiB: a header can claim 256 TiB at 64 KiB clusters (2^32
    // blocks) or 2 EiB at 2 MiB clusters; vdisk would plan with one state per block.
    let dir = tempfile::tempdir().unwrap();
    for (opts, size) in [("cluster_size=65536", "256T"), ("cluster_size=4096", "2T")] {
        let path = dir.path().join("big.qcow2");
        let _ = std::fs::remove_file(&path);
        qemu_create(&path, opts, size);
        qemu_io(&path, "qcow2", &["write -P 5 0 64k"]);
        let before = std::fs::read(&path).unwrap();
        let Err(err) = open(&path) else {
            panic!("{size} with {opts} was not refused");
        };
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.message().contains("more than the 67108864"), "{err}");
        assert_eq!(
            err.kind(),
            compact_path(&path, Mode::Full).unwrap_err().kind()
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    }
    // The largest that opens: 4 TiB at 64 KiB clusters.
    let path = dir.path().join("4t.qcow2");
    qemu_create(&path, "cluster_size=65536", "4T");
    assert!(open(&path).is_ok());
}
