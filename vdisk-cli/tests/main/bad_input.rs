//! Damaged or foreign files: compaction says clearly what is wrong, exits 4 and never touches
//! the file. Damage is made by mutating a qemu-made image at offsets computed from the VHD spec.

use std::path::Path;

use super::support::vhd::{
    self, DYN_BLOCK_SIZE, DYN_CHECKSUM, DYN_MAX_ENTRIES, DYN_TABLE_OFFSET, FOOTER_CHECKSUM,
    FOOTER_DATA_OFFSET, FOOTER_LEN, be64, checksum, idx, put_be32,
};
use super::support::{
    BLOCK, EXIT_INVALID, Snapshot, qemu_create, qemu_io, run, tempdir, vdisk_cmd, vdisk_compact,
};

/// An 8 MiB qemu image (5 BAT entries, the last block partial) with blocks 0, 1 and 3 written.
fn base(dir: &Path) -> Vec<u8> {
    let file = dir.join("base.vhd");
    qemu_create(&file, "dynamic", 8 << 20);
    qemu_io(
        &file,
        &[
            format!("write -P 0x10 0 {BLOCK}"),
            format!("write -P 0x11 {BLOCK} 4096"),
            format!("write -P 0x13 {} 4096", 3 * BLOCK),
        ],
    );
    assert_eq!(vhd::check_dynamic(&file), Ok(3));
    std::fs::read(file).unwrap()
}

struct Offsets {
    len: u64,
    header: u64,
    bat: u64,
}

fn offsets(bytes: &[u8]) -> Offsets {
    let len = bytes.len() as u64;
    let footer = idx(len - FOOTER_LEN);
    let header = be64(bytes, footer + FOOTER_DATA_OFFSET);
    let bat = be64(bytes, idx(header) + DYN_TABLE_OFFSET);
    Offsets { len, header, bat }
}

fn bat_entry(bytes: &[u8], o: &Offsets, i: u64) -> u32 {
    vhd::be32(bytes, idx(o.bat + 4 * i))
}

fn set_bat_entry(bytes: &mut [u8], o: &Offsets, i: u64, v: u32) {
    put_be32(bytes, idx(o.bat + 4 * i), v);
}

fn truncated(bytes: &[u8], len: u64) -> Vec<u8> {
    bytes[..idx(len)].to_vec()
}

fn flipped(bytes: &[u8], at: u64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[idx(at)] ^= 0x01;
    b
}

/// Every damaged variant, named.
fn damaged(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let o = offsets(bytes);
    let footer = o.len - FOOTER_LEN;
    let sector_past_eof = u32::try_from(o.len / 512 + 64).unwrap();
    let mut v = vec![
        ("truncated inside the footer", truncated(bytes, o.len - 100)),
        (
            "truncated inside the dynamic header",
            truncated(bytes, o.header + 300),
        ),
        ("truncated inside the bat", truncated(bytes, o.bat + 6)),
        (
            "truncated in the middle of the last block",
            truncated(bytes, footer - (1 << 20)),
        ),
        (
            "bad footer checksum at eof",
            flipped(bytes, footer + FOOTER_CHECKSUM as u64 + 3),
        ),
        (
            "bad dynamic header checksum",
            flipped(bytes, o.header + DYN_CHECKSUM as u64 + 3),
        ),
        ("empty file", Vec::new()),
        ("random bytes", vdisk_core::testing::noise(1 << 20, 1)),
        (
            "random bytes of a plausible size",
            vdisk_core::testing::noise(idx(o.len), 2),
        ),
    ];
    let mut both = flipped(bytes, footer + FOOTER_CHECKSUM as u64 + 3);
    both[FOOTER_CHECKSUM + 3] ^= 0x01;
    v.push(("bad footer checksum in both copies", both));

    let mut past = bytes.to_vec();
    set_bat_entry(&mut past, &o, 4, sector_past_eof);
    v.push(("unallocated bat entry set past eof", past));

    let mut past = bytes.to_vec();
    set_bat_entry(&mut past, &o, 3, sector_past_eof);
    v.push(("allocated bat entry moved past eof", past));

    let mut same = bytes.to_vec();
    let first = bat_entry(bytes, &o, 0);
    set_bat_entry(&mut same, &o, 1, first);
    v.push(("two bat entries pointing at the same block", same));

    let mut partial = bytes.to_vec();
    set_bat_entry(&mut partial, &o, 1, first + 1);
    v.push(("two bat entries overlapping by all but one sector", partial));

    // Inconsistent fields with correct checksums: only the meaning is wrong.
    let header = |edit: &dyn Fn(&mut [u8])| {
        let mut b = bytes.to_vec();
        let h = &mut b[idx(o.header)..idx(o.header) + 1024];
        edit(h);
        let c = checksum(h, DYN_CHECKSUM);
        put_be32(h, DYN_CHECKSUM, c);
        b
    };
    let footers = |edit: &dyn Fn(&mut [u8])| {
        let mut b = bytes.to_vec();
        let len = b.len();
        for at in [0, len - 512] {
            let f = &mut b[at..at + 512];
            edit(f);
            let c = checksum(f, FOOTER_CHECKSUM);
            put_be32(f, FOOTER_CHECKSUM, c);
        }
        b
    };
    v.push(("block size 0", header(&|h| put_be32(h, DYN_BLOCK_SIZE, 0))));
    v.push((
        "block size not a power of two",
        header(&|h| put_be32(h, DYN_BLOCK_SIZE, 3 << 20)),
    ));
    v.push((
        "max table entries 0xffffffff",
        header(&|h| put_be32(h, DYN_MAX_ENTRIES, u32::MAX)),
    ));
    v.push((
        "bat too small for the virtual size",
        header(&|h| put_be32(h, DYN_MAX_ENTRIES, 2)),
    ));
    v.push((
        "bat offset past eof",
        header(&|h| {
            h[DYN_TABLE_OFFSET..DYN_TABLE_OFFSET + 8].copy_from_slice(&(1u64 << 40).to_be_bytes())
        }),
    ));
    v.push(("dynamic header cookie wrong", header(&|h| h[0] = b'X')));
    v.push((
        "footer data offset past eof",
        footers(&|f| {
            f[FOOTER_DATA_OFFSET..FOOTER_DATA_OFFSET + 8]
                .copy_from_slice(&(1u64 << 40).to_be_bytes())
        }),
    ));
    v.push((
        "footer cookie wrong in both copies",
        footers(&|f| f[0] = b'X'),
    ));

    let mut meta = bytes.to_vec();
    set_bat_entry(&mut meta, &o, 4, u32::try_from(o.header / 512).unwrap());
    v.push(("bat entry pointing at the dynamic header", meta));
    v
}

fn assert_refused(file: &Path, case: &str) {
    let pristine = Snapshot::of(file);
    for (mode, extra) in [
        ("prezeroed", &[][..]),
        ("pretrimmed", &[][..]),
        ("full", &["--dry-run"][..]),
    ] {
        let out = vdisk_compact(file, mode, extra);
        assert_eq!(
            out.code, EXIT_INVALID,
            "{case}: `{}` must exit 4\nstdout: {}\nstderr: {}",
            out.cmdline, out.stdout, out.stderr
        );
        let report = out.json();
        let err = &report["error"];
        assert_eq!(
            err["kind"].as_str(),
            Some("invalid-image"),
            "{case}: {report}"
        );
        assert_eq!(err["exit_code"].as_u64(), Some(4), "{case}: {report}");
        assert!(
            err["message"].as_str().is_some_and(|m| m.len() > 10),
            "{case}: a message that says what is wrong: {report}"
        );
        pristine.assert_unchanged(file, true, &format!("{case}: {mode}"));
    }
    let plain = run(vdisk_cmd()
        .args(["compact", "--mode", "prezeroed"])
        .arg(file));
    plain.expect_code(EXIT_INVALID);
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(
        plain.stderr.contains(name.as_ref()),
        "{case}: stderr must name the file: {}",
        plain.stderr
    );
    let check = run(vdisk_cmd().args(["check", "--json"]).arg(file));
    if check.code == 0 {
        let v = check.json();
        assert_eq!(
            v["safe_to_compact"].as_bool(),
            Some(false),
            "{case}: check must not call it safe: {v}"
        );
        assert!(
            v["problems"].as_array().is_some_and(|p| !p.is_empty()),
            "{case}: check must list the problem: {v}"
        );
    } else {
        check.expect_code(EXIT_INVALID);
    }
    pristine.assert_unchanged(file, true, &format!("{case}: check"));
}

#[test]
fn damaged_or_foreign_files_are_refused_with_exit_4_and_left_byte_identical() {
    let dir = tempdir();
    let bytes = base(dir.path());
    let cases = damaged(&bytes);
    assert!(cases.len() >= 23);
    let mut failures = Vec::new();
    for (i, (case, data)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.vhd"));
        std::fs::write(&file, data).unwrap();
        // Run every case, then report all that failed at once.
        if let Err(e) = std::panic::catch_unwind(|| assert_refused(&file, case)) {
            failures.push(panic_text(&e));
        }
    }
    assert!(
        failures.is_empty(),
        "{} damaged file(s) not refused properly:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

#[test]
fn the_undamaged_base_image_is_accepted_so_the_damage_is_what_gets_refused() {
    let dir = tempdir();
    let bytes = base(dir.path());
    let file = dir.path().join("good.vhd");
    std::fs::write(&file, &bytes).unwrap();
    let out = vdisk_compact(&file, "prezeroed", &["--dry-run"]);
    out.ok();
    run(vdisk_cmd().args(["check", "--json"]).arg(&file)).ok();
}
