//! Test support for format crates (feature `testing`): a host file that simulates a crash or a
//! failing disk at any point of the write stream.
//!
//! A [`FaultyFile`] counts every mutating operation (write, length change, hole punch). When the
//! count reaches the configured limit, the [`Fault`] fires. After a [`Fault::Crash`], every later
//! operation fails, and [`FaultyFile::after_crash`] gives the bytes a reboot could find: the state
//! at the last `sync`, plus any subset of the writes issued since (the disk may have persisted
//! some of them, in any order; in-order prefixes and the all/none extremes are the usual picks).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, ErrorKind, Result};
use crate::host_file::HostFile;
use crate::mem_file::MemFile;

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
    durable: Vec<u8>,
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
                durable: bytes,
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
        let file = MemFile::from_bytes(s.durable.clone());
        for (i, op) in s.pending.iter().enumerate() {
            let keep = match survivors {
                Survivors::SyncedOnly => false,
                Survivors::All => true,
                Survivors::Prefix(n) => i < n,
                Survivors::Mask(m) => i < 64 && m & (1 << i) != 0,
            };
            if keep {
                // Replaying onto a MemFile cannot fail for ops that succeeded live.
                let _ = match op {
                    Op::Write(off, data) => file.write_at(data, *off),
                    Op::SetLen(len) => file.set_len(*len),
                    Op::Punch(off, len) => file.punch_hole(*off, *len),
                };
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

    /// Counts one mutating operation and decides whether it may proceed.
    fn admit(&self, op: Op) -> Result<()> {
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
        s.pending.push(op);
        Ok(())
    }
}

impl HostFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if self.crashed() {
            return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
        }
        self.live.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.admit(Op::Write(offset, buf.to_vec()))?;
        self.live.write_at(buf, offset)
    }

    fn len(&self) -> Result<u64> {
        self.live.len()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.admit(Op::SetLen(len))?;
        self.live.set_len(len)
    }

    fn sync(&self) -> Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(Error::new(ErrorKind::Io, "injected crash: device gone"));
        }
        s.durable = self.live.to_vec();
        s.pending.clear();
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.admit(Op::Punch(offset, len))?;
        self.live.punch_hole(offset, len)
    }

    fn is_writable(&self) -> bool {
        true
    }
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
    fn fail_once_reports_kind_then_recovers() {
        let f = FaultyFile::new(vec![0; 2]);
        f.set_limit(2, Fault::FailOnce(ErrorKind::NoSpace));
        f.write_at(&[1], 0).unwrap();
        assert_eq!(f.write_at(&[1], 1).unwrap_err().kind(), ErrorKind::NoSpace);
        f.write_at(&[1], 1).unwrap();
        assert_eq!(f.live_bytes(), vec![1, 1]);
    }
}
