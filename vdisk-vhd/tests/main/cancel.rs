//! Cancellation: a compaction cancelled at any progress step stops with `Cancelled`, leaves a
//! valid image with the same content, and a re-run finishes the job.

use std::sync::atomic::{AtomicU64, Ordering};

use vdisk_core::{
    CancelToken, CompactOptions, Compactor, ErrorKind, GenericCompactor, Mode, Phase, Progress,
};

use vdisk_core::FormatDriver;

use super::util::{check, compact, content, create_dynamic, open};

/// Trips the token after `after` calls to `advance` (counting every phase).
struct CancelAfter {
    after: u64,
    seen: AtomicU64,
    token: CancelToken,
}

impl Progress for CancelAfter {
    fn phase(&self, _phase: Phase, _total: u64) {}
    fn advance(&self, _units: u64) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.token.cancel();
        }
    }
}

/// 48 blocks of 4 KiB: data, zero-overwritten data and holes interleaved, so the run has zero
/// scan, deallocation, move batches and a truncation.
fn bloated() -> Vec<u8> {
    let bs = 4096u64;
    let (img, mem) = create_dynamic(200 * bs, bs);
    for b in 0..200u64 {
        match b % 4 {
            0 | 3 => img.write_at(&[(b % 251) as u8 + 1; 4096], b * bs).unwrap(),
            1 => img.write_at(&[0; 4096], b * bs).unwrap(),
            _ => {}
        }
    }
    drop(img);
    mem.to_vec()
}

#[test]
fn cancelled_at_any_step_leaves_a_valid_equal_image_and_a_rerun_finishes() {
    let original = bloated();
    let expect = content(&*open(original.clone(), false).unwrap());
    let finished_len = {
        let mut img = open(original.clone(), true).unwrap();
        compact(&mut *img, Mode::Prezeroed).unwrap().bytes_after
    };
    let mut cancelled_runs = 0;
    for after in 1.. {
        let file = vdisk_core::MemFile::from_bytes(original.clone());
        let mut img = vdisk_vhd::DRIVER
            .open(
                Box::new(file.clone()),
                &vdisk_core::OpenOptions::read_write(),
            )
            .unwrap();
        let token = CancelToken::new();
        let progress = CancelAfter {
            after,
            seen: AtomicU64::new(0),
            token: token.clone(),
        };
        let c = GenericCompactor;
        let result = c
            .plan(
                &*img,
                &CompactOptions::new(Mode::Prezeroed),
                &progress,
                &token,
            )
            .and_then(|plan| c.apply(&mut *img, &plan, &progress, &token));
        match result {
            Ok(report) => {
                // Cancelling after the last progress step: the run completed.
                assert_eq!(report.bytes_after, finished_len);
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "step {after}: {e}");
                cancelled_runs += 1;
            }
        }
        drop(img);
        let bytes = file.to_vec();
        assert!(
            check(bytes.clone()).is_empty(),
            "step {after}: image checks clean"
        );
        let mut again = open(bytes, true).unwrap();
        assert!(
            content(&*again) == expect,
            "step {after}: content unchanged"
        );
        let report = compact(&mut *again, Mode::Prezeroed).unwrap();
        assert_eq!(
            report.bytes_after, finished_len,
            "step {after}: re-run finishes the job"
        );
        assert!(content(&*again) == expect);
    }
    // Progress steps: 200 - 50 holes = 150 scanned blocks, 1 deallocate batch, the move
    // batches and the truncation; every one of them was a cancel point.
    assert!(
        cancelled_runs > 150,
        "only {cancelled_runs} cancel points exercised"
    );
}
