//! The journal decision on constructed restart pages (mkntfs only writes empty journals, and
//! nothing here can make Windows leave one unclean).

use std::convert::Infallible;

use proptest::prelude::*;

use super::*;

const JOURNAL: usize = 64 * 4096;
const PAGE: usize = 4096;

/// One restart page: LFS 1.1, 4 KiB pages, update sequence array at 0x1e, restart area at
/// 0x30 with one client at 0x70.
fn restart_page(lsn: i64, in_use: u16, flags: u16) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    let put16 =
        |p: &mut Vec<u8>, at: usize, v: u16| p[at..at + 2].copy_from_slice(&v.to_le_bytes());
    p[0..4].copy_from_slice(b"RSTR");
    put16(&mut p, 0x04, 0x1E); // usa_ofs
    put16(&mut p, 0x06, 9); // usa_count: 1 + 4096 / 512
    p[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes()); // system page size
    p[0x14..0x18].copy_from_slice(&4096u32.to_le_bytes()); // log page size
    put16(&mut p, 0x18, 0x30); // restart area offset
    put16(&mut p, 0x1A, 1); // minor
    put16(&mut p, 0x1C, 1); // major
    let ra = 0x30;
    p[ra..ra + 8].copy_from_slice(&lsn.to_le_bytes());
    put16(&mut p, ra + 8, 1); // log clients
    put16(&mut p, ra + 10, NO_CLIENT); // free list
    put16(&mut p, ra + 12, in_use);
    put16(&mut p, ra + 14, flags);
    let file_size: i64 = (JOURNAL - 2 * PAGE) as i64;
    let bits = 64 - file_size.cast_unsigned().leading_zeros();
    p[ra + 16..ra + 20].copy_from_slice(&(67 - bits).to_le_bytes());
    put16(&mut p, ra + 20, 0x40 + 0xA0); // restart area length
    put16(&mut p, ra + 22, 0x40); // client array offset
    p[ra + 24..ra + 32].copy_from_slice(&file_size.to_le_bytes());
    put16(&mut p, ra + 36, 0x30); // log record header length
    put16(&mut p, ra + 38, 0x40); // log page data offset
    let client = ra + 0x40;
    put16(&mut p, client + 16, NO_CLIENT); // prev
    put16(&mut p, client + 18, NO_CLIENT); // next
    protect(&mut p);
    p
}

/// Moves each sector's last two bytes into the update sequence array and stamps USN 7.
fn protect(p: &mut [u8]) {
    let usn = [7u8, 0];
    p[0x1E..0x20].copy_from_slice(&usn);
    for i in 0..PAGE / BLOCK {
        let end = (i + 1) * BLOCK;
        let saved = [p[end - 2], p[end - 1]];
        p[0x20 + 2 * i..0x22 + 2 * i].copy_from_slice(&saved);
        p[end - 2..end].copy_from_slice(&usn);
    }
}

fn journal(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut j = vec![0u8; JOURNAL];
    j[..PAGE].copy_from_slice(first);
    j[PAGE..2 * PAGE].copy_from_slice(second);
    j[2 * PAGE..2 * PAGE + 4].copy_from_slice(b"RCRD");
    j
}

fn run(j: &[u8]) -> LogState {
    let r: Result<_, Infallible> = assess(j.len() as u64, |at, buf| {
        let at = usize::try_from(at).unwrap();
        buf.fill(0);
        if let Some(src) = j.get(at..) {
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
        }
        Ok(())
    });
    r.unwrap()
}

#[test]
fn journal_with_a_client_in_use_and_no_clean_flag_is_unclean() {
    let p = restart_page(100, 0, 0);
    assert_eq!(run(&journal(&p, &p)), LogState::Unclean);
}

#[test]
fn clean_flag_or_no_client_in_use_is_clean() {
    let flagged = restart_page(100, 0, VOLUME_IS_CLEAN);
    assert_eq!(run(&journal(&flagged, &flagged)), LogState::Clean);
    let closed = restart_page(100, NO_CLIENT, 0);
    assert_eq!(run(&journal(&closed, &closed)), LogState::Clean);
}

#[test]
fn the_restart_page_with_the_higher_lsn_decides() {
    let clean = restart_page(100, NO_CLIENT, 0);
    let unclean = restart_page(200, 0, 0);
    assert_eq!(run(&journal(&clean, &unclean)), LogState::Unclean);
    let older_unclean = restart_page(50, 0, 0);
    assert_eq!(run(&journal(&clean, &older_unclean)), LogState::Clean);
}

#[test]
fn reset_journal_is_empty_and_too_small_one_is_inconsistent() {
    assert_eq!(run(&vec![0xFF; JOURNAL]), LogState::Empty);
    assert!(matches!(
        run(&vec![0xFF; 4 * PAGE]),
        LogState::Inconsistent(r) if r.contains("too small")
    ));
}

#[test]
fn journal_version_2_left_by_fast_startup_is_inconsistent() {
    let mut p = restart_page(100, NO_CLIENT, VOLUME_IS_CLEAN);
    p[0x1C] = 2;
    p[0x1A] = 0;
    let state = run(&journal(&p, &p));
    assert!(
        matches!(&state, LogState::Inconsistent(r) if r.contains("version 2.0")),
        "{state:?}"
    );
}

#[test]
fn damaged_client_list_or_missing_restart_page_is_inconsistent() {
    // The in-use client points at itself: a loop.
    let mut p = restart_page(100, 0, VOLUME_IS_CLEAN);
    p[0x70 + 18..0x70 + 20].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(run(&journal(&p, &p)), LogState::Inconsistent(_)));
    // Not empty, but no restart page anywhere.
    assert!(matches!(
        run(&vec![0u8; JOURNAL]),
        LogState::Inconsistent(r) if r.contains("no restart page")
    ));
}

proptest! {
    /// Any bytes in the restart pages give a verdict, never a panic, and a journal that
    /// holds data never reads as an empty (reset) one.
    #[test]
    fn arbitrary_restart_page_bytes_never_panic(
        edits in proptest::collection::vec((0usize..2 * PAGE, any::<u8>()), 1..40),
    ) {
        let p = restart_page(100, 0, 0);
        let mut j = journal(&p, &p);
        for (at, v) in edits {
            j[at] = v;
        }
        let state = run(&j);
        prop_assert!(state != LogState::Empty);
    }
}
