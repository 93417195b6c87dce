//! Not NTFS at all, or NTFS with damage: `NotMine` or `Untrusted`, never a panic, and `Err`
//! only when the device fails.

use std::path::Path;

use vdisk_core::{ErrorKind, FsAnalyzer, FsVerdict, MemFile};

use super::util::*;

fn fresh(dir: &Path) -> std::path::PathBuf {
    let v = make_volume(dir, "vol.img", 8 << 20, 4096);
    copy_in(&v, "keep.bin", &pseudo_random(40_000, 9));
    v
}

/// A [`vdisk_core::BlockDevice`] over bytes in memory.
#[derive(Debug)]
struct Bytes(MemFile);

impl vdisk_core::BlockDevice for Bytes {
    fn size(&self) -> u64 {
        vdisk_core::HostFile::len(&self.0).unwrap()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<()> {
        vdisk_core::HostFile::read_at(&self.0, buf, offset)
    }
}

fn analyze_bytes(bytes: Vec<u8>) -> FsVerdict {
    vdisk_ntfs::ANALYZER
        .analyze(&Bytes(MemFile::from_bytes(bytes)))
        .unwrap()
}

#[test]
fn random_bytes_empty_and_tiny_devices_are_not_ntfs() {
    assert_eq!(analyze_bytes(pseudo_random(1 << 20, 1)), FsVerdict::NotMine);
    assert_eq!(analyze_bytes(Vec::new()), FsVerdict::NotMine);
    assert_eq!(analyze_bytes(vec![0; 100]), FsVerdict::NotMine);
    assert_eq!(analyze_bytes(vec![0; 1 << 20]), FsVerdict::NotMine);
}

#[test]
fn ext2_volume_made_by_mke2fs_is_not_ntfs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.img");
    std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    run("mkfs.ext2", &["-q", "-F", path.to_str().unwrap()]);
    assert_eq!(analyze(&path), FsVerdict::NotMine);
}

#[test]
fn out_of_range_boot_sector_fields_make_a_real_volume_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let good = std::fs::read(&v).unwrap();
    let cases: &[(usize, &[u8], &str)] = &[
        (11, &[0x00, 0x01], "bytes per sector"),
        (13, &[3], "sectors per cluster"),
        (40, &[0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0], "truncated"),
        (48, &[0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0], "$MFT at cluster"),
        (64, &[0x40], "MFT record size"),
    ];
    for &(at, bytes, expect) in cases {
        let mut img = good.clone();
        img[at..at + bytes.len()].copy_from_slice(bytes);
        match analyze_bytes(img) {
            FsVerdict::Untrusted { reason, .. } => {
                assert!(reason.contains(expect), "{at}: {reason}")
            }
            other => panic!("mutation at {at} gave {other:?}"),
        }
    }
}

#[test]
fn device_shorter_than_the_volume_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let mut img = std::fs::read(&v).unwrap();
    img.truncate(img.len() / 2);
    assert!(matches!(
        analyze_bytes(img),
        FsVerdict::Untrusted { reason, .. } if reason.contains("truncated")
    ));
}

/// Offset of MFT record `n` in a fresh mkntfs volume (its MFT is one contiguous run).
fn mft_record(volume: &Path, n: u64) -> u64 {
    let boot = peek(volume, 0, 512);
    let spc = u64::from(boot[13]);
    let bps = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let mft_lcn = u64::from_le_bytes(boot[48..56].try_into().unwrap());
    mft_lcn * spc * bps + n * 1024
}

#[test]
fn damaged_bitmap_record_makes_the_volume_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let good = std::fs::read(&v).unwrap();
    let at = mft_record(&v, 6) as usize;
    assert_eq!(&good[at..at + 4], b"FILE");
    // Signature gone.
    let mut img = good.clone();
    img[at..at + 4].copy_from_slice(b"BAAD");
    assert!(matches!(analyze_bytes(img), FsVerdict::Untrusted { .. }));
    // Update sequence mismatch at the end of the record's first sector (a torn write).
    let mut img = good.clone();
    img[at + 510] ^= 0xFF;
    assert!(matches!(analyze_bytes(img), FsVerdict::Untrusted { .. }));
}

#[test]
fn bitmap_marking_system_files_free_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let boot = peek(&v, 0, 512);
    let mut img = std::fs::read(&v).unwrap();
    // Clear the bit of the MFT's first cluster in $Bitmap, found through the ntfs crate.
    let mut f = std::fs::File::open(&v).unwrap();
    let ntfs = ntfs::Ntfs::new(&mut f).unwrap();
    let bitmap = ntfs.file(&mut f, 6).unwrap();
    let data = bitmap.data(&mut f, "").unwrap().unwrap();
    let value = data.to_attribute().unwrap().value(&mut f).unwrap();
    let bitmap_at = value.data_position().value().unwrap().get();
    let mft_lcn = u64::from_le_bytes(boot[48..56].try_into().unwrap());
    let byte = (bitmap_at + mft_lcn / 8) as usize;
    img[byte] &= !(1 << (mft_lcn % 8));
    match analyze_bytes(img) {
        FsVerdict::Untrusted { reason, .. } => assert!(reason.contains("$MFT"), "{reason}"),
        other => panic!("got {other:?}"),
    }
}

#[test]
fn bitmap_shorter_than_the_cluster_count_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    // Double the device and claim the boot sector covers it all: the 8 MiB volume's
    // $Bitmap (256 bytes for 2047 clusters) cannot describe 4095 clusters.
    let mut img = std::fs::read(&v).unwrap();
    let sectors = (img.len() as u64 * 2) / 512 - 1;
    img.resize(img.len() * 2, 0);
    img[40..48].copy_from_slice(&sectors.to_le_bytes());
    match analyze_bytes(img) {
        FsVerdict::Untrusted { reason, .. } => {
            assert!(reason.contains("$Bitmap holds 256 bytes"), "{reason}")
        }
        other => panic!("got {other:?}"),
    }
}

/// Byte flips all over the MFT's system records: any verdict, but no panic and no `Err`.
#[test]
fn corrupted_system_records_never_panic_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let good = std::fs::read(&v).unwrap();
    let mft = mft_record(&v, 0) as usize;
    let noise = pseudo_random(4 * 400, 11);
    for (i, chunk) in noise.chunks_exact(4).enumerate() {
        let mut img = good.clone();
        let at = mft + (u32::from_le_bytes(chunk.try_into().unwrap()) as usize % (16 * 1024));
        img[at] ^= 1 << (i % 8);
        let verdict = analyze_bytes(img);
        assert!(verdict != FsVerdict::NotMine, "flip at {at}");
    }
}

#[test]
fn device_read_failure_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    let device = FailingDevice {
        inner: FileDevice::open(&v).unwrap(),
        fail_from: 4096,
    };
    let err = vdisk_ntfs::ANALYZER.analyze(&device).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let first = FailingDevice {
        inner: FileDevice::open(&v).unwrap(),
        fail_from: 0,
    };
    assert_eq!(
        vdisk_ntfs::ANALYZER.analyze(&first).unwrap_err().kind(),
        ErrorKind::Io
    );
}

/// Found by `cargo xtask fuzz disk_analysis`: a root-directory index record whose used size
/// makes the `ntfs` crate's `INDEX_RECORD_HEADER_SIZE + index_data_size()` overflow (a panic
/// with overflow checks, a wrapped size without). The volume must come out untrusted (the
/// panic is contained), never a panic escaping the analyser and never `Err`.
#[test]
fn index_record_whose_used_size_overflows_in_the_ntfs_crate_is_untrusted_not_a_panic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-index-record-size-overflow.raw.bz2");
    let out = std::process::Command::new("bzcat")
        .arg(&path)
        .output()
        .expect("bzcat (package bzip2) must be installed");
    assert!(out.status.success(), "bzcat {}", path.display());
    assert_eq!(out.stdout.len(), 4 << 20);
    match analyze_bytes(out.stdout) {
        FsVerdict::Untrusted { fs, reason } => {
            assert_eq!(fs, "ntfs");
            assert!(!reason.is_empty());
        }
        other => panic!("a damaged root index must not be trusted: {other:?}"),
    }
}
