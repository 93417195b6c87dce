//! Crash cuts at every write of a file-system-aware `vdisk compact --mode full`, for any
//! analyser: the harness `ntfs_crash.rs` and `ext4_crash.rs` share. The caller builds a guest
//! disk with the file system's own tools and gives its free bytes as those tools see them
//! (disk offsets) and a read-back oracle; [`crash_full`] puts the disk in a dynamic image made
//! by our own driver, cuts the write stream at every point, checks that each recovered image
//! reads as before outside the free bytes and, inside them, as before or zeros per block, and
//! runs the read-back oracle on a sample of recovered images spread over the run.

use std::cell::Cell;
use std::ops::Range;

use vdisk_core::testing::{
    CrashCase, CrashStats, FaultyFile, MayZero, Survivors, blocks_inside, check_errors,
    cut_every_write,
};
use vdisk_core::{
    BlockDevice, CancelToken, CompactOptions, CompactPlan, Compactor, CreateSpec, DiskImage,
    FormatDriver, FsAnalyzer, GenericCompactor, ImageKind, MemFile, Mode, NoProgress, OpenOptions,
    Reason, Result, analyze_disk,
};

/// The disk as a dynamic image of `driver`'s format in `block` blocks, made by our driver.
pub fn image(driver: &'static dyn FormatDriver, disk: &[u8], block: u64) -> Vec<u8> {
    let mem = MemFile::new();
    let spec = CreateSpec::new(ImageKind::Dynamic, disk.len() as u64).block_size(block);
    let img = driver.create(Box::new(mem.clone()), &spec).unwrap();
    img.write_at(disk, 0).unwrap();
    drop(img);
    mem.to_vec()
}

/// Plans `vdisk compact --mode full` as the CLI does: analysis with `analyzer`, then its free
/// space.
pub fn plan_full(
    img: &mut dyn DiskImage,
    analyzer: &'static dyn FsAnalyzer,
) -> Result<CompactPlan> {
    let disk: &dyn BlockDevice = &*img;
    let analysis = analyze_disk(disk, &[analyzer])?;
    let mut opts = CompactOptions::new(Mode::Full);
    opts.fs_free = Some(analysis.free.whole_blocks(img.block_size()));
    GenericCompactor.plan(img, &opts, &NoProgress, &CancelToken::new())
}

/// Plans and applies a full compaction; see [`plan_full`].
pub fn full(img: &mut dyn DiskImage, analyzer: &'static dyn FsAnalyzer) -> Result<()> {
    let plan = plan_full(img, analyzer)?;
    GenericCompactor.apply(img, &plan, &NoProgress, &CancelToken::new())?;
    Ok(())
}

/// One file system's crash case.
pub struct FsCrash<'a> {
    /// The analyser `vdisk compact` would use.
    pub analyzer: &'static dyn FsAnalyzer,
    /// The file system's free bytes, as its own tools see them, in disk offsets (sorted).
    pub free: &'a [Range<u64>],
    /// Reads every file back from a recovered image (arguments: qemu format name, image
    /// bytes, a description for failures); panics on a difference.
    pub read_back: &'a dyn Fn(&str, &[u8], &str),
    /// Recovered images to read back, per format.
    pub samples: u64,
}

/// What [`crash_full`] did.
pub struct CrashOutcome {
    /// The harness's counts.
    pub stats: CrashStats,
    /// Free blocks holding data that read zeros in recovered images (the run got that far).
    pub zeroed: u64,
    /// Recovered images read back.
    pub samples: u64,
}

/// Cuts the full compaction of `bytes` (format `driver`, qemu name `qemu_format`) at every
/// write with a crash, checks every recovery and samples the oracle.
pub fn crash_full(
    fs: &FsCrash<'_>,
    driver: &'static dyn FormatDriver,
    qemu_format: &str,
    bytes: Vec<u8>,
) -> CrashOutcome {
    let analyzer = fs.analyzer;
    let open_ro = move |bytes: Vec<u8>| {
        driver.open(
            Box::new(MemFile::from_bytes(bytes).read_only()),
            &OpenOptions::read_only(),
        )
    };
    let original = open_ro(bytes.clone()).unwrap();
    let may = MayZero::new(
        vdisk_core::testing::whole_disk(&*original),
        blocks_inside(fs.free, original.block_size(), original.size()),
    );
    drop(original);
    // The run is not vacuous: it frees blocks of free space and moves others.
    let mut probe = driver
        .open(
            Box::new(MemFile::from_bytes(bytes.clone())),
            &OpenOptions::read_write(),
        )
        .unwrap();
    let plan = plan_full(&mut *probe, analyzer).unwrap();
    drop(probe);
    assert!(
        plan.reclaimed(Reason::FsFree) >= 2,
        "{qemu_format}: {plan:?}"
    );
    assert!(!plan.moves.is_empty(), "{qemu_format}: no block moves");
    // Spread the oracle's samples over the whole run.
    let counter = FaultyFile::new(bytes.clone());
    let mut img = driver
        .open(Box::new(counter.clone()), &OpenOptions::read_write())
        .unwrap();
    full(&mut *img, analyzer).unwrap();
    drop(img);
    let stride = (counter.ops() / fs.samples).max(1);
    let (zeroed, samples, sampled_at) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let mut case = CrashCase::new(
        format!("{} {qemu_format} full", analyzer.id()),
        bytes,
        move |file| driver.open(file, &OpenOptions::read_write()),
        open_ro,
        move |img| full(img, analyzer),
        move |bytes| check_errors(driver, bytes),
    );
    case.content = Box::new(|img| may.content(img));
    case.survivors = Box::new(|pending| {
        vec![
            Survivors::SyncedOnly,
            Survivors::All,
            Survivors::Prefix(pending / 2),
            Survivors::Mask(0x5555_5555_5555_5555),
        ]
    });
    case.inspect = Box::new(|n, s, bytes| {
        let what = format!("{qemu_format} cut {n} {s:?}");
        let image = open_ro(bytes.to_vec()).unwrap();
        match may.freed(&*image) {
            Ok(z) => zeroed.set(zeroed.get() + z),
            Err(why) => panic!("{what}: {why}"),
        }
        // The first distinct recovery of every stride-th cut point.
        if n % stride == 0 && sampled_at.get() != n && samples.get() < fs.samples {
            (fs.read_back)(qemu_format, bytes, &what);
            samples.set(samples.get() + 1);
            sampled_at.set(n);
        }
    });
    let stats = cut_every_write(&case, vdisk_core::testing::Fault::Crash);
    drop(case);
    CrashOutcome {
        stats,
        zeroed: zeroed.get(),
        samples: samples.get(),
    }
}

/// The raw disk qemu-img exports from recovered image `bytes` (after `qemu-img check -r all`,
/// which replays a pending VHDX log), written next to `dir`'s other files.
pub fn qemu_export(dir: &std::path::Path, qemu_format: &str, bytes: &[u8]) -> Vec<u8> {
    use super::guest::os;
    use super::qemu_img;
    let img = dir.join(format!("sample.{qemu_format}"));
    let raw = dir.join("sample.raw");
    std::fs::write(&img, bytes).unwrap();
    if qemu_format == "vhdx" {
        qemu_img([
            os("check"),
            os("-q"),
            os("-r"),
            os("all"),
            os("-f"),
            os("vhdx"),
            img.as_os_str(),
        ])
        .ok();
    }
    let _ = std::fs::remove_file(&raw);
    qemu_img([
        os("convert"),
        os("-f"),
        os(qemu_format),
        os("-O"),
        os("raw"),
        img.as_os_str(),
        raw.as_os_str(),
    ])
    .ok();
    std::fs::read(&raw).unwrap()
}
