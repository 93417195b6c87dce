//! What every vdisk fuzz target does with one input, and the oracles it checks.
//!
//! [`exercise`] opens the input read-only through a format driver and, if that works, reads
//! both ends of every block and across each block start, runs the deep check and a dry-run
//! compaction through the library's entry point (reads only). Beyond "no panic":
//! - a read-only open, its reads, check and plan never try to change the file (the file refuses
//!   and records any attempt);
//! - if `check` reports no error, every read inside the disk succeeds and reads past its end
//!   fail;
//! - allocations stay bounded (`cargo xtask fuzz` runs libFuzzer with `-rss_limit_mb` and
//!   `-malloc_limit_mb`).
#![forbid(unsafe_code)]

pub mod sparse;

use std::sync::{Arc, Mutex};

use vdisk_core::{
    BlockIndex, CancelToken, CompactRequest, Error, ErrorKind, FormatDriver, FsAnalyzer, HostFile,
    MemFile, Mode, NoProgress, OpenOptions, Registry, Result, Severity, Toolkit, compact_image,
    image_info,
};

/// The file systems the dry-run compaction analyses, as `vdisk compact` does.
static ANALYZERS: &[&dyn FsAnalyzer] = &[&vdisk_ntfs::ANALYZER];

/// Most bytes read per input (keeps executions fast).
const READ_BUDGET: u64 = 16 << 20;
/// Most allocation-map entries visited per input.
const BLOCK_BUDGET: u64 = 1 << 22;

/// Opens `bytes` with `driver` and checks the oracles above; panics on a violation.
pub fn exercise(driver: &dyn FormatDriver, bytes: Vec<u8>) {
    let file = Watched {
        inner: MemFile::from_bytes(bytes),
        tried: Arc::default(),
    };
    let _ = driver.probe(&file);
    let clean = match driver.check(Box::new(file.clone())) {
        Ok(report) => report.problems.iter().all(|p| p.severity < Severity::Error),
        Err(_) => false,
    };
    file.assert_untouched("check");
    let Ok(mut image) = driver.open(Box::new(file.clone()), &OpenOptions::read_only()) else {
        file.assert_untouched("a failed read-only open");
        return;
    };
    let _ = image.check();
    let _ = image_info(&*image);
    let _ = image.details();
    let size = image.size();
    let block_size = image.block_size().max(1);
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 512];
    for i in 0..image.block_count().min(BLOCK_BUDGET) {
        let state = image.block_state(BlockIndex(i));
        if clean && let Err(e) = &state {
            panic!("check is clean but block {i} has no state: {e}");
        }
        // The first and last sector of each block, and a read across its start: every block
        // maps to one host range, so its ends are what range checks see.
        let start = i.saturating_mul(block_size);
        if start >= size {
            // Table entries past the virtual size (counted so compaction keeps them).
            continue;
        }
        let end = start.saturating_add(block_size).min(size);
        let n = (end - start).min(512);
        let across = start.checked_sub(256).map(|s| (s, 512u64.min(size - s)));
        for (at, len) in [(start, n), (end.saturating_sub(n), n)]
            .into_iter()
            .chain(across)
        {
            if budget == 0 || len == 0 {
                continue;
            }
            let r = image.read_at(&mut buf[..len as usize], at);
            if clean && let Err(e) = r {
                panic!("check is clean but reading {len} bytes at {at:#x} (block {i}) failed: {e}");
            }
            budget = budget.saturating_sub(len);
        }
    }
    if clean {
        let past = image.read_at(&mut buf[..1], size);
        assert!(past.is_err(), "a read past the end of the disk succeeded");
    }
    // The library's one entry point, as a dry run (reads only): file-system analysis, the
    // zero scan and the plan. An in-memory image has no neighbours to look for children in.
    let toolkit = Toolkit::new(Registry::new(&[]), ANALYZERS);
    let request = CompactRequest::new(Mode::Full).dry_run(true);
    let _ = compact_image(
        &mut *image,
        &toolkit,
        &request,
        &NoProgress,
        &CancelToken::new(),
    );
    drop(image);
    file.assert_untouched("a read-only open, its reads, check or plan");
}

/// A writable-looking file that refuses and records every change: a read-only open must
/// never try one (cheaper and stricter than comparing the bytes after each execution).
#[derive(Debug, Clone)]
struct Watched {
    inner: MemFile,
    tried: Arc<Mutex<Option<String>>>,
}

impl Watched {
    fn refuse(&self, what: String) -> Result<()> {
        let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        tried.get_or_insert(what);
        Err(Error::new(ErrorKind::Io, "the fuzz target refuses writes"))
    }

    fn assert_untouched(&self, when: &str) {
        let tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            tried.is_none(),
            "{when} tried to change the file: {tried:?}"
        );
    }
}

impl HostFile for Watched {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.refuse(format!("write of {} bytes at {offset:#x}", buf.len()))
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.refuse(format!("set_len({len})"))
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.refuse(format!("punch_hole({offset:#x}, {len})"))
    }
    fn copy_within(&self, from: u64, to: u64, len: u64) -> Result<()> {
        self.refuse(format!("copy_within({from:#x}, {to:#x}, {len})"))
    }
    fn is_writable(&self) -> bool {
        true
    }
}

pub mod analysis;
pub mod btrfs;
pub mod ext4;
pub mod lvm;
pub mod xfs;
