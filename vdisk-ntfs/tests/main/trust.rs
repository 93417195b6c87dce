//! Volumes whose free map must not be trusted: dirty, unclean journal, hibernated Windows.
//! Where ntfs-3g has an opinion (it refuses to write to such volumes), the test checks that
//! ntfs-3g agrees with the state we build.

use std::path::Path;

use ntfs::structured_values::NtfsVolumeFlags;
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsAttributeType};

use super::util::*;

fn fresh(dir: &Path) -> std::path::PathBuf {
    let v = make_volume(dir, "vol.img", 16 << 20, 4096);
    copy_in(&v, "keep.bin", &pseudo_random(50_000, 3));
    v
}

/// Whether ntfs-3g agrees to open the volume for writing (it refuses dirty, unclean and
/// hibernated volumes); returns its complaint when it refuses.
fn ntfs3g_write_refusal(volume: &Path) -> Option<String> {
    let src = volume.with_extension("probe");
    std::fs::write(&src, b"probe").unwrap();
    let out = try_run(
        "ntfscp",
        &[volume.to_str().unwrap(), src.to_str().unwrap(), "probe.txt"],
    );
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn volume_scheduled_for_chkdsk_by_ntfsresize_is_untrusted_as_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    usage(&v);
    // ntfsresize marks the volume dirty so that Windows runs chkdsk after the resize.
    run(
        "ntfsresize",
        &["-f", "-f", "-s", "12M", v.to_str().unwrap()],
    );
    assert!(ntfs3g_write_refusal(&v).is_some_and(|e| e.contains("scheduled for check")));
    let reason = untrusted_reason(&v);
    assert_eq!(reason, "volume is marked dirty (chkdsk pending)");
}

/// Sets the dirty bit in $Volume's $VOLUME_INFORMATION in place, located through the ntfs
/// crate: record position + attribute offset + resident value offset + 10 (flags).
fn set_dirty_flag(volume: &Path) {
    let mut f = std::fs::File::open(volume).unwrap();
    let ntfs = Ntfs::new(&mut f).unwrap();
    let file = ntfs
        .file(&mut f, KnownNtfsFileRecordNumber::Volume as u64)
        .unwrap();
    let record = file.position().value().unwrap().get();
    let mut flags_at = None;
    for attribute in file.attributes_raw() {
        let attribute = attribute.unwrap();
        if attribute.ty().unwrap() == NtfsAttributeType::VolumeInformation {
            let header = attribute.position().value().unwrap().get();
            let value_offset = peek(volume, header + 0x14, 2);
            let value_offset = u64::from(u16::from_le_bytes([value_offset[0], value_offset[1]]));
            flags_at = Some(header + value_offset + 10);
        }
    }
    let flags_at = flags_at.expect("$Volume has no $VOLUME_INFORMATION");
    // Update sequence fixups replace the last two bytes of each 512-byte sector: the flags
    // must not be there, or the byte patch would be undone on read.
    assert!(!matches!((flags_at - record) % 512, 510 | 511));
    let mut flags = peek(volume, flags_at, 2);
    flags[0] |= 0x01;
    patch(volume, flags_at, &flags);
    let check = ntfs.volume_info(&mut f).unwrap();
    assert!(check.flags().contains(NtfsVolumeFlags::IS_DIRTY));
}

#[test]
fn dirty_flag_set_in_volume_information_makes_the_volume_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    usage(&v);
    set_dirty_flag(&v);
    assert!(ntfs3g_write_refusal(&v).is_some());
    assert_eq!(
        untrusted_reason(&v),
        "volume is marked dirty (chkdsk pending)"
    );
}

#[test]
fn active_hiberfil_sys_in_the_root_means_windows_is_hibernated() {
    for signature in [b"hibr", b"HIBR"] {
        let dir = tempfile::tempdir().unwrap();
        let v = fresh(dir.path());
        let mut image = vec![0u8; 64 << 10];
        image[..4].copy_from_slice(signature);
        copy_in(&v, "hiberfil.sys", &image);
        if signature == b"hibr" {
            assert!(ntfs3g_write_refusal(&v).is_some_and(|e| e.contains("hibernated")));
        }
        let reason = untrusted_reason(&v);
        assert_eq!(
            reason,
            "Windows is hibernated (hiberfil.sys is active); shut down fully"
        );
    }
}

#[test]
fn inactive_hiberfil_sys_is_fine_but_a_short_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    copy_in(&v, "hiberfil.sys", &vec![0u8; 64 << 10]);
    assert_eq!(ntfs3g_write_refusal(&v), None);
    usage(&v);
    copy_in(&v, "hiberfil.sys", &[0u8; 100]);
    assert!(ntfs3g_write_refusal(&v).is_some());
    assert!(untrusted_reason(&v).contains("hiberfil.sys is shorter than its header"));
}

/// A restart page (LFS 1.1, 4 KiB pages, one client) for a journal of `journal_len` bytes,
/// update-sequence protected with USN 3.
fn restart_page(journal_len: usize, lsn: u64, in_use: u16, flags: u16) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, b"RSTR");
    put(0x04, &0x1Eu16.to_le_bytes()); // update sequence array offset
    put(0x06, &9u16.to_le_bytes()); // 1 + 4096 / 512 entries
    put(0x10, &4096u32.to_le_bytes()); // system page size
    put(0x14, &4096u32.to_le_bytes()); // log page size
    put(0x18, &0x30u16.to_le_bytes()); // restart area offset
    put(0x1A, &1u16.to_le_bytes()); // minor version
    put(0x1C, &1u16.to_le_bytes()); // major version
    let ra = 0x30;
    let file_size = (journal_len - 8192) as u64;
    let bits = 64 - file_size.leading_zeros();
    put(ra, &lsn.to_le_bytes()); // current lsn
    put(ra + 8, &1u16.to_le_bytes()); // log clients
    put(ra + 10, &0xFFFFu16.to_le_bytes()); // free list
    put(ra + 12, &in_use.to_le_bytes()); // in-use list
    put(ra + 14, &flags.to_le_bytes());
    put(ra + 16, &(67 - bits).to_le_bytes()); // sequence number bits
    put(ra + 20, &(0x40u16 + 0xA0).to_le_bytes()); // restart area length
    put(ra + 22, &0x40u16.to_le_bytes()); // client array offset
    put(ra + 24, &file_size.to_le_bytes());
    put(ra + 36, &0x30u16.to_le_bytes()); // log record header length
    put(ra + 38, &0x40u16.to_le_bytes()); // log page data offset
    put(ra + 0x40 + 16, &0xFFFFu16.to_le_bytes()); // client: prev
    put(ra + 0x40 + 18, &0xFFFFu16.to_le_bytes()); // client: next
    put(0x1E, &3u16.to_le_bytes()); // update sequence number
    for i in 0..8 {
        let end = (i + 1) * 512;
        let saved = [p[end - 2], p[end - 1]];
        p[0x20 + 2 * i..0x22 + 2 * i].copy_from_slice(&saved);
        p[end - 2..end].copy_from_slice(&3u16.to_le_bytes());
    }
    p
}

/// Replaces the journal's content (same length) through ntfscp.
fn write_journal(volume: &Path, in_use: u16, flags: u16) {
    let mut journal = cat_inode(volume, 2);
    let len = journal.len();
    journal[..4096].copy_from_slice(&restart_page(len, 1000, in_use, flags));
    journal[4096..8192].copy_from_slice(&restart_page(len, 1001, in_use, flags));
    journal[8192..8196].copy_from_slice(b"RCRD");
    let src = volume.with_extension("journal");
    std::fs::write(&src, &journal).unwrap();
    run(
        "ntfscp",
        &[
            "-q",
            "-i",
            volume.to_str().unwrap(),
            src.to_str().unwrap(),
            "2",
        ],
    );
    assert_eq!(cat_inode(volume, 2), journal);
}

fn cat_inode(volume: &Path, inode: u64) -> Vec<u8> {
    run(
        "ntfscat",
        &["-i", &inode.to_string(), volume.to_str().unwrap()],
    )
    .stdout
}

#[test]
fn journal_with_a_client_in_use_and_no_clean_flag_is_untrusted_as_ntfs3g_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    write_journal(&v, 0, 0);
    assert!(ntfs3g_write_refusal(&v).is_some_and(|e| e.contains("unclean")));
    assert!(untrusted_reason(&v).contains("not shut down cleanly"));
}

#[test]
fn journal_marked_clean_is_trusted_as_ntfs3g_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = fresh(dir.path());
    write_journal(&v, 0, 0x0002);
    usage(&v);
    assert_eq!(ntfs3g_write_refusal(&v), None);
}
