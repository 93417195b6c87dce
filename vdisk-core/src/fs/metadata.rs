//! Reading a file system's metadata safely: bounded reads, a read budget, and a guard that
//! turns damage and parser panics into an untrusted verdict.
//!
//! Every analyser faces the same hostile input: lengths and offsets written by a guest or a
//! stranger. The kit here is what each analyser would otherwise write for itself:
//! - [`MetaReader`]: positional reads of metadata, each bounded (no read past the volume, none
//!   larger than [`MetaReader::MAX_READ`]), all charged to a budget so that metadata whose
//!   links form a loop ends in [`Doubt::Damaged`] instead of a hang, with a one-chunk cache for
//!   the many small reads of tables and descriptors.
//! - [`Doubt`] and [`examine_guarded`]: an analysis returns `Err(Doubt::Damaged(reason))` for
//!   damage (which becomes [`FsVerdict::Untrusted`]) and `Err(Doubt::Device(e))` for a failing
//!   device (which stays an error); a panic in the examination becomes untrusted too.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::block::BlockDevice;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::FsVerdict;

/// Why an examination stopped before a verdict.
#[derive(Debug)]
pub enum Doubt {
    /// The metadata is damaged or not what the analyser can trust; the reason is for the user.
    Damaged(String),
    /// The device failed a read: an error of the disk, not of the file system.
    Device(Error),
}

impl From<Error> for Doubt {
    fn from(e: Error) -> Doubt {
        Doubt::Device(e)
    }
}

/// The result of an examination step.
pub type Examined<T> = std::result::Result<T, Doubt>;

/// `Err(Doubt::Damaged(reason))`, for `?`-style early returns.
pub fn damaged<T>(reason: impl Into<String>) -> Examined<T> {
    Err(Doubt::Damaged(reason.into()))
}

/// Runs `examine` and maps its outcome to the [`crate::FsAnalyzer::analyze`] contract:
/// `Ok(verdict)` as is; [`Doubt::Damaged`] to [`FsVerdict::Untrusted`] with its reason; a device
/// read outside the volume (metadata pointing past it) to untrusted; any other device error to
/// `Err`; a panic inside `examine` (a reader bug met on damaged metadata) to untrusted.
pub fn examine_guarded(
    fs: &'static str,
    examine: impl FnOnce() -> Examined<FsVerdict>,
) -> Result<FsVerdict> {
    let untrusted = |reason: String| Ok(FsVerdict::Untrusted { fs, reason });
    match catch_unwind(AssertUnwindSafe(examine)) {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(Doubt::Damaged(reason))) => untrusted(reason),
        Ok(Err(Doubt::Device(e))) if e.kind() == ErrorKind::OutOfRange => {
            untrusted(format!("{fs} metadata points outside the volume ({e})"))
        }
        Ok(Err(Doubt::Device(e))) => Err(e),
        Err(_) => untrusted(format!(
            "{fs} metadata is damaged: the {fs} reader gave up on it"
        )),
    }
}

/// Size of the cached chunk of [`MetaReader`].
const CHUNK: u64 = 64 << 10;

/// Bounded, budgeted reads of a volume's metadata; see the module docs. Not `Sync`: one
/// analysis owns it.
#[derive(Debug)]
pub struct MetaReader<'a> {
    device: &'a dyn BlockDevice,
    budget: Cell<u64>,
    /// The last chunk read: its offset and bytes.
    cache: RefCell<Option<(u64, Vec<u8>)>>,
}

impl<'a> MetaReader<'a> {
    /// Largest single read, far above any one metadata structure the analysers read at once.
    pub const MAX_READ: usize = 16 << 20;

    /// A reader of `device` that reads at most `budget` bytes from it in all.
    pub fn new(device: &'a dyn BlockDevice, budget: u64) -> MetaReader<'a> {
        MetaReader {
            device,
            budget: Cell::new(budget),
            cache: RefCell::new(None),
        }
    }

    /// The device.
    pub fn device(&self) -> &'a dyn BlockDevice {
        self.device
    }

    /// The device's size.
    pub fn size(&self) -> u64 {
        self.device.size()
    }

    /// Bytes the budget still allows.
    pub fn budget_left(&self) -> u64 {
        self.budget.get()
    }

    fn charge(&self, n: u64) -> Examined<()> {
        let left = self.budget.get();
        if n > left {
            return damaged(
                "reading the file system's metadata did not finish within its expected size",
            );
        }
        self.budget.set(left - n);
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new buffer. `what` names the structure in the
    /// reason when the read is out of bounds ("the group descriptor table").
    pub fn read(&self, offset: u64, len: usize, what: &str) -> Examined<Vec<u8>> {
        if len > Self::MAX_READ {
            return damaged(format!(
                "{what} claims {len} bytes, more than any sound volume has"
            ));
        }
        let mut buf = vec![0u8; len];
        self.read_into(&mut buf, offset, what)?;
        Ok(buf)
    }

    /// Fills `buf` from `offset`; see [`MetaReader::read`].
    pub fn read_into(&self, buf: &mut [u8], offset: u64, what: &str) -> Examined<()> {
        let len = buf.len() as u64;
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return damaged(format!(
                "{what} at byte {offset:#x} lies outside the {size}-byte volume"
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let chunk = offset / CHUNK * CHUNK;
        if offset + len > chunk + CHUNK {
            // Larger than one chunk or straddling two: read directly.
            self.charge(len)?;
            self.device.read_at(buf, offset)?;
            return Ok(());
        }
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_none_or(|(at, _)| *at != chunk) {
            let n = CHUNK.min(size - chunk);
            self.charge(n)?;
            let mut bytes = vec![0u8; usize::try_from(n).unwrap_or(0)];
            self.device.read_at(&mut bytes, chunk)?;
            *cache = Some((chunk, bytes));
        }
        let Some((_, bytes)) = cache.as_ref() else {
            return damaged("metadata cache lost");
        };
        let from = usize::try_from(offset - chunk).unwrap_or(0);
        buf.copy_from_slice(&bytes[from..from + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemDevice;

    fn verdict_of(doubt: Option<Doubt>) -> Result<FsVerdict> {
        examine_guarded("testfs", || match doubt {
            None => Ok(FsVerdict::NotMine),
            Some(d) => Err(d),
        })
    }

    #[test]
    fn damage_and_panics_are_untrusted_device_failures_are_errors() {
        assert_eq!(verdict_of(None).unwrap(), FsVerdict::NotMine);
        let v = verdict_of(Some(Doubt::Damaged("bad magic".into()))).unwrap();
        assert_eq!(
            v,
            FsVerdict::Untrusted {
                fs: "testfs",
                reason: "bad magic".into()
            }
        );
        let io = verdict_of(Some(Doubt::Device(Error::new(ErrorKind::Io, "eio"))));
        assert_eq!(io.unwrap_err().kind(), ErrorKind::Io);
        let out = verdict_of(Some(Doubt::Device(Error::new(ErrorKind::OutOfRange, "x"))));
        assert!(matches!(out.unwrap(), FsVerdict::Untrusted { .. }));
        let panicked = examine_guarded("testfs", || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            Ok(FsVerdict::Untrusted {
                fs: "testfs",
                reason: v[i].to_string(),
            })
        });
        match panicked.unwrap() {
            FsVerdict::Untrusted { reason, .. } => assert!(reason.contains("gave up")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_are_bounded_by_the_volume_the_limit_and_the_budget() {
        let dev = MemDevice::new(
            (0..200_000u32)
                .map(|i| u8::try_from(i % 256).unwrap())
                .collect(),
        );
        let r = MetaReader::new(&dev, 2 * CHUNK + 10);
        assert_eq!(r.read(5, 3, "x").unwrap(), vec![5, 6, 7]);
        // Served from the cached chunk: no charge.
        assert_eq!(r.read(300, 1, "x").unwrap(), vec![44]);
        assert_eq!(r.budget_left(), CHUNK + 10);
        assert!(
            matches!(r.read(199_999, 2, "the table"), Err(Doubt::Damaged(m)) if m.contains("the table"))
        );
        assert!(matches!(r.read(u64::MAX, 2, "x"), Err(Doubt::Damaged(_))));
        assert!(matches!(
            r.read(0, MetaReader::MAX_READ + 1, "x"),
            Err(Doubt::Damaged(_))
        ));
        // A straddling read is direct; then the budget runs out.
        assert_eq!(r.read(CHUNK - 1, 2, "x").unwrap().len(), 2);
        assert_eq!(r.read(2 * CHUNK, 1, "x").unwrap(), vec![0]);
        assert_eq!(r.budget_left(), 8);
        assert!(matches!(r.read(3 * CHUNK, 1, "x"), Err(Doubt::Damaged(_))));
        let bad = MemDevice::new(vec![0; 1000]).failing(10..20);
        let r = MetaReader::new(&bad, 1 << 20);
        assert!(matches!(r.read(0, 4, "x"), Err(Doubt::Device(_))));
    }
}
