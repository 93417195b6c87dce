//! Valid images with unusual layouts or states, built by editing qemu-made images at offsets
//! from the VHD spec (checksums recomputed): vdisk must compact the valid ones without changing
//! a virtual byte and refuse the ones it must not touch.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::roundtrip::mixed;
use super::support::vhd::{
    self, DYN_CHECKSUM, DYN_MAX_ENTRIES, FOOTER_CHECKSUM, FOOTER_LEN, UNALLOCATED, checksum, idx,
    put_be32,
};
use super::support::{
    EXIT_UNSUPPORTED, FOOTPRINT, Snapshot, assert_libvhdi_identical, assert_qemu_identical,
    assert_qemu_valid, compact_ok, copy_to, file_len, fixture, num, qemu_img, tempdir,
    vdisk_compact,
};

/// Offset of the footer's SavedState byte.
const FOOTER_SAVED_STATE: usize = 84;

fn fix_footer_checksums(b: &mut [u8]) {
    let len = b.len();
    for at in [0, len - idx(FOOTER_LEN)] {
        let f = &mut b[at..at + 512];
        let c = checksum(f, FOOTER_CHECKSUM);
        put_be32(f, FOOTER_CHECKSUM, c);
    }
}

fn fix_header_checksum(b: &mut [u8], header: u64) {
    let h = &mut b[idx(header)..idx(header) + 1024];
    let c = checksum(h, DYN_CHECKSUM);
    put_be32(h, DYN_CHECKSUM, c);
}

#[test]
fn saved_state_vhd_is_refused_with_exit_5_and_unchanged() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let mut b = std::fs::read(&s.image).unwrap();
    let len = b.len();
    b[FOOTER_SAVED_STATE] = 1;
    b[len - 512 + FOOTER_SAVED_STATE] = 1;
    fix_footer_checksums(&mut b);
    std::fs::write(&s.image, &b).unwrap();
    vhd::layout(&b).expect("still a well-formed VHD");
    let pristine = Snapshot::of(&s.image);
    for mode in ["prezeroed", "pretrimmed", "retrim"] {
        let out = vdisk_compact(&s.image, mode, &[]);
        out.expect_code(EXIT_UNSUPPORTED);
        let r = out.json();
        let message = r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(message.contains("saved"), "{mode}: say why: {r}");
        pristine.assert_unchanged(&s.image, true, &format!("{mode} on a saved-state disk"));
    }
}

/// Some qemu versions wrote MaxTableEntries = blocks + 1 (DESIGN.md section 5).
#[test]
fn bat_with_one_entry_more_than_the_size_needs_compacts_byte_exact() {
    let dir = tempdir();
    let s = mixed(dir.path());
    let mut b = std::fs::read(&s.image).unwrap();
    let l = vhd::layout(&b).unwrap();
    let entries = l.entries + 1;
    assert!(
        u64::from(entries) * 4 <= 512,
        "the extra entry must fit in the BAT's padding"
    );
    assert_eq!(
        vhd::be32(&b, idx(l.bat + 4 * u64::from(l.entries))),
        UNALLOCATED
    );
    put_be32(&mut b, idx(l.header) + DYN_MAX_ENTRIES, entries);
    fix_header_checksum(&mut b, l.header);
    std::fs::write(&s.image, &b).unwrap();
    std::fs::write(&s.pristine, &b).unwrap();
    let before = file_len(&s.image);

    let r = compact_ok(&s.image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), s.zero_blocks, "{r}");
    assert_eq!(file_len(&s.image), before - s.zero_blocks * FOOTPRINT);
    assert_qemu_identical(&s.pristine, &s.image);
    assert_qemu_valid(&s.image);
    assert_libvhdi_identical(&s.pristine, &s.image);
    let after = std::fs::read(&s.image).unwrap();
    assert_eq!(
        vhd::layout(&after).unwrap().entries,
        entries,
        "table size kept"
    );
}

/// Rewrites `s.image` with `gap` unused bytes between the BAT and the first block (every BAT
/// entry shifted past them): garbage (0xee) when small, a sparse hole when huge.
fn with_gap(image: &Path, gap: u64) -> u64 {
    let b = std::fs::read(image).unwrap();
    let l = vhd::layout(&b).unwrap();
    let data_start = l.bat + (4 * u64::from(l.entries)).next_multiple_of(512);
    let mut head = b[..idx(data_start)].to_vec();
    for i in 0..u64::from(l.entries) {
        let at = idx(l.bat + 4 * i);
        let e = vhd::be32(&head, at);
        if e != UNALLOCATED {
            put_be32(&mut head, at, e + u32::try_from(gap / 512).unwrap());
        }
    }
    let f = std::fs::File::create(image).unwrap();
    f.write_all_at(&head, 0).unwrap();
    if gap <= 8 << 20 {
        f.write_all_at(&vec![0xee; idx(gap)], data_start).unwrap();
    }
    f.write_all_at(&b[idx(data_start)..], data_start + gap)
        .unwrap();
    f.sync_all().unwrap();
    data_start + gap + (b.len() as u64 - data_start)
}

/// Unused space before the first block (garbage, or a 4 GiB hole that puts every block past
/// the 32-bit byte-offset range): compaction must never read it into a block, must move the
/// blocks down across it, and every virtual byte must read the same.
fn gap_before_first_block(gap: u64) {
    let dir = tempdir();
    let s = mixed(dir.path());
    let len = with_gap(&s.image, gap);
    assert_eq!(file_len(&s.image), len);
    assert_qemu_identical(&s.pristine, &s.image);

    let predicted = compact_ok(&s.image, "prezeroed", &["--dry-run"]);
    let r = compact_ok(&s.image, "prezeroed", &[]);
    assert_eq!(num(&r, "blocks_reclaimed"), s.zero_blocks, "{r}");
    assert_eq!(num(&r, "bytes_before"), len, "{r}");
    assert_eq!(
        num(&predicted, "bytes_after"),
        file_len(&s.image),
        "dry run predicted another size: {predicted}"
    );
    let after = file_len(&s.image);
    assert_eq!(num(&r, "bytes_after"), after, "{r}");
    assert!(
        after <= len - s.zero_blocks * FOOTPRINT,
        "at least the zero blocks' footprint is returned: {after}"
    );
    if gap >= FOOTPRINT {
        assert!(
            after <= file_len(&s.pristine) - s.zero_blocks * FOOTPRINT + gap % FOOTPRINT,
            "blocks must move down into a gap that fits them: {after}"
        );
    }
    assert_qemu_identical(&s.pristine, &s.image);
    assert_qemu_valid(&s.image);
    assert_libvhdi_identical(&s.pristine, &s.image);
    assert_eq!(
        vhd::check_dynamic(&s.image),
        Ok(s.allocated - s.zero_blocks)
    );
}

#[test]
fn garbage_smaller_than_a_block_before_the_first_block_never_leaks_into_content() {
    gap_before_first_block(1 << 20);
}

#[test]
fn garbage_larger_than_a_block_before_the_first_block_is_reused_byte_exact() {
    gap_before_first_block(5 << 20);
}

#[test]
fn blocks_past_4_gib_in_the_host_file_move_down_byte_exact() {
    gap_before_first_block(4 << 30);
}

/// A healthy VHDX (made by Hyper-V) is not a corrupt file. Until VHDX compaction lands it must
/// be refused as unsupported (5), not called invalid (4); once it lands, it must compact with
/// every byte kept (qemu's vhdx driver is the oracle).
#[test]
fn healthy_vhdx_is_never_reported_as_an_invalid_image() {
    let dir = tempdir();
    let image = fixture("iotest-dynamic-1G.vhdx", dir.path());
    let pristine = copy_to(&image, dir.path(), "pristine.vhdx");
    let out = vdisk_compact(&image, "prezeroed", &[]);
    if out.code == 0 {
        let o = qemu_img(
            ["compare", "-f", "vhdx", "-F", "vhdx"]
                .map(std::ffi::OsStr::new)
                .into_iter()
                .chain([pristine.as_os_str(), image.as_os_str()]),
        );
        assert_eq!(o.code, 0, "VHDX content changed: {}{}", o.stdout, o.stderr);
    } else {
        assert_eq!(
            out.code, EXIT_UNSUPPORTED,
            "a valid VHDX must be 'unsupported' (5), not 'invalid' (4): {}{}",
            out.stdout, out.stderr
        );
        Snapshot::of(&pristine).assert_unchanged(&image, false, "refused VHDX");
    }
}
