//! Hostile input: one-field mutations must fail with a clear error, never panic, and never
//! change the file.

use vdisk_core::{ErrorKind, FormatDriver, MemFile, OpenOptions, Result, Severity};

use super::util::{
    BAT_REGION, FIXTURES, METADATA_REGION, fix_crc, open_bytes, qemu_create, read, region_offset,
    run,
};

const HEADERS: [usize; 2] = [0x10000, 0x20000];
const REGION_TABLES: [usize; 2] = [0x30000, 0x40000];

/// A small qemu-made dynamic image with data in blocks 0 and 2.
fn base() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.vhdx");
    let p = path.to_str().unwrap();
    qemu_create(p, "block_size=1M,block_state_zero=off", "8M");
    run("qemu-io", &["-f", "vhdx", "-c", "write -P 0x77 0 1M", p]);
    run("qemu-io", &["-f", "vhdx", "-c", "write -P 0x88 2M 4096", p]);
    std::fs::read(&path).unwrap()
}

/// The dirty-log fixture in memory.
fn dirty() -> Vec<u8> {
    let out = std::process::Command::new("bzcat")
        .arg(format!("{FIXTURES}/iotest-dirtylog-10G-4M.vhdx.bz2"))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Opens `bytes` read-only; asserts the bytes are unchanged afterwards.
fn open_unchanged(bytes: &[u8]) -> Result<Box<dyn vdisk_core::DiskImage>> {
    let file = MemFile::from_bytes(bytes.to_vec());
    let result = vdisk_vhdx::DRIVER.open(Box::new(file.read_only()), &OpenOptions::read_only());
    assert!(file.to_vec() == bytes, "open changed the file");
    result
}

fn expect_err(bytes: &[u8], kind: ErrorKind, needle: &str) {
    let err = open_unchanged(bytes).expect_err("open must fail");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.to_string().contains(needle),
        "message {err:?} lacks {needle:?}"
    );
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Index in the first region table of region `id`.
fn region_entry(b: &[u8], id: u128) -> usize {
    let want = uuid::Uuid::from_u128(id).to_bytes_le();
    (0..2)
        .map(|i| 0x30000 + 16 + 32 * i)
        .find(|&e| b[e..e + 16] == want)
        .unwrap()
}

/// Applies `f` to both region tables and fixes their checksums.
fn edit_regions(b: &mut [u8], f: impl Fn(&mut [u8], usize)) {
    for rt in REGION_TABLES {
        f(b, rt);
        fix_crc(b, rt, 0x10000);
    }
}

#[test]
fn base_image_opens_and_reads() {
    let b = base();
    let image = open_unchanged(&b).unwrap();
    assert_eq!(read(&*image, 0, 2), [0x77, 0x77]);
    assert_eq!(read(&*image, 2 << 20, 1), [0x88]);
}

#[test]
fn bad_signature_is_not_a_vhdx() {
    let mut b = base();
    b[0] = b'V';
    expect_err(&b, ErrorKind::InvalidImage, "signature");
}

#[test]
fn one_bad_header_crc_falls_back_to_the_other_and_check_reports_it() {
    let mut b = base();
    b[HEADERS[0] + 100] ^= 1;
    open_unchanged(&b).unwrap();
    let report = vdisk_vhdx::DRIVER
        .check(Box::new(MemFile::from_bytes(b.clone()).read_only()))
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("header 1"))
    );
    b[HEADERS[1] + 100] ^= 1;
    expect_err(&b, ErrorKind::InvalidImage, "neither vhdx header");
}

#[test]
fn equal_sequence_numbers_with_different_headers_are_refused() {
    let mut b = base();
    let seq = u64::from_le_bytes(b[HEADERS[0] + 8..HEADERS[0] + 16].try_into().unwrap());
    set_u64(&mut b, HEADERS[1] + 8, seq);
    b[HEADERS[1] + 16] ^= 0xff; // different file write guid
    fix_crc(&mut b, HEADERS[1], 4096);
    expect_err(&b, ErrorKind::InvalidImage, "different contents");
}

#[test]
fn bad_region_table_crcs_are_refused_one_is_tolerated() {
    let mut b = base();
    b[REGION_TABLES[0] + 20] ^= 1;
    open_unchanged(&b).unwrap();
    b[REGION_TABLES[1] + 20] ^= 1;
    expect_err(&b, ErrorKind::InvalidImage, "neither region table");
}

#[test]
fn huge_region_entry_count_is_refused() {
    let mut b = base();
    edit_regions(&mut b, |b, rt| set_u32(b, rt + 8, u32::MAX));
    expect_err(&b, ErrorKind::InvalidImage, "entries");
}

#[test]
fn overlapping_regions_are_refused() {
    let mut b = base();
    let bat = region_offset(&b, BAT_REGION);
    let e = region_entry(&b, METADATA_REGION) - 0x30000;
    edit_regions(&mut b, |b, rt| set_u64(b, rt + e + 16, bat));
    expect_err(&b, ErrorKind::InvalidImage, "overlaps");
}

#[test]
fn unknown_required_region_is_unsupported_and_named() {
    let mut b = base();
    edit_regions(&mut b, |b, rt| {
        set_u32(b, rt + 8, 3);
        let e = rt + 16 + 64;
        b[e..e + 16].copy_from_slice(&[0xab; 16]);
        set_u64(b, e + 16, 7 << 20);
        set_u32(b, e + 24, 1 << 20);
        set_u32(b, e + 28, 1);
    });
    expect_err(
        &b,
        ErrorKind::Unsupported,
        "abababab-abab-abab-abab-abababababab",
    );
}

#[test]
fn bat_entry_past_eof_is_refused() {
    let mut b = base();
    let bat = region_offset(&b, BAT_REGION) as usize;
    set_u64(&mut b, bat + 8, (1 << 40) | 6); // block 1 at 1 TiB (1 << 20 MiB)
    expect_err(&b, ErrorKind::InvalidImage, "past the end");
}

#[test]
fn bat_entries_sharing_a_block_are_refused() {
    let mut b = base();
    let bat = region_offset(&b, BAT_REGION) as usize;
    let first = u64::from_le_bytes(b[bat..bat + 8].try_into().unwrap());
    set_u64(&mut b, bat + 8, first);
    expect_err(&b, ErrorKind::InvalidImage, "overlapping");
}

#[test]
fn bat_entry_inside_metadata_and_bad_states_are_refused() {
    let mut b = base();
    let bat = region_offset(&b, BAT_REGION) as usize;
    let meta = region_offset(&b, METADATA_REGION);
    set_u64(&mut b, bat + 8, meta | 6);
    expect_err(&b, ErrorKind::InvalidImage, "overlaps metadata");
    let mut b = base();
    set_u64(&mut b, bat + 8, 5);
    expect_err(&b, ErrorKind::InvalidImage, "invalid state 5");
}

fn metadata_entry(b: &[u8], item: u128) -> usize {
    let meta = region_offset(b, METADATA_REGION) as usize;
    let want = uuid::Uuid::from_u128(item).to_bytes_le();
    (0..5)
        .map(|i| meta + 32 + 32 * i)
        .find(|&e| b[e..e + 16] == want)
        .unwrap()
}

const FILE_PARAMETERS: u128 = 0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B;
const DISK_SIZE: u128 = 0x2FA54224_CD1B_4876_B211_5DBED83BF4B8;

#[test]
fn absurd_metadata_item_length_is_refused() {
    let mut b = base();
    let e = metadata_entry(&b, DISK_SIZE);
    set_u32(&mut b, e + 20, u32::MAX);
    expect_err(&b, ErrorKind::InvalidImage, "metadata item");
    let mut b = base();
    set_u32(&mut b, e + 16, u32::MAX - 2);
    expect_err(&b, ErrorKind::InvalidImage, "outside");
}

#[test]
fn huge_metadata_entry_count_and_bad_values_are_refused() {
    let mut b = base();
    let meta = region_offset(&b, METADATA_REGION) as usize;
    b[meta + 10..meta + 12].copy_from_slice(&u16::MAX.to_le_bytes());
    expect_err(&b, ErrorKind::InvalidImage, "entries");

    let mut b = base();
    let e = metadata_entry(&b, DISK_SIZE);
    let off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize;
    set_u64(&mut b, meta + off, u64::MAX);
    expect_err(&b, ErrorKind::InvalidImage, "virtual disk size");

    let mut b = base();
    let e = metadata_entry(&b, FILE_PARAMETERS);
    let off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize;
    set_u32(&mut b, meta + off, 3 << 20);
    expect_err(&b, ErrorKind::InvalidImage, "block size");
}

#[test]
fn unknown_required_metadata_item_is_unsupported() {
    let mut b = base();
    let e = metadata_entry(&b, DISK_SIZE);
    b[e..e + 16].copy_from_slice(&[0xcd; 16]);
    set_u32(&mut b, e + 24, 4);
    expect_err(
        &b,
        ErrorKind::Unsupported,
        "cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd",
    );
}

#[test]
fn has_parent_without_a_parent_locator_is_refused() {
    let mut b = base();
    let meta = region_offset(&b, METADATA_REGION) as usize;
    let e = metadata_entry(&b, FILE_PARAMETERS);
    let off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize;
    b[meta + off + 4] |= 2;
    expect_err(
        &b,
        ErrorKind::InvalidImage,
        "differencing (HasParent) but has no parent locator item",
    );
}

#[test]
fn writable_open_of_a_clean_image_writes_nothing_until_asked() {
    let b = base();
    let file = MemFile::from_bytes(b.clone());
    let image = vdisk_vhdx::DRIVER
        .open(Box::new(file.clone()), &OpenOptions::read_write())
        .unwrap();
    drop(image);
    assert!(file.to_vec() == b);
}

#[test]
fn writable_open_of_a_read_only_file_is_refused() {
    let file = MemFile::from_bytes(base()).read_only();
    let err = vdisk_vhdx::DRIVER
        .open(Box::new(file), &OpenOptions::read_write())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
}

/// Log entry 7 (the active one) starts at 0xc000 in the log at 1 MiB.
const ACTIVE_ENTRY: usize = 0x10_0000 + 0xc000;

#[test]
fn log_entry_with_bad_crc_is_refused_not_skipped() {
    let mut b = dirty();
    b[ACTIVE_ENTRY + 0x1800] ^= 1; // inside its data sector
    expect_err(&b, ErrorKind::InvalidImage, "no valid log sequence");
}

#[test]
fn log_guid_matching_no_entry_is_refused() {
    let mut b = dirty();
    for h in HEADERS {
        b[h + 48] ^= 0xff;
        fix_crc(&mut b, h, 4096);
    }
    expect_err(&b, ErrorKind::InvalidImage, "no valid log sequence");
}

#[test]
fn flushed_file_offset_beyond_eof_is_truncated() {
    let mut b = dirty();
    set_u64(&mut b, ACTIVE_ENTRY + 48, 1 << 40);
    b[ACTIVE_ENTRY + 4..ACTIVE_ENTRY + 8].fill(0);
    let crc = crc32c::crc32c(&b[ACTIVE_ENTRY..ACTIVE_ENTRY + 8192]);
    b[ACTIVE_ENTRY + 4..ACTIVE_ENTRY + 8].copy_from_slice(&crc.to_le_bytes());
    expect_err(&b, ErrorKind::InvalidImage, "truncated");
    // The same with the real file cut short.
    let mut b = dirty();
    b.truncate(b.len() - (1 << 20));
    expect_err(&b, ErrorKind::InvalidImage, "truncated");
}

#[test]
fn truncated_file_and_garbage_are_refused() {
    let b = base();
    expect_err(&b[..0x8000], ErrorKind::InvalidImage, "shorter");
    expect_err(
        &b[..b.len() - (3 << 20)],
        ErrorKind::InvalidImage,
        "past the end",
    );
    assert!(open_bytes(&[]).is_err());
    assert!(open_bytes(&[0u8; 4096]).is_err());
}

#[test]
fn check_lists_every_bad_bat_entry() {
    let mut b = base();
    let bat = region_offset(&b, BAT_REGION) as usize;
    set_u64(&mut b, bat + 8, (1 << 40) | 6);
    set_u64(&mut b, bat + 24, 4);
    let report = vdisk_vhdx::DRIVER
        .check(Box::new(MemFile::from_bytes(b).read_only()))
        .unwrap();
    let errors = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    assert_eq!(errors, 2, "{:?}", report.problems);
    assert!(!report.safe_to_compact());
}

#[test]
fn reads_outside_the_disk_fail_without_panicking() {
    let image = open_bytes(&base()).unwrap();
    let size = image.size();
    let mut buf = [0u8; 16];
    for off in [size, size - 1, u64::MAX, u64::MAX - 4] {
        assert_eq!(
            image.read_at(&mut buf, off).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }
    image.read_at(&mut [], size).unwrap();
}

#[test]
fn probe_claims_vhdx_only() {
    use vdisk_core::Confidence;
    let probe = |b: Vec<u8>| vdisk_vhdx::DRIVER.probe(&MemFile::from_bytes(b)).unwrap();
    assert_eq!(probe(base()), Confidence::Yes);
    assert_eq!(probe(b"conectix".to_vec()), Confidence::No);
    assert_eq!(probe(vec![]), Confidence::No);
    assert_eq!(vdisk_vhdx::DRIVER.id(), "vhdx");
    assert_eq!(vdisk_vhdx::DRIVER.extensions(), ["vhdx", "avhdx"]);
}

const LOGICAL_SECTOR: u128 = 0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F;
const PHYSICAL_SECTOR: u128 = 0xCDA348C7_445D_4471_9CC9_E9885251C556;

/// Applies `f` to both headers (4 KiB each) and fixes their checksums.
fn edit_headers(b: &mut [u8], f: impl Fn(&mut [u8], usize)) {
    for h in HEADERS {
        f(b, h);
        fix_crc(b, h, 0x1000);
    }
}

/// Host offset of the value of metadata item `item`.
fn item_value(b: &[u8], item: u128) -> usize {
    let meta = region_offset(b, METADATA_REGION) as usize;
    let e = metadata_entry(b, item);
    meta + u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize
}

/// One field at a time, as MS-VHDX lays them out (header: signature 0, checksum 4, log version
/// 64, version 66, log length 68, log offset 72; region table: signature 0, entries from 16
/// with file offset +16, length +24, required +28; metadata table: signature 0, entries from
/// 32 with offset +16, length +20; file parameters: block size 0), with checksums recomputed
/// so the field itself is what gets refused. Each row: the error kind, words the message must
/// use, the file unchanged (`expect_err` opens a read-only handle and compares the bytes).
/// Region/metadata entry counts, item lengths, unknown required items, BAT entries past the
/// end, shared or over metadata, log entries and truncation have their own tests above.
#[test]
fn each_damaged_structure_field_is_refused_naming_the_problem() {
    type Edit = fn(&mut [u8]);
    let table: Vec<(&str, Edit, ErrorKind, &str)> = vec![
        (
            "both header signatures",
            |b| edit_headers(b, |b, h| b[h..h + 4].copy_from_slice(b"hexd")),
            ErrorKind::InvalidImage,
            "neither vhdx header is valid",
        ),
        (
            "both header checksums",
            |b| HEADERS.iter().for_each(|&h| b[h + 4] ^= 0xff),
            ErrorKind::InvalidImage,
            "neither vhdx header is valid",
        ),
        (
            "header version 2",
            |b| {
                edit_headers(b, |b, h| {
                    b[h + 66..h + 68].copy_from_slice(&2u16.to_le_bytes())
                })
            },
            ErrorKind::Unsupported,
            "vhdx version 2",
        ),
        (
            "log version 1",
            |b| {
                edit_headers(b, |b, h| {
                    b[h + 64..h + 66].copy_from_slice(&1u16.to_le_bytes())
                })
            },
            ErrorKind::Unsupported,
            "log version 1",
        ),
        (
            "log offset not 1 MiB aligned",
            |b| edit_headers(b, |b, h| set_u64(b, h + 72, 0x10_0200)),
            ErrorKind::InvalidImage,
            "not 1 MiB aligned",
        ),
        (
            "log over the header section",
            |b| edit_headers(b, |b, h| set_u64(b, h + 72, 0)),
            ErrorKind::InvalidImage,
            "overlaps the header section",
        ),
        (
            "log offset past eof",
            |b| edit_headers(b, |b, h| set_u64(b, h + 72, 1 << 40)),
            ErrorKind::InvalidImage,
            "past the end",
        ),
        (
            "log offset wraps",
            |b| edit_headers(b, |b, h| set_u64(b, h + 72, u64::MAX - 0xf_ffff)),
            ErrorKind::InvalidImage,
            "past the end",
        ),
        (
            "log length 4 GiB - 1 MiB",
            |b| edit_headers(b, |b, h| set_u32(b, h + 68, 0xfff0_0000)),
            ErrorKind::Unsupported,
            "larger than the supported",
        ),
        (
            "both region table signatures",
            |b| edit_regions(b, |b, rt| b[rt..rt + 4].copy_from_slice(b"regx")),
            ErrorKind::InvalidImage,
            "neither region table is valid",
        ),
        (
            "bat region past eof",
            |b| {
                let e = region_entry(b, BAT_REGION) - 0x30000;
                edit_regions(b, |b, rt| set_u64(b, rt + e + 16, 1 << 40));
            },
            ErrorKind::InvalidImage,
            "past the end",
        ),
        (
            "bat region of 0 bytes",
            |b| {
                let e = region_entry(b, BAT_REGION) - 0x30000;
                edit_regions(b, |b, rt| set_u32(b, rt + e + 24, 0));
            },
            ErrorKind::InvalidImage,
            "of 0x0 bytes is not 1 MiB aligned or is empty",
        ),
        (
            "bat region missing (id changed, not required)",
            |b| {
                let e = region_entry(b, BAT_REGION) - 0x30000;
                edit_regions(b, |b, rt| {
                    b[rt + e] ^= 0xff;
                    set_u32(b, rt + e + 28, 0);
                });
            },
            ErrorKind::InvalidImage,
            "no bat region",
        ),
        (
            "metadata region past eof",
            |b| {
                let e = region_entry(b, METADATA_REGION) - 0x30000;
                edit_regions(b, |b, rt| set_u64(b, rt + e + 16, 1 << 40));
            },
            ErrorKind::InvalidImage,
            "past the end",
        ),
        (
            "metadata region of 4 KiB",
            |b| {
                let e = region_entry(b, METADATA_REGION) - 0x30000;
                edit_regions(b, |b, rt| set_u32(b, rt + e + 24, 4096));
            },
            ErrorKind::InvalidImage,
            "of 0x1000 bytes is not 1 MiB aligned",
        ),
        (
            "metadata table signature",
            |b| {
                let meta = region_offset(b, METADATA_REGION) as usize;
                b[meta..meta + 8].copy_from_slice(b"metadatx");
            },
            ErrorKind::InvalidImage,
            "metadata table signature",
        ),
        (
            "two metadata items at one offset",
            |b| {
                let (p, d) = (
                    metadata_entry(b, FILE_PARAMETERS),
                    metadata_entry(b, DISK_SIZE),
                );
                let off = u32::from_le_bytes(b[p + 16..p + 20].try_into().unwrap());
                set_u32(b, d + 16, off);
            },
            ErrorKind::InvalidImage,
            "overlaps another item",
        ),
        (
            "block size 0",
            |b| set_u32(b, item_value(b, FILE_PARAMETERS), 0),
            ErrorKind::InvalidImage,
            "block size 0",
        ),
        (
            "block size 512 MiB",
            |b| set_u32(b, item_value(b, FILE_PARAMETERS), 512 << 20),
            ErrorKind::InvalidImage,
            "block size 536870912",
        ),
        (
            "block size 4 GiB - 1",
            |b| set_u32(b, item_value(b, FILE_PARAMETERS), u32::MAX),
            ErrorKind::InvalidImage,
            "block size 4294967295",
        ),
        (
            "block size 512 KiB",
            |b| set_u32(b, item_value(b, FILE_PARAMETERS), 512 << 10),
            ErrorKind::InvalidImage,
            "block size 524288",
        ),
        (
            "virtual disk size 0",
            |b| set_u64(b, item_value(b, DISK_SIZE), 0),
            ErrorKind::InvalidImage,
            "virtual disk size 0",
        ),
        (
            "virtual disk size not a sector multiple",
            |b| set_u64(b, item_value(b, DISK_SIZE), (8 << 20) + 100),
            ErrorKind::InvalidImage,
            "virtual disk size",
        ),
        (
            "virtual disk size larger than the bat maps",
            |b| set_u64(b, item_value(b, DISK_SIZE), 1 << 45),
            ErrorKind::InvalidImage,
            "bat",
        ),
        (
            "logical sector size 1000",
            |b| set_u32(b, item_value(b, LOGICAL_SECTOR), 1000),
            ErrorKind::InvalidImage,
            "neither 512 nor 4096",
        ),
        (
            "physical sector size 0",
            |b| set_u32(b, item_value(b, PHYSICAL_SECTOR), 0),
            ErrorKind::InvalidImage,
            "neither 512 nor 4096",
        ),
    ];
    let pristine = base();
    let mut failed = Vec::new();
    for (name, edit, kind, needle) in table {
        let mut b = pristine.clone();
        edit(&mut b);
        assert!(b != pristine, "row {name:?} changes something");
        let r = std::panic::catch_unwind(|| expect_err(&b, kind, needle));
        if r.is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "rows failed: {failed:?}");
}
