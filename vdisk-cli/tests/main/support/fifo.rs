//! Proof that a file was never opened: a FIFO with a writer blocked in `open` on a thread.
//! Any open of the FIFO for reading (even a non-blocking one that gives up at once) lets the
//! writer's `open` return, which the watch sees.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{require, run};

/// A FIFO at a path that must never be opened.
pub struct FifoWatch {
    path: PathBuf,
    opened: Receiver<()>,
    writer: JoinHandle<()>,
}

impl FifoWatch {
    /// Makes a FIFO at `path` (nothing may exist there) and starts the blocked writer.
    pub fn new(path: &Path) -> FifoWatch {
        run(std::process::Command::new(require("mkfifo", "coreutils")).arg(path)).ok();
        let (tx, opened) = channel();
        let at = path.to_path_buf();
        let writer = std::thread::spawn(move || {
            let _w = std::fs::OpenOptions::new().write(true).open(&at).unwrap();
            let _ = tx.send(());
        });
        // Let the writer reach its blocking open before anything else touches the FIFO.
        std::thread::sleep(Duration::from_millis(200));
        FifoWatch {
            path: path.to_path_buf(),
            opened,
            writer,
        }
    }

    /// Whether anything opened the FIFO for reading since [`FifoWatch::new`]. Releases the
    /// writer either way, so the watch cannot leave a thread behind.
    pub fn was_opened(self) -> bool {
        let opened = self.opened.recv_timeout(Duration::from_millis(300)).is_ok();
        if !opened {
            // The writer is waiting in open, so this reader's open returns at once, and so
            // does the writer's.
            let _r = std::fs::File::open(&self.path).unwrap();
            self.opened.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        self.writer.join().unwrap();
        opened
    }
}
