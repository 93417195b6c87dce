//! Test support for format crates (feature `testing`): a host file that simulates a crash or a
//! failing disk at any point of the write stream.
//!
//! A [`FaultyFile`] counts every mutating operation (write, length change, hole punch). When the
//! count reaches the configured limit, the [`Fault`] fires. After a [`Fault::Crash`], every later
//! operation fails, and [`FaultyFile::after_crash`] gives the bytes a reboot could find: the state
//! at the last `sync`, plus any subset of the writes issued since (the disk may have persisted
//! some of them, in any order; in-order prefixes and the all/none extremes are the usual picks).
//!
//! [`cut_every_write`] is the crash harness every format shares: it cuts an operation (a whole
//! compaction, say) at each of its writes and checks what a reboot finds, as [`CrashCase`]
//! describes.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::image::DiskImage;
use crate::mem_file::MemFile;

mod fs_free;
mod mem_image;
mod noise;
mod tools;

pub use fs_free::{MayZero, blocks_inside};
pub use mem_image::{compact, create_in_memory, open_bytes};
pub use noise::noise;
pub use tools::{run_tool, tool_output, tool_succeeds};

/// What happens when the operation counter reaches the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Power cut: this and every later operation fail with [`ErrorKind::Io`].
    Crash,
    /// Only this operation fails with the given kind (e.g. [`ErrorKind::NoSpace`]); the file
    /// keeps working afterwards.
    FailOnce(ErrorKind),
    /// This and every later mutating operation fail with the given kind (a full disk).
    FailAlways(ErrorKind),
}

/// Which unsynced writes survive the simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// None: only what was synced.
    SyncedOnly,
    /// All writes issued before the crash.
    All,
    /// The first `n` unsynced operations, in order.
    Prefix(usize),
    /// Each unsynced operation independently, chosen by the bits of a seed (bit i = op i).
    Mask(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
    Punch(u64, u64),
}

#[derive(Debug)]
struct State {
    /// The bytes as of the last `sync` (kept up to date by replaying the synced operations,
    /// so a sync costs what was written, not the file's size).
    durable: MemFile,
    pending: Vec<Op>,
    ops: u64,
    limit: Option<u64>,
    fault: Fault,
    crashed: bool,
}

/// A [`HostFile`] that injects a [`Fault`] at the Nth mutating operation (counting from 1).
#[derive(Debug, Clone)]
pub struct FaultyFile {
    live: MemFile,
    state: Arc<Mutex<State>>,
}

impl FaultyFile {
    /// Wraps a copy of `bytes`; no fault until [`FaultyFile::set_limit`] is called.
    pub fn new(bytes: Vec<u8>) -> FaultyFile {
        FaultyFile {
            live: MemFile::from_bytes(bytes.clone()),
            state: Arc::new(Mutex::new(State {
                durable: MemFile::from_bytes(bytes),
                pending: Vec::new(),
                ops: 0,
                limit: None,
                fault: Fault::Crash,
                crashed: false,
            })),
        }
    }

    /// Arms `fault` to fire at mutating operation number `n` (1-based) from now on.
    pub fn set_limit(&self, n: u64, fault: Fault) {
        let mut s = self.lock();
        s.limit = Some(s.ops + n);
        s.fault = fault;
    }

    /// How many mutating operations have been attempted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether a crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The bytes as the running program sees them (every completed write).
    pub fn live_bytes(&self) -> Vec<u8> {
        self.live.to_vec()
    }

    /// The bytes found after a reboot, with the given unsynced operations applied.
    pub fn after_crash(&self, survivors: Survivors) -> Vec<u8> {
        let s = self.lock();
        let file = MemFile::from_bytes(s.durable.to_vec());
        for (op, keep) in s.pending.iter().zip(kept(survivors, s.pending.len())) {
            if keep {
                replay(&file, op);
            }
        }
        file.to_vec()
    }

    /// How many operations are not yet synced.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one mutating operation, decides whether it may proceed, and if so does it on the
    /// live file (`apply`) and records it as unsynced. The state stays locked throughout, so
    /// the unsynced operations are recorded in the order the live file saw them.
    fn mutate(&self, op: Op, apply: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
        }
        s.ops += 1;
        if let Some(limit) = s.limit
            && s.ops >= limit
        {
            match s.fault {
                Fault::Crash => {
                    s.crashed = true;
                    return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
                }
                Fault::FailOnce(kind) if s.ops == limit => {
                    return Err(Error::new(kind, "injected failure"));
                }
                Fault::FailOnce(_) => {}
                Fault::FailAlways(kind) => return Err(Error::new(kind, "injected failure")),
            }
        }
        apply()?;
        s.pending.push(op);
        Ok(())
    }
}

/// Which of `pending` unsynced operations `survivors` keeps.
fn kept(survivors: Survivors, pending: usize) -> Vec<bool> {
    (0..pending)
        .map(|i| match survivors {
            Survivors::SyncedOnly => false,
            Survivors::All => true,
            Survivors::Prefix(n) => i < n,
            Survivors::Mask(m) => i < 64 && m & (1 << i) != 0,
        })
        .collect()
}

/// Does `op` on `file`. Cannot fail for operations that succeeded on the live file.
fn replay(file: &MemFile, op: &Op) {
    let _ = match op {
        Op::Write(off, data) => file.write_at(data, *off),
        Op::SetLen(len) => file.set_len(*len),
        Op::Punch(off, len) => file.punch_hole(*off, *len),
    };
}

impl HostFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if self.crashed() {
            return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
        }
        self.live.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.mutate(Op::Write(offset, buf.to_vec()), || {
            self.live.write_at(buf, offset)
        })
    }

    fn len(&self) -> Result<u64> {
        self.live.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.mutate(Op::SetLen(len), || self.live.set_len(len))
    }

    fn sync(&self) -> Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
        }
        let pending = std::mem::take(&mut s.pending);
        for op in &pending {
            replay(&s.durable, op);
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.mutate(Op::Punch(offset, len), || self.live.punch_hole(offset, len))
    }

    fn is_writable(&self) -> bool {
        true
    }
}

/// Opens an image writable over any host file ([`CrashCase::open_rw`]).
pub type OpenRw<'a> = Box<dyn Fn(Box<dyn HostFile>) -> Result<Box<dyn DiskImage>> + 'a>;
/// Opens in-memory bytes read-only ([`CrashCase::open_ro`]).
pub type OpenRo<'a> = Box<dyn Fn(Vec<u8>) -> Result<Box<dyn DiskImage>> + 'a>;
/// The operation under test ([`CrashCase::operation`]).
pub type Operation<'a> = Box<dyn Fn(&mut dyn DiskImage) -> Result<()> + 'a>;
/// What must not change ([`CrashCase::content`]).
pub type Content<'a> = Box<dyn Fn(&dyn DiskImage) -> Vec<u8> + 'a>;
/// Error-level problems of a file ([`CrashCase::errors`]).
pub type Errors<'a> = Box<dyn Fn(Vec<u8>) -> Vec<String> + 'a>;
/// Survivor policies for a number of unsynced operations ([`CrashCase::survivors`]).
pub type SurvivorPolicies<'a> = Box<dyn Fn(usize) -> Vec<Survivors> + 'a>;
/// Extra checks of a recovered file ([`CrashCase::inspect`]).
pub type Inspect<'a> = Box<dyn Fn(u64, Option<Survivors>, &[u8]) + 'a>;
/// Extra checks after a re-run ([`CrashCase::after_rerun`]).
pub type AfterRerun<'a> = Box<dyn Fn(&dyn DiskImage, &str) + 'a>;

/// Everything a crash test of one format needs to know, for [`cut_every_write`].
///
/// The harness runs `open_rw` + `operation` once on a counting [`FaultyFile`] to learn how many
/// mutating host-file operations the whole run issues (N). Then, for every cut point n in
/// 1..=N, it runs them again on a fresh copy of `original` whose nth operation fails with
/// `fault`, recovers the bytes a reboot could find (one set per [`Survivors`] policy for a
/// crash; the live bytes for a failing disk), and requires of each recovered file: it opens
/// read-only (`open_ro`), `content` equals that of `original`, `errors` finds nothing; a
/// re-run (`open_rw` + `operation` on an undamaged file) succeeds, reads the same, has no
/// errors and the same length as the uninterrupted run.
///
/// The limit is armed before `open_rw`, so writes a writable open makes itself (VHDX log
/// replay) are cut too.
pub struct CrashCase<'a> {
    /// A name for failure messages (`"vhd 4 KiB blocks"`).
    pub name: String,
    /// The image before the operation.
    pub original: Vec<u8>,
    /// Opens an image writable over any host file.
    pub open_rw: OpenRw<'a>,
    /// Opens an image read-only over in-memory bytes (must not change them).
    pub open_ro: OpenRo<'a>,
    /// The operation under test, e.g. a whole compaction.
    pub operation: Operation<'a>,
    /// What must not change: defaults to the whole virtual disk ([`whole_disk`]); large
    /// sparse disks pass a sample of the regions they wrote.
    pub content: Content<'a>,
    /// Error-level structural problems of a file (the format's `check`), as messages.
    pub errors: Errors<'a>,
    /// The survivor policies to try after a crash, given how many operations were unsynced.
    pub survivors: SurvivorPolicies<'a>,
    /// Extra checks of each recovered file, before the standard ones (e.g. an outside tool
    /// replaying a pending log). Arguments: cut point, survivor policy (`None` after a
    /// [`Fault::FailOnce`]), recovered bytes.
    pub inspect: Inspect<'a>,
    /// Extra checks of the file a re-run produced (e.g. its log is empty).
    pub after_rerun: AfterRerun<'a>,
}

impl<'a> CrashCase<'a> {
    /// A case with the default content ([`whole_disk`]), survivors ([`default_survivors`]) and
    /// no extra checks.
    pub fn new(
        name: impl Into<String>,
        original: Vec<u8>,
        open_rw: impl Fn(Box<dyn HostFile>) -> Result<Box<dyn DiskImage>> + 'a,
        open_ro: impl Fn(Vec<u8>) -> Result<Box<dyn DiskImage>> + 'a,
        operation: impl Fn(&mut dyn DiskImage) -> Result<()> + 'a,
        errors: impl Fn(Vec<u8>) -> Vec<String> + 'a,
    ) -> CrashCase<'a> {
        CrashCase {
            name: name.into(),
            original,
            open_rw: Box::new(open_rw),
            open_ro: Box::new(open_ro),
            operation: Box::new(operation),
            content: Box::new(whole_disk),
            errors: Box::new(errors),
            survivors: Box::new(default_survivors),
            inspect: Box::new(|_, _, _| {}),
            after_rerun: Box::new(|_, _| {}),
        }
    }

    fn run(&self, file: Box<dyn HostFile>) -> Result<()> {
        let mut image = (self.open_rw)(file)?;
        (self.operation)(&mut *image)
    }
}

impl std::fmt::Debug for CrashCase<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashCase")
            .field("name", &self.name)
            .field("original_len", &self.original.len())
            .finish_non_exhaustive()
    }
}

/// The whole virtual disk, for [`CrashCase::content`]. Panics if it cannot be read.
pub fn whole_disk(image: &dyn DiskImage) -> Vec<u8> {
    let len = usize::try_from(image.size()).expect("test disk fits in memory");
    let mut buf = vec![0u8; len];
    image.read_at(&mut buf, 0).expect("read the whole disk");
    buf
}

/// Nothing unsynced, everything, the first one, the first half, and the even and the odd
/// operations.
pub fn default_survivors(pending: usize) -> Vec<Survivors> {
    vec![
        Survivors::SyncedOnly,
        Survivors::All,
        Survivors::Prefix(1),
        Survivors::Prefix(pending / 2),
        Survivors::Mask(0x5555_5555_5555_5555),
        Survivors::Mask(0xaaaa_aaaa_aaaa_aaaa),
    ]
}

/// What [`cut_every_write`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashStats {
    /// Mutating operations of the uninterrupted run (and so cut points tested).
    pub cut_points: u64,
    /// Recovered files checked: cut points times survivor policies, less the duplicates.
    pub recoveries: u64,
    /// Recovered files skipped because an earlier survivor policy at the same cut point kept
    /// the same unsynced operations, so recovered the same bytes (common right after a sync,
    /// when little is pending).
    pub duplicates: u64,
    /// File length after the uninterrupted run.
    pub final_len: u64,
}

/// Cuts the operation of `case` at every mutating host-file operation with `fault` and checks
/// every recovered file as [`CrashCase`] describes (once per distinct file at a cut point: see
/// [`CrashStats::duplicates`]).
///
/// For [`Fault::FailOnce`] (a full disk, an I/O error) it also requires that the operation
/// fails with that kind, that the same open image still reads the original content, and that
/// running the operation again on it finishes the job.
///
/// # Panics
/// On the first violated property, naming the case, the cut point and the survivor policy.
pub fn cut_every_write(case: &CrashCase<'_>, fault: Fault) -> CrashStats {
    let name = &case.name;
    let model = (case.content)(&*(case.open_ro)(case.original.clone()).expect("original opens"));
    let counter = FaultyFile::new(case.original.clone());
    case.run(Box::new(counter.clone()))
        .unwrap_or_else(|e| panic!("{name}: uninterrupted run: {e}"));
    let total = counter.ops();
    let final_bytes = counter.live_bytes();
    let final_len = final_bytes.len();
    let mut stats = CrashStats {
        cut_points: 0,
        recoveries: 0,
        duplicates: 0,
        final_len: final_len as u64,
    };
    for n in 1..=total {
        let f = FaultyFile::new(case.original.clone());
        f.set_limit(n, fault);
        let recovered: Vec<(Option<Survivors>, Vec<u8>)> = match fault {
            Fault::Crash => {
                assert!(
                    case.run(Box::new(f.clone())).is_err(),
                    "{name}: cut {n}/{total} fires"
                );
                // Policies that keep the same operations recover the same bytes: each distinct
                // recovered file is checked once.
                let mut seen = Vec::new();
                let mut files = Vec::new();
                for s in (case.survivors)(f.pending()) {
                    let keep = kept(s, f.pending());
                    if seen.contains(&keep) {
                        stats.duplicates += 1;
                    } else {
                        seen.push(keep);
                        files.push((Some(s), f.after_crash(s)));
                    }
                }
                files
            }
            Fault::FailOnce(kind) | Fault::FailAlways(kind) => {
                let what = format!("{name}: {kind:?} at op {n}/{total}");
                let result = (case.open_rw)(Box::new(f.clone())).map(|mut image| {
                    let err = (case.operation)(&mut *image);
                    (image, err)
                });
                match result {
                    Err(e) => assert_eq!(e.kind(), kind, "{what}: open fails with the fault"),
                    Ok((mut image, r)) => {
                        let e = r.expect_err(&format!("{what}: the operation fails"));
                        assert_eq!(e.kind(), kind, "{what}: error kind ({e})");
                        if matches!(fault, Fault::FailOnce(_)) {
                            // The open image stays consistent with its file; a second run
                            // on it finishes the job.
                            assert!((case.content)(&*image) == model, "{what}: in-memory view");
                            (case.operation)(&mut *image)
                                .unwrap_or_else(|e| panic!("{what}: retry on the same image: {e}"));
                            assert!((case.content)(&*image) == model, "{what}: after retry");
                            drop(image);
                            let live = f.live_bytes();
                            assert_eq!(live.len(), final_len, "{what}: retry reaches the size");
                            let errors = (case.errors)(live);
                            assert!(errors.is_empty(), "{what}: check after retry: {errors:?}");
                        }
                    }
                }
                // A fresh copy failing the same way, left as the failure left it.
                let g = FaultyFile::new(case.original.clone());
                g.set_limit(n, fault);
                assert!(
                    case.run(Box::new(g.clone())).is_err(),
                    "{what}: fires again"
                );
                vec![(None, g.live_bytes())]
            }
        };
        for (s, bytes) in recovered {
            let what = format!("{name}: cut {n}/{total} ({fault:?}), {s:?}");
            (case.inspect)(n, s, &bytes);
            assert_recovered(case, bytes, &model, final_len, &what);
            stats.recoveries += 1;
        }
        stats.cut_points += 1;
    }
    stats
}

/// The error-level problems `driver`'s check finds in `bytes`, as messages: the usual
/// [`CrashCase::errors`]. Panics if the check cannot run at all.
pub fn check_errors(driver: &dyn crate::FormatDriver, bytes: Vec<u8>) -> Vec<String> {
    let report = driver
        .check(Box::new(MemFile::from_bytes(bytes)))
        .expect("check runs");
    report
        .problems
        .iter()
        .filter(|p| p.severity == crate::Severity::Error)
        .map(|p| p.message.clone())
        .collect()
}

/// The faults a compaction is proven against: a crash, a disk that stays full from then on,
/// and one write that fails for lack of space.
pub const ALL_FAULTS: [Fault; 3] = [
    Fault::Crash,
    Fault::FailAlways(ErrorKind::NoSpace),
    Fault::FailOnce(ErrorKind::NoSpace),
];

/// [`cut_every_write`] with each of `faults` in turn; the stats in the same order.
pub fn cut_each(case: &CrashCase<'_>, faults: &[Fault]) -> Vec<CrashStats> {
    faults.iter().map(|&f| cut_every_write(case, f)).collect()
}

/// Prints one line per fault (`"{label} {fault:?}: N cut points (R recoveries, D duplicates
/// skipped)"`, the counts a closing report quotes) and returns the fewest cut points of any,
/// for a lower bound that must hold for every fault.
pub fn report_cuts(label: &str, faults: &[Fault], stats: &[CrashStats]) -> u64 {
    for (f, s) in faults.iter().zip(stats) {
        eprintln!(
            "{label} {f:?}: {} cut points ({} recoveries, {} duplicates skipped)",
            s.cut_points, s.recoveries, s.duplicates
        );
    }
    stats.iter().map(|s| s.cut_points).min().unwrap_or(0)
}

fn assert_recovered(case: &CrashCase<'_>, bytes: Vec<u8>, model: &[u8], len: usize, what: &str) {
    let image = (case.open_ro)(bytes.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!((case.content)(&*image) == model, "{what}: content changed");
    drop(image);
    let errors = (case.errors)(bytes.clone());
    assert!(errors.is_empty(), "{what}: check: {errors:?}");
    let file = MemFile::from_bytes(bytes);
    case.run(Box::new(file.clone()))
        .unwrap_or_else(|e| panic!("{what}: re-run: {e}"));
    let done = file.to_vec();
    assert_eq!(done.len(), len, "{what}: re-run reaches the same size");
    let image = (case.open_ro)(done.clone()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(
        (case.content)(&*image) == model,
        "{what}: content changed by the re-run"
    );
    (case.after_rerun)(&*image, what);
    drop(image);
    let errors = (case.errors)(done);
    assert!(errors.is_empty(), "{what}: check after re-run: {errors:?}");
}

/// Opens `path` like [`crate::StdFile::open`], retrying for up to 5 s while the file reports
/// [`ErrorKind::InUse`].
///
/// For multi-threaded test processes only. When one test thread spawns a child (qemu-img,
/// qemu-io), the child holds copies of all the parent's open files between `fork` and `exec`,
/// so a `flock` another test thread has just released by closing its image can look held for
/// a moment. A lock that is really leaked still fails after the retries.
pub fn open_std_file(
    path: impl AsRef<std::path::Path>,
    access: crate::Access,
) -> Result<crate::StdFile> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match crate::StdFile::open(path.as_ref(), access) {
            Err(e) if e.kind() == ErrorKind::InUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_state_and_chosen_survivors() {
        let f = FaultyFile::new(vec![0; 4]);
        f.write_at(&[1], 0).unwrap();
        f.sync().unwrap();
        f.write_at(&[2], 1).unwrap();
        f.write_at(&[3], 2).unwrap();
        f.set_limit(1, Fault::Crash);
        assert!(f.write_at(&[4], 3).is_err());
        assert!(
            f.write_at(&[5], 3).is_err(),
            "device stays gone after a crash"
        );
        assert_eq!(f.after_crash(Survivors::SyncedOnly), vec![1, 0, 0, 0]);
        assert_eq!(f.after_crash(Survivors::All), vec![1, 2, 3, 0]);
        assert_eq!(f.after_crash(Survivors::Prefix(1)), vec![1, 2, 0, 0]);
        assert_eq!(f.after_crash(Survivors::Mask(0b10)), vec![1, 0, 3, 0]);
    }

    #[test]
    fn sync_makes_every_kind_of_operation_durable_in_order() {
        let f = FaultyFile::new(vec![7; 8]);
        f.write_at(&[1, 2], 6).unwrap();
        f.set_len(12).unwrap();
        f.punch_hole(0, 3).unwrap();
        f.write_at(&[9], 1).unwrap();
        f.sync().unwrap();
        let synced = f.live_bytes();
        assert_eq!(synced, vec![0, 9, 0, 7, 7, 7, 1, 2, 0, 0, 0, 0]);
        f.set_len(2).unwrap();
        f.set_limit(1, Fault::Crash);
        assert!(f.write_at(&[5], 0).is_err());
        assert_eq!(f.after_crash(Survivors::SyncedOnly), synced);
        assert_eq!(f.after_crash(Survivors::All), vec![0, 9]);
    }

    #[test]
    fn fail_once_reports_kind_then_recovers() {
        let f = FaultyFile::new(vec![0; 2]);
        f.set_limit(2, Fault::FailOnce(ErrorKind::NoSpace));
        f.write_at(&[1], 0).unwrap();
        assert_eq!(f.write_at(&[1], 1).unwrap_err().kind(), ErrorKind::NoSpace);
        f.write_at(&[1], 1).unwrap();
        assert_eq!(f.live_bytes(), vec![1, 1]);
    }
}
