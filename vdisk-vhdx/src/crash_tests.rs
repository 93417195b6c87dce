//! Crash tests of BAT updates split over several log entries (one BAT page per entry), at
//! every cut point of a whole compaction. The integration tests (`tests/main/crash.rs`) cover
//! the common case of one entry per update through the public API only.

use std::cell::Cell;
use std::process::Command;

use vdisk_core::testing::{CrashCase, Fault, Survivors, cut_every_write};
use vdisk_core::{
    CancelToken, CompactOptions, Compactor, DiskImage, GenericCompactor, MIB, MemFile, Mode,
    NoProgress, Result, Severity,
};

use crate::image::{VhdxImage, inspect};

fn qemu_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.vhdx");
    let p = path.to_str().unwrap();
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "2G"])
        .status()
        .unwrap();
    assert!(ok.success());
    // One BAT page maps 512 MiB: zero blocks in three pages, data blocks after them.
    let mut args = vec!["-f".to_string(), "vhdx".to_string()];
    for (at, fill) in [(0, 0), (600, 0), (1300, 0), (100, 3), (700, 4), (1400, 5)] {
        args.push("-c".into());
        args.push(format!("write -P {fill} {}M 4k", at));
    }
    args.push(p.to_string());
    let ok = Command::new("qemu-io").args(&args).status().unwrap();
    assert!(ok.success());
    std::fs::read(&path).unwrap()
}

/// Opens writable; with `head`, one BAT page per entry and the log head placed there.
fn open(file: Box<dyn vdisk_core::HostFile>, head: Option<u32>) -> Result<VhdxImage> {
    let mut image = VhdxImage::open(file, true)?;
    if let (Some(head), Some(s)) = (head, image.session.get_mut().unwrap().as_mut()) {
        s.set_page_limit(1);
        s.set_log_head(head);
    }
    Ok(image)
}

fn compact(image: &mut dyn DiskImage) -> Result<()> {
    let c = GenericCompactor;
    let plan = c.plan(
        image,
        &CompactOptions::new(Mode::Prezeroed),
        &NoProgress,
        &CancelToken::new(),
    )?;
    c.apply(image, &plan, &NoProgress, &CancelToken::new())
        .map(|_| ())
}

/// The parts of the disk the scenario wrote, as an image reads them.
fn sample(image: &dyn DiskImage) -> Vec<u8> {
    let mut out = Vec::new();
    for at in [0, 100, 600, 700, 1300, 1400, 2047] {
        let mut b = vec![0u8; 8192];
        image.read_at(&mut b, at * MIB).unwrap();
        out.extend(b);
    }
    out
}

fn read_only(bytes: Vec<u8>) -> VhdxImage {
    VhdxImage::open(Box::new(MemFile::from_bytes(bytes).read_only()), false).unwrap()
}

#[test]
fn updates_split_over_entries_survive_a_crash_at_every_write() {
    cut_everywhere(0);
}

/// The first entry's header is the log's last sector; its data sectors wrap to the start.
#[test]
fn entries_wrapping_around_the_log_end_survive_a_crash_at_every_write() {
    cut_everywhere((1 << 20) - 4096);
}

fn errors(bytes: Vec<u8>) -> Vec<String> {
    let mut problems = Vec::new();
    match inspect(Box::new(MemFile::from_bytes(bytes)), &mut problems) {
        Err(e) => vec![e.to_string()],
        Ok(_) => problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.to_string())
            .collect(),
    }
}

/// qemu replays a pending log (every entry of the run) to the same content we read.
fn qemu_replays_to(synced: &[u8], model: &[u8], n: u64) -> bool {
    if !read_only(synced.to_vec()).log_replayed_in_memory() {
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vhdx");
    std::fs::write(&path, synced).unwrap();
    let ok = Command::new("qemu-img")
        .args(["check", "-q", "-r", "all", "-f", "vhdx"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success(), "cut {n}: qemu-img check -r all");
    let repaired = read_only(std::fs::read(&path).unwrap());
    assert!(!repaired.log_replayed_in_memory());
    assert!(sample(&repaired) == model, "cut {n}: qemu's replay");
    true
}

/// Every cut point of the whole compaction through the shared harness (the re-run writes its
/// entries at the same log head, one BAT page each, too).
fn cut_everywhere(head: u32) {
    let bytes = qemu_image();
    let model = sample(&read_only(bytes.clone()));
    let qemu_replays = Cell::new(0);
    let mut case = CrashCase::new(
        format!("vhdx split updates, log head {head:#x}"),
        bytes,
        move |file| open(file, Some(head)).map(|i| Box::new(i) as Box<dyn DiskImage>),
        |bytes| Ok(Box::new(read_only(bytes)) as Box<dyn DiskImage>),
        |image| compact(image),
        errors,
    );
    case.content = Box::new(sample);
    case.survivors = Box::new(|pending| {
        vec![
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(pending / 2),
            Survivors::Mask(0x5555_5555_5555_5555),
        ]
    });
    case.inspect = Box::new(|n, s, bytes| {
        if s == Some(Survivors::SyncedOnly) && qemu_replays_to(bytes, &model, n) {
            qemu_replays.set(qemu_replays.get() + 1);
        }
    });
    case.after_rerun = Box::new(|image, what| {
        assert!(
            image
                .details()
                .contains(&("log".to_string(), "empty".to_string())),
            "{what}: log emptied by the re-run"
        );
    });
    let stats = cut_every_write(&case, Fault::Crash);
    assert_eq!(stats.final_len, 7 * MIB);
    let qemu_replays = qemu_replays.get();
    eprintln!(
        "split-update cut points tested (log head {head:#x}): {} ({} recoveries, {qemu_replays} replayed by qemu)",
        stats.cut_points, stats.recoveries
    );
    assert!(stats.cut_points > 20 && qemu_replays > 5);
}
