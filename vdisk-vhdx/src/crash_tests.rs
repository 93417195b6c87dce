//! Crash tests of BAT updates split over several log entries (one BAT page per entry), at
//! every cut point of a whole compaction. The integration tests (`tests/main/crash.rs`) cover
//! the common case of one entry per update through the public API only.

use std::process::Command;

use vdisk_core::testing::{Fault, FaultyFile, Survivors};
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
fn open(file: impl vdisk_core::HostFile + 'static, head: Option<u32>) -> Result<VhdxImage> {
    let mut image = VhdxImage::open(Box::new(file), true)?;
    if let (Some(head), Some(s)) = (head, image.session.get_mut().unwrap().as_mut()) {
        s.set_page_limit(1);
        s.set_log_head(head);
    }
    Ok(image)
}

fn compact(image: &mut VhdxImage) -> Result<()> {
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

fn no_errors(bytes: Vec<u8>) -> bool {
    let mut problems = Vec::new();
    inspect(Box::new(MemFile::from_bytes(bytes)), &mut problems).is_ok()
        && problems.iter().all(|p| p.severity != Severity::Error)
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

fn cut_everywhere(head: u32) {
    let bytes = qemu_image();
    let model = sample(&read_only(bytes.clone()));
    let counter = FaultyFile::new(bytes.clone());
    let mut image = open(counter.clone(), Some(head)).unwrap();
    compact(&mut image).unwrap();
    drop(image);
    let total = counter.ops();
    let final_bytes = counter.live_bytes();
    assert_eq!(final_bytes.len() as u64, 7 * MIB);
    let mut cuts = 0;
    let mut qemu_replays = 0;
    for n in 1..=total {
        let f = FaultyFile::new(bytes.clone());
        let mut image = open(f.clone(), Some(head)).unwrap();
        f.set_limit(n, Fault::Crash);
        assert!(compact(&mut image).is_err(), "cut {n} fires");
        drop(image);
        let pending = f.pending();
        let synced = f.after_crash(Survivors::SyncedOnly);
        if read_only(synced.clone()).log_replayed_in_memory() {
            // qemu replays the pending log (every entry of the run) to the same content.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.vhdx");
            std::fs::write(&path, &synced).unwrap();
            let ok = Command::new("qemu-img")
                .args(["check", "-q", "-r", "all", "-f", "vhdx"])
                .arg(&path)
                .status()
                .unwrap();
            assert!(ok.success(), "cut {n}: qemu-img check -r all");
            let repaired = read_only(std::fs::read(&path).unwrap());
            assert!(!repaired.log_replayed_in_memory());
            assert!(sample(&repaired) == model, "cut {n}: qemu's replay");
            qemu_replays += 1;
        }
        for s in [
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(pending / 2),
            Survivors::Mask(0x5555_5555_5555_5555),
        ] {
            let after = f.after_crash(s);
            assert!(no_errors(after.clone()), "cut {n} {s:?}: check");
            assert!(
                sample(&read_only(after.clone())) == model,
                "cut {n} {s:?}: content"
            );
            let file = MemFile::from_bytes(after);
            let mut image = open(file.clone(), None).unwrap();
            compact(&mut image).unwrap();
            drop(image);
            let done = file.to_vec();
            assert_eq!(done.len(), final_bytes.len(), "cut {n} {s:?}: size");
            let image = read_only(done);
            assert!(!image.log_replayed_in_memory());
            assert!(sample(&image) == model, "cut {n} {s:?}: re-run");
        }
        cuts += 1;
    }
    eprintln!(
        "split-update cut points tested (log head {head:#x}): {cuts} ({qemu_replays} replayed by qemu)"
    );
    assert!(cuts > 20 && qemu_replays > 5);
}
