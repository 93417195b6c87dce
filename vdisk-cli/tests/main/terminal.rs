//! The progress bar and Ctrl-C as a user meets them: `vdisk` in a real terminal (tmux, 80
//! columns), compacting a multi-GiB image. The bar must move while blocks move (not jump from
//! 0 to the end of a 1 GiB batch), show the file's name rather than its path, fit on one
//! 80-column line, and Ctrl-C must stop the run promptly at a safe point: exit 8, the image
//! valid and reading exactly as before, and the same command run again finishes the job.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{qemu_io_as, require, tempdir};

/// How the test names the image: the bar must show exactly this, not the folder.
const NAME: &str = "wsl-like.vhdx";
const GIB: u64 = 1 << 30;

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    tmux: PathBuf,
    socket: String,
}

impl Tmux {
    /// Starts `shell_command` in a detached 80×24 session.
    fn start(shell_command: &str) -> Tmux {
        let tmux = require("tmux", "tmux");
        let socket = format!("vdisk-test-{}", std::process::id());
        let t = Tmux { tmux, socket };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "80",
            "-y",
            "24",
            shell_command,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.tmux)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the pane shows now, one string per screen row.
    fn screen(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", "t"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux)
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// One reading of the bar: the phase and the percent.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    phase: String,
    percent: u32,
    line: String,
}

/// The bar's line on `screen`, if one is drawn: it starts with the file's name and holds the
/// percent on the same row (a bar wider than the terminal would wrap it onto the next).
fn bar_on(screen: &[String]) -> Option<Reading> {
    let line = screen.iter().find(|l| l.starts_with(NAME))?;
    let percent_at = line.rfind('%')?;
    let percent = line[..percent_at].rsplit(' ').next()?.trim().parse().ok()?;
    let phase = line[NAME.len()..line.find('[')?].trim().to_string();
    Some(Reading {
        phase,
        percent,
        line: line.clone(),
    })
}

/// A dynamic VHDX with 1 MiB blocks (WSL's layout) whose first GiB is stored zeros and the
/// next `data` GiB hold the pattern: compaction frees the zero blocks and moves every data
/// block down. Made by `qemu-img convert -S 0` (every block stored) from a raw file written
/// here, much faster than qemu-io's emulated writes.
fn image_with_blocks_to_move(dir: &Path, data: u64) -> PathBuf {
    let raw = dir.join("disk.raw");
    {
        let mut f = std::fs::File::create(&raw).expect("raw file");
        let zeros = vec![0u8; 8 << 20];
        let pattern = vec![PATTERN; 8 << 20];
        for i in 0..(data + 1) * GIB / (8 << 20) {
            let chunk = if i * (8 << 20) < GIB {
                &zeros
            } else {
                &pattern
            };
            f.write_all(chunk).expect("write raw");
        }
    }
    let image = dir.join(NAME);
    let out = Command::new(require("qemu-img", "qemu-utils"))
        .args(["convert", "-q", "-S", "0", "-f", "raw", "-O", "vhdx"])
        .args(["-o", "subformat=dynamic,block_size=1M"])
        .arg(&raw)
        .arg(&image)
        .output()
        .expect("qemu-img convert runs");
    assert!(out.status.success(), "qemu-img convert: {out:?}");
    std::fs::remove_file(&raw).expect("remove raw");
    image
}

/// The data byte.
const PATTERN: u8 = 0x5a;

/// qemu-io's verdict on what the image reads: one MiB out of every 32, zeros in the first GiB
/// and the pattern after, then `qemu-img check` on its tables.
fn assert_reads_as_written(image: &Path, data: u64) {
    let step = 32 << 20;
    let reads: Vec<String> = (0..(data + 1) * GIB / step)
        .map(|i| {
            let at = i * step + (i % 31) * (1 << 20);
            let byte = if at < GIB { 0 } else { PATTERN };
            format!("read -q -P {byte:#x} {at} 1M")
        })
        .collect();
    qemu_io_as("vhdx", image, &reads);
    let check = Command::new(require("qemu-img", "qemu-utils"))
        .args(["check", "-q", "-f", "vhdx"])
        .arg(image)
        .output()
        .expect("qemu-img check runs");
    assert!(check.status.success(), "qemu-img check: {check:?}");
}

/// The exit status the shell wrote to `marker` once vdisk ended, if it has.
fn exit_status(marker: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(marker).ok()?;
    text.trim().strip_suffix(';')?.parse().ok()
}

#[test]
fn the_bar_moves_block_by_block_in_80_columns_and_ctrl_c_stops_within_a_second() {
    let dir = tempdir();
    let data = 2;
    let image = image_with_blocks_to_move(dir.path(), data);
    let marker = dir.path().join("exit-status");
    let command = format!(
        "'{}' compact --mode prezeroed '{}'; echo \"$?;\" > '{}'; sleep 600",
        env!("CARGO_BIN_EXE_vdisk"),
        image.display(),
        marker.display()
    );
    let tmux = Tmux::start(&command);

    // Watch the bar until the blocks are a good way into moving.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut moving: Vec<u32> = Vec::new();
    let mut seen: Vec<Reading> = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no progress seen: {seen:?}");
        assert!(
            exit_status(&marker).is_none(),
            "vdisk ended before the test could interrupt it: {seen:?}"
        );
        let screen = tmux.screen();
        if let Some(r) = bar_on(&screen) {
            assert!(
                r.line.chars().count() <= 80 && r.line.contains(']'),
                "the bar fits one 80-column row: {screen:#?}"
            );
            assert!(
                !r.line.contains(&dir.path().display().to_string()),
                "the bar shows the name, not the path: {}",
                r.line
            );
            if r.phase == "moving blocks" && !moving.contains(&r.percent) {
                moving.push(r.percent);
            }
            if seen.last() != Some(&r) {
                seen.push(r);
            }
        }
        // Several distinct readings inside the move, none of them the end: per-block progress.
        if moving.iter().filter(|&&p| p > 0 && p < 70).count() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    let pressed = Instant::now();
    let status = loop {
        if let Some(s) = exit_status(&marker) {
            break s;
        }
        assert!(
            pressed.elapsed() < Duration::from_secs(60),
            "Ctrl-C was not answered: {:#?}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let answered = pressed.elapsed();
    let screen = tmux.screen().join("\n");
    eprintln!("Ctrl-C answered in {answered:?}; bar readings: {seen:#?}\n{screen}");
    assert_eq!(status, 8, "cancelled exit code: {screen}");
    assert!(
        answered < Duration::from_secs(1),
        "Ctrl-C took {answered:?}: it must be checked per block, not per batch"
    );
    assert!(screen.contains("cancel"), "the user is told: {screen}");
    assert_reads_as_written(&image, data);

    // Run again: it finishes the job.
    let out = Command::new(env!("CARGO_BIN_EXE_vdisk"))
        .args(["compact", "--mode", "prezeroed"])
        .arg(&image)
        .output()
        .expect("vdisk runs");
    assert!(out.status.success(), "{out:?}");
    assert_reads_as_written(&image, data);
    let len = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    assert!(
        len < (data + 1) * GIB - GIB / 2,
        "the zero GiB was given back: {len}"
    );
}
