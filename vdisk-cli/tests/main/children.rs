//! Differencing children are safe from file-system-aware reclaim of their parent, whoever
//! compacts it: the `vdisk` command, or a program that follows the crate docs and calls
//! `vdisk_core::compact_path`. Looking for children reads only the neighbours' own headers:
//! no FIFO, device, link out of the folder or busy file makes it hang, wait or open them.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vdisk_core::{
    CancelToken, CompactRequest, FsAnalyzer, Mode, NoProgress, OpenOptions, Registry, Toolkit,
    compact_path,
};

use super::chain::libvhdi_chain;
use super::in_use::Holder;
use super::support::ntfs::{Table, build};
use super::support::{qemu_create, run, tempdir, vdisk, vdisk_cmd};

static ANALYZERS: &[&dyn FsAnalyzer] = &[&vdisk_ntfs::ANALYZER];

/// What a library user writes from the crate docs: the formats and file systems they use.
fn toolkit() -> Toolkit {
    Toolkit::new(
        Registry::new(&[&vdisk_vhd::DRIVER, &vdisk_vhdx::DRIVER]),
        ANALYZERS,
    )
}

fn create_child(parent: &Path, child: &Path) {
    let out = vdisk([
        "create".as_ref(),
        "--type".as_ref(),
        "differencing".as_ref(),
        "--parent".as_ref(),
        parent.as_os_str(),
        child.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "create child: {}", out.stderr);
}

/// Every byte of `path` as vdisk reads it (through its parents).
fn vdisk_reads(path: &Path) -> Vec<u8> {
    let image = toolkit()
        .registry()
        .open_path(path, &OpenOptions::read_only())
        .unwrap();
    let mut bytes = vec![0u8; usize::try_from(image.size()).unwrap()];
    image.read_at(&mut bytes, 0).unwrap();
    bytes
}

fn library_compaction_of_a_parent_keeps_its_child(format: &str) {
    let disk = build(Table::Mbr, None);
    let image = disk.image(format, "dynamic");
    let ext = if format == "vpc" { "vhd" } else { "vhdx" };
    let child = disk.dir.path().join(format!("child.{ext}"));
    create_child(&image, &child);
    let (libvhdi_before, vdisk_before) = (libvhdi_chain(&[&child, &image]), vdisk_reads(&child));
    let request = CompactRequest::new(Mode::Full);
    let done = compact_path(
        &image,
        &toolkit(),
        &request,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(done.report.blocks_reclaimed_fs, 0, "{:?}", done.report);
    assert!(done.report.blocks_reclaimed_zero > 0, "{:?}", done.report);
    assert_eq!(done.withheld_for.children, vec![child.clone()]);
    assert!(
        libvhdi_chain(&[&child, &image]) == libvhdi_before,
        "libvhdi reads the child the same through its compacted parent"
    );
    assert!(
        vdisk_reads(&child) == vdisk_before,
        "vdisk reads the child the same"
    );
}

#[test]
fn a_library_user_compacting_a_vhd_parent_in_full_mode_through_the_entry_point_does_not_break_its_child()
 {
    library_compaction_of_a_parent_keeps_its_child("vpc");
}

#[test]
fn a_library_user_compacting_a_vhdx_parent_in_full_mode_through_the_entry_point_does_not_break_its_child()
 {
    library_compaction_of_a_parent_keeps_its_child("vhdx");
}

#[test]
fn full_mode_through_the_entry_point_reclaims_ntfs_free_space_without_the_caller_analysing_the_disk()
 {
    let disk = build(Table::Gpt, None);
    let image = disk.image("vpc", "dynamic");
    let done = compact_path(
        &image,
        &toolkit(),
        &CompactRequest::new(Mode::Full),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap_or_else(|f| panic!("{f}"));
    assert!(done.report.blocks_reclaimed_fs > 0, "{:?}", done.report);
    assert!(done.analysis.is_some_and(|a| a.any_trusted()));
    disk.assert_content_kept(&image, "vpc");
}

#[test]
fn children_are_the_images_whose_parent_locators_name_the_file() {
    let dir = tempdir();
    let d = dir.path();
    let base = d.join("base.vhd");
    let other = d.join("other.vhd");
    qemu_create(&base, "dynamic", 1 << 20);
    qemu_create(&other, "dynamic", 1 << 20);
    let (c1, c2, g) = (d.join("c1.vhd"), d.join("c2.vhd"), d.join("g.vhd"));
    create_child(&base, &c1);
    create_child(&base, &c2);
    create_child(&c1, &g);
    fs::write(d.join("notes.txt"), b"not an image").unwrap();
    let t = toolkit();
    let found = t.children_of(&base);
    assert_eq!(found.children, vec![c1.clone(), c2]);
    assert!(found.undetermined.is_empty(), "{found:?}");
    assert_eq!(t.children_of(&c1).children, vec![g.clone()]);
    assert!(t.children_of(&other).is_empty());
    assert!(t.children_of(&g).is_empty());
    assert!(t.children_of(&d.join("missing.vhd")).is_empty());
    // Without its parent the grandchild is still read (its own header only), and so are the
    // children of a parent that is gone.
    fs::remove_file(&c1).unwrap();
    assert!(t.children_of(&g).is_empty());
}

/// A thread blocked opening `fifo` for writing: that open returns only when someone opens the
/// FIFO for reading, so the flag says whether anyone did.
struct FifoWatch {
    fifo: PathBuf,
    opened: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoWatch {
    fn new(fifo: PathBuf) -> FifoWatch {
        run(std::process::Command::new("mkfifo").arg(&fifo)).ok();
        let opened = Arc::new(AtomicBool::new(false));
        let (path, flag) = (fifo.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let _writer = fs::OpenOptions::new().write(true).open(&path);
            flag.store(true, Ordering::SeqCst);
        });
        FifoWatch {
            fifo,
            opened,
            thread: Some(thread),
        }
    }

    /// Whether anyone other than this watch opened the FIFO; then releases the thread.
    fn finish(mut self) -> bool {
        std::thread::sleep(Duration::from_millis(200));
        let opened = self.opened.load(Ordering::SeqCst);
        // O_NONBLOCK (Linux): a reader that does not wait, to release the blocked writer.
        let _reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000)
            .open(&self.fifo)
            .unwrap();
        self.thread.take().unwrap().join().unwrap();
        opened
    }
}

#[test]
fn a_dry_run_full_compaction_opens_no_fifo_device_link_out_of_the_folder_or_busy_file_and_says_what_it_could_not_tell()
 {
    let disk = build(Table::Mbr, None);
    let image = disk.image("vpc", "dynamic");
    let d = disk.dir.path();
    let elsewhere = d.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    // A child living in another folder, reached through a link in this one.
    let far_child = elsewhere.join("far-child.vhd");
    create_child(&image, &far_child);
    symlink(&far_child, d.join("link-to-far-child.vhd")).unwrap();
    symlink(&elsewhere, d.join("link-to-folder.vhd")).unwrap();
    symlink("/dev/zero", d.join("zero.vhd")).unwrap();
    let fifo_here = FifoWatch::new(d.join("fifo.vhd"));
    let fifo_far = FifoWatch::new(elsewhere.join("trap.vhd"));
    symlink(elsewhere.join("trap.vhd"), d.join("link-to-fifo.vhd")).unwrap();
    let held = d.join("held.vhd");
    qemu_create(&held, "dynamic", 1 << 20);
    let holder = Holder::start_format(&held, "vpc", &[]);

    let start = Instant::now();
    let mut child = vdisk_cmd()
        .args(["compact", "--dry-run", "--mode", "full", "--json"])
        .arg(&image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            drop(holder);
            panic!("vdisk compact --dry-run hung on the folder's FIFOs, devices or busy file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    drop(holder);
    assert!(
        !fifo_here.finish(),
        "the FIFO in the folder was opened (an open that waits would hang)"
    );
    assert!(
        !fifo_far.finish(),
        "a link to a FIFO in another folder was followed and opened"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["blocks_reclaimed_fs"], 0, "{r}");
    let notes = r["notes"].to_string();
    for (name, why) in [
        ("held.vhd", "in use"),
        (
            "link-to-far-child.vhd",
            "symbolic link to a file in another folder",
        ),
    ] {
        assert!(
            notes.contains("could not tell") && notes.contains(name) && notes.contains(why),
            "the note says it could not tell about {name} ({why}): {notes}"
        );
    }
    for quiet in [
        "zero.vhd",
        "fifo.vhd",
        "link-to-folder.vhd",
        "link-to-fifo.vhd",
    ] {
        assert!(!notes.contains(quiet), "{quiet} is no image: {notes}");
    }
    eprintln!("dry run over the folder took {took:?}");
}

/// A qcow2 naming a VHDX as its backing file (as `qemu-img create -b base.vhdx -F vhdx` makes
/// it) is that VHDX's child: full-mode compaction of the VHDX withholds its file-system
/// reclaim, and the qcow2 reads the same afterwards.
#[test]
fn a_qcow2_child_of_a_vhdx_is_found_and_kept_reading_the_same_when_its_parent_is_compacted() {
    let disk = build(Table::Mbr, None);
    let image = disk.image("vhdx", "dynamic");
    let child = disk.dir.path().join("child.qcow2");
    let name = image.file_name().unwrap().to_str().unwrap();
    super::support::qemu_img([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        name,
        "-F",
        "vhdx",
        child.to_str().unwrap(),
    ])
    .ok();
    let toolkit = Toolkit::new(
        Registry::new(&[&vdisk_vhdx::DRIVER, &vdisk_qcow2::DRIVER]),
        ANALYZERS,
    );
    assert_eq!(toolkit.children_of(&image).children, vec![child.clone()]);
    let reads = |t: &Toolkit| {
        let img = t
            .registry()
            .open_path(&child, &OpenOptions::read_only())
            .unwrap();
        let mut bytes = vec![0u8; usize::try_from(img.size()).unwrap()];
        img.read_at(&mut bytes, 0).unwrap();
        bytes
    };
    let before = reads(&toolkit);
    let done = compact_path(
        &image,
        &toolkit,
        &CompactRequest::new(Mode::Full),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(done.report.blocks_reclaimed_fs, 0, "{:?}", done.report);
    assert_eq!(done.withheld_for.children, vec![child.clone()]);
    assert!(reads(&toolkit) == before, "the qcow2 child reads the same");
}
