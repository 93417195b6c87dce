//! The progress bar: core's [`Progress`] observer drawn with indicatif on stderr, only when
//! stderr is a terminal and the output is not JSON. Notes from the engine are collected for
//! the report either way.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vdisk_core::{Phase, Progress};

/// Progress of one file's compaction.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    /// Draw on stderr once the first phase starts.
    draw: bool,
    notes: Mutex<Vec<String>>,
}

impl Bar {
    /// A bar labelled `name`; hidden unless `visible` and stderr is a terminal.
    pub fn new(name: &str, visible: bool) -> Bar {
        let bar = ProgressBar::hidden();
        let style =
            ProgressStyle::with_template("{prefix}: {msg:24} [{bar:30}] {pos}/{len} ({eta})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        Bar {
            bar,
            draw: visible && std::io::stderr().is_terminal(),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Removes the bar from the terminal and returns the notes received.
    pub fn finish(self) -> Vec<String> {
        self.bar.finish_and_clear();
        self.notes.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for Bar {
    fn phase(&self, phase: Phase, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(phase.label());
        if self.draw && self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }

    fn note(&self, message: &str) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.to_string());
    }
}
