//! The progress bar: core's [`Progress`] observer drawn with indicatif on stderr, only when
//! stderr is a terminal and the output is not JSON. Notes from the engine are collected for
//! the report either way.
//!
//! One line, at most [`LINE_WIDTH`] columns whatever the file's name, so that it never wraps
//! in an 80-column terminal (Windows' classic console, tmux, ssh): the file's name (not its
//! path; shortened in the middle when long), what is being done, the bar, percent and time
//! left.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vdisk_core::{Phase, Progress};

/// The widest line the bar draws.
pub const LINE_WIDTH: usize = 79;
/// The most columns of a file name shown.
const NAME_WIDTH: usize = 24;
/// What the line holds besides the name and the bar: a space, the phase, " [", "] ",
/// "100%", a space and the time left (at most 4 columns: "59s", "12m", "3h").
const FIXED_WIDTH: usize = 1 + Phase::LABEL_WIDTH + 2 + 2 + 4 + 1 + 4;
// The longest name still leaves a bar of 10 columns.
const _: () = assert!(FIXED_WIDTH + NAME_WIDTH + 10 <= LINE_WIDTH);

/// Progress of one file's compaction.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    /// Draw on stderr once the first phase starts.
    draw: bool,
    notes: Mutex<Vec<String>>,
}

impl Bar {
    /// A bar for `file`, labelled with its name; hidden unless `visible` and stderr is a
    /// terminal.
    pub fn new(file: &Path, visible: bool) -> Bar {
        let bar = ProgressBar::hidden();
        let name = short_name(file);
        let width = LINE_WIDTH - FIXED_WIDTH - name.chars().count();
        let template = format!(
            "{{prefix}} {{msg:{}}} [{{bar:{width}}}] {{percent:>3}}% {{eta:>4}}",
            Phase::LABEL_WIDTH
        );
        let style = ProgressStyle::with_template(&template)
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(name);
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

/// The name of `file` as the bar shows it: the last component, at most [`NAME_WIDTH`]
/// characters, shortened in the middle (keeping the end, where the extension and the
/// distinguishing digits usually are) with "..".
pub fn short_name(file: &Path) -> String {
    let name = file
        .file_name()
        .unwrap_or(file.as_os_str())
        .to_string_lossy()
        .replace(|c: char| c.is_control(), "?");
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= NAME_WIDTH {
        return name;
    }
    let head = 8;
    let tail = NAME_WIDTH - 2 - head;
    let mut short: String = chars[..head].iter().collect();
    short.push_str("..");
    short.extend(&chars[chars.len() - tail..]);
    short
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_the_file_name_not_its_folders() {
        let name = short_name(Path::new("/mnt/profiles/S-1-5-21-42/Profile_alice.vhdx"));
        assert_eq!(name, "Profile_alice.vhdx");
    }

    #[test]
    fn a_long_name_is_shortened_in_the_middle_keeping_its_end() {
        let long = "Profile_a_very_long_user_name_from_the_directory.vhdx";
        let name = short_name(Path::new(long));
        assert_eq!(name.chars().count(), NAME_WIDTH, "{name}");
        assert!(name.starts_with("Profile_"), "{name}");
        assert!(name.ends_with("directory.vhdx"), "{name}");
        assert!(name.contains(".."), "{name}");
        let wide = "ディスクのイメージファイルの名前がとても長い場合.vhdx";
        assert_eq!(short_name(Path::new(wide)).chars().count(), NAME_WIDTH);
    }

    #[test]
    fn every_phase_label_fits_its_column() {
        for phase in [
            Phase::ZeroScan,
            Phase::Deallocate,
            Phase::Relocate,
            Phase::Punch,
            Phase::Truncate,
        ] {
            assert!(
                phase.label().chars().count() <= Phase::LABEL_WIDTH,
                "{phase:?}"
            );
        }
    }
}
