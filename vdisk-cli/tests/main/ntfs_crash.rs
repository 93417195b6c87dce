//! Crash safety of file-system-aware compaction end to end: a small MBR disk (sfdisk) with one
//! NTFS volume made by `mkntfs -Q` over random bytes (free clusters keep garbage), a scratch
//! file copied in by `ntfscp` and then cut to nothing by `ntfstruncate` (whole free blocks of
//! deleted data before used ones, so blocks move), and files copied in after it, put into a dynamic VHD (128 KiB blocks) and a dynamic VHDX (1 MiB
//! blocks) by our own drivers. The operation under test is what `vdisk compact --mode full`
//! does: `analyze_disk` with the NTFS analyser, plan with its free space, apply.
//!
//! The write stream is cut at every write ([`cut_every_write`]); each recovered image must
//! read as before outside ntfs-3g's own free clusters (`ntfscat '$Bitmap'`, not our analyser)
//! and each block wholly inside them as before or all zeros ([`MayZero`]); a re-run must finish.
//! For a sample of recovered images the oracle reads the files back: qemu-img exports the disk
//! (after `qemu-img check -r all`, which replays a pending VHDX log) and `ntfscat` must return
//! every file byte for byte.
//!
//! Tools (a missing one fails the test): `fdisk` (sfdisk), `ntfs-3g` (mkntfs, ntfscp,
//! ntfstruncate, ntfsls, ntfscat), `qemu-utils` (qemu-img).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are a few MiB and tests run on 64-bit hosts"
)]

use std::cell::Cell;
use std::fs;
use std::ops::Range;

use vdisk_core::testing::{
    CrashCase, CrashStats, FaultyFile, MayZero, Survivors, blocks_inside, check_errors,
    cut_every_write,
};
use vdisk_core::{
    BlockDevice, CancelToken, CompactOptions, CompactPlan, Compactor, CreateSpec, DiskImage,
    FormatDriver, GenericCompactor, ImageKind, MemFile, Mode, NoProgress, OpenOptions, Reason,
    Result, analyze_disk,
};

use super::support::ntfs::{MIB, SECTOR, Vol, noise, ntfs3g_free, os, tool};
use super::support::{qemu_img, tempdir};

/// The partition: 1 MiB in, 10 MiB long, on a 12 MiB disk (the last MiB is outside it).
const START: u64 = 2048;
const SECTORS: u64 = 10 * MIB / SECTOR;
const DISK: u64 = 12 * MIB;
/// The scratch file whose clusters become free space holding old data.
const SCRATCH: usize = 4_500_000;
/// Files copied in, by length; the middle one lies between free space on both sides.
const FILES: [usize; 3] = [700_000, 40_000, 1_300_000];
/// Recovered images the oracle reads back, per format.
const ORACLE_SAMPLES: u64 = 8;

struct Disk {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
    /// ntfs-3g's free clusters in disk offsets.
    free: Vec<Range<u64>>,
}

fn build() -> Disk {
    let dir = tempdir();
    let raw = dir.path().join("disk.raw");
    fs::write(&raw, noise(DISK as usize, 31)).unwrap();
    let script = format!("label: dos\nstart={START}, size={SECTORS}, type=7\n");
    tool(
        "sfdisk",
        "fdisk",
        &[os("-q"), raw.as_os_str()],
        Some(&script),
    );
    let vol = dir.path().join("vol");
    fs::write(&vol, noise((SECTORS * SECTOR) as usize, 32)).unwrap();
    let mkntfs = [
        "-Q", "-F", "-q", "-s", "512", "-c", "4096", "-p", "2048", "-L", "CRASH",
    ];
    let mut args: Vec<&std::ffi::OsStr> = mkntfs.iter().map(|a| os(a)).collect();
    args.push(vol.as_os_str());
    tool("mkntfs", "ntfs-3g", &args, None);
    let scratch = dir.path().join("scratch.bin");
    fs::write(&scratch, noise(SCRATCH, 39)).unwrap();
    tool(
        "ntfscp",
        "ntfs-3g",
        &[
            os("-q"),
            vol.as_os_str(),
            scratch.as_os_str(),
            os("scratch.bin"),
        ],
        None,
    );
    let mut files = Vec::new();
    for (i, len) in FILES.into_iter().enumerate() {
        let name = format!("f{i}.bin");
        let data = noise(len, 40 + i as u64);
        let src = dir.path().join(&name);
        fs::write(&src, &data).unwrap();
        tool(
            "ntfscp",
            "ntfs-3g",
            &[os("-q"), vol.as_os_str(), src.as_os_str(), os(&name)],
            None,
        );
        files.push((name, data));
    }
    // Cut the scratch file's $DATA (attribute type 0x80) to nothing: its clusters are free.
    let listing = tool("ntfsls", "ntfs-3g", &[os("-i"), vol.as_os_str()], None);
    let inode = String::from_utf8_lossy(&listing)
        .lines()
        .find(|l| l.ends_with("scratch.bin"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .expect("ntfsls lists scratch.bin with its inode");
    tool(
        "ntfstruncate",
        "ntfs-3g",
        &[vol.as_os_str(), os(&inode), os("0x80"), os("0")],
        None,
    );
    let v = Vol {
        index: 1,
        start: START,
        sectors: SECTORS,
        cluster: 4096,
        dirty: false,
        files: Vec::new(),
    };
    let free = ntfs3g_free(&vol, &v);
    let mut bytes = fs::read(&raw).unwrap();
    let at = (START * SECTOR) as usize;
    bytes[at..at + (SECTORS * SECTOR) as usize].copy_from_slice(&fs::read(&vol).unwrap());
    Disk {
        dir,
        bytes,
        files,
        free,
    }
}

/// The disk as a dynamic image of `driver`'s format in `block` blocks, made by our driver.
fn image(driver: &'static dyn FormatDriver, disk: &[u8], block: u64) -> Vec<u8> {
    let mem = MemFile::new();
    let spec = CreateSpec::new(ImageKind::Dynamic, disk.len() as u64).block_size(block);
    let img = driver.create(Box::new(mem.clone()), &spec).unwrap();
    img.write_at(disk, 0).unwrap();
    drop(img);
    mem.to_vec()
}

/// Plans `vdisk compact --mode full` as the CLI does: NTFS analysis, then its free space.
fn plan_full(img: &mut dyn DiskImage) -> Result<CompactPlan> {
    let disk: &dyn BlockDevice = &*img;
    let analysis = analyze_disk(disk, &[&vdisk_ntfs::ANALYZER])?;
    let mut opts = CompactOptions::new(Mode::Full);
    opts.fs_free = Some(analysis.free.whole_blocks(img.block_size()));
    GenericCompactor.plan(img, &opts, &NoProgress, &CancelToken::new())
}

fn full(img: &mut dyn DiskImage) -> Result<()> {
    let plan = plan_full(img)?;
    GenericCompactor.apply(img, &plan, &NoProgress, &CancelToken::new())?;
    Ok(())
}

/// The oracle on recovered image `bytes`: qemu-img exports it (replaying a pending VHDX log
/// first), ntfscat reads every file back identical.
fn files_read_back(disk: &Disk, qemu_format: &str, bytes: &[u8], what: &str) {
    let dir = disk.dir.path();
    let img = dir.join(format!("sample.{qemu_format}"));
    let raw = dir.join("sample.raw");
    let vol = dir.join("sample.vol");
    fs::write(&img, bytes).unwrap();
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
    let _ = fs::remove_file(&raw);
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
    let exported = fs::read(&raw).unwrap();
    let r = (START * SECTOR) as usize..((START + SECTORS) * SECTOR) as usize;
    assert!(
        exported.len() >= r.end,
        "{what}: qemu's export is too short"
    );
    fs::write(&vol, &exported[r]).unwrap();
    for (name, data) in &disk.files {
        let read = tool("ntfscat", "ntfs-3g", &[vol.as_os_str(), os(name)], None);
        assert!(read == *data, "{what}: ntfscat {name} reads back different");
    }
}

/// Cuts the full compaction of `bytes` (format `driver`, qemu name `qemu_format`) at every
/// write with a crash, checks every recovery and samples the oracle. Returns what the harness
/// did, how many free blocks with data read zeros in recovered images, and the oracle samples.
fn crash_full(
    disk: &Disk,
    driver: &'static dyn FormatDriver,
    qemu_format: &str,
    bytes: Vec<u8>,
) -> (CrashStats, u64, u64) {
    let open_ro = move |bytes: Vec<u8>| {
        driver.open(
            Box::new(MemFile::from_bytes(bytes).read_only()),
            &OpenOptions::read_only(),
        )
    };
    let original = open_ro(bytes.clone()).unwrap();
    let may = MayZero::new(
        vdisk_core::testing::whole_disk(&*original),
        blocks_inside(&disk.free, original.block_size(), original.size()),
    );
    drop(original);
    // The run is not vacuous: it frees blocks of ntfs free space and moves others.
    let mut probe = driver
        .open(
            Box::new(MemFile::from_bytes(bytes.clone())),
            &OpenOptions::read_write(),
        )
        .unwrap();
    let plan = plan_full(&mut *probe).unwrap();
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
    full(&mut *img).unwrap();
    drop(img);
    let stride = (counter.ops() / ORACLE_SAMPLES).max(1);
    let (zeroed, samples, sampled_at) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let mut case = CrashCase::new(
        format!("ntfs {qemu_format} full"),
        bytes,
        move |file| driver.open(file, &OpenOptions::read_write()),
        open_ro,
        full,
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
        if n % stride == 0 && sampled_at.get() != n && samples.get() < ORACLE_SAMPLES {
            files_read_back(disk, qemu_format, bytes, &what);
            samples.set(samples.get() + 1);
            sampled_at.set(n);
        }
    });
    let stats = cut_every_write(&case, vdisk_core::testing::Fault::Crash);
    drop(case);
    (stats, zeroed.get(), samples.get())
}

fn full_compaction_survives_a_crash_at_every_write_with_files_intact(
    driver: &'static dyn FormatDriver,
    qemu_format: &str,
    block: u64,
    min_cuts: u64,
) {
    let disk = build();
    let bytes = image(driver, &disk.bytes, block);
    let (stats, zeroed, samples) = crash_full(&disk, driver, qemu_format, bytes);
    let cuts = stats.cut_points;
    eprintln!(
        "ntfs {qemu_format} full crash: {cuts} cut points ({} recoveries, {} duplicates \
         skipped), {zeroed} free blocks read zeros in recovered images, {samples} read back by \
         ntfscat",
        stats.recoveries, stats.duplicates
    );
    assert!(cuts >= min_cuts, "{qemu_format}: {cuts} cut points");
    assert!(zeroed >= 5, "{qemu_format}: recoveries after freeing");
    assert_eq!(samples, ORACLE_SAMPLES, "{qemu_format}: oracle samples");
}

#[test]
fn full_compaction_of_an_ntfs_vhd_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhd::DRIVER,
        "vpc",
        128 << 10,
        30,
    );
}

#[test]
fn full_compaction_of_an_ntfs_vhdx_survives_a_crash_at_every_write_with_files_intact() {
    full_compaction_survives_a_crash_at_every_write_with_files_intact(
        &vdisk_vhdx::DRIVER,
        "vhdx",
        MIB,
        15,
    );
}
