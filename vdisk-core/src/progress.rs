//! Progress reporting (an observer) and cancellation (a token), kept apart so a Ctrl-C handler
//! thread can trip the token while a progress bar draws.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

/// The stages of a compaction, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Reading allocated blocks to find the all-zero ones. Units: blocks.
    ZeroScan,
    /// Marking reclaimable blocks free in the image's tables. Units: blocks.
    Deallocate,
    /// Moving surviving blocks down into holes. Units: blocks.
    Relocate,
    /// Punching freed ranges out of the host file. Units: blocks.
    Punch,
    /// Writing trailing structures and shortening the file. Units: 1.
    Truncate,
}

impl Phase {
    /// The longest label, so that displays can reserve its width.
    pub const LABEL_WIDTH: usize = 23;

    /// A short lowercase label for progress displays, in plain words, at most
    /// [`Phase::LABEL_WIDTH`] characters.
    pub fn label(self) -> &'static str {
        match self {
            Phase::ZeroScan => "looking for zero blocks",
            Phase::Deallocate => "freeing blocks",
            Phase::Relocate => "moving blocks",
            Phase::Punch => "giving space back",
            Phase::Truncate => "shortening the file",
        }
    }
}

/// Receives progress events. All methods have empty defaults; implementations must be cheap
/// (they are called once per block, possibly from several threads).
pub trait Progress: Send + Sync {
    /// A phase starts with `total` units of work.
    fn phase(&self, phase: Phase, total: u64) {
        let _ = (phase, total);
    }
    /// `units` more units of the current phase are done.
    fn advance(&self, units: u64) {
        let _ = units;
    }
    /// Something the user should know that is not an error (e.g. a mode fell back).
    fn note(&self, message: &str) {
        let _ = message;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A shared flag that asks a running operation to stop at the next safe point.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the operation to stop. Safe to call from a signal-handling thread.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` if cancelled. Call it between units of work, never inside a metadata
    /// update.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::new(
                ErrorKind::Cancelled,
                "cancelled; the image is valid and a re-run finishes the job",
            ))
        } else {
            Ok(())
        }
    }
}
