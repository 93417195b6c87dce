//! Seed volumes made by the file systems' own tools (`mkntfs`, `sfdisk`, `mkfs.*`, `mkswap`),
//! for the targets that fuzz partition tables and file-system analysers. Every tool must be
//! installed (a missing one is an error naming its Debian package): a target without seeds of
//! its own format fuzzes little more than the magic-number check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One seed: its file name and the raw bytes.
type Seed = (String, Vec<u8>);

pub(super) fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vdisk-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `cmd` (from Debian package `package`); its stderr is the error if it fails.
fn run(cmd: &mut Command, package: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?} (package {package}): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Creates (or empties) `path` as `len` zero bytes.
fn blank(path: &Path, len: u64) -> Result<(), String> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Two small files of patterned bytes (5000 and 70 000 bytes) in `dir/src`: a file smaller
/// than a block and one spanning several, so the seeds have allocated data to keep.
fn two_files(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    for (name, len) in [("a", 5000usize), ("b", 70_000)] {
        let data: Vec<u8> = (0..len)
            .map(|i| u8::try_from(i * 7 % 251).unwrap_or(0))
            .collect();
        std::fs::write(src.join(name), data).map_err(|e| e.to_string())?;
    }
    Ok(src)
}

/// Writes a partition table described by `script` (sfdisk's input) on `disk`.
fn sfdisk(disk: &Path, script: &[u8]) -> Result<(), String> {
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sfdisk (package fdisk): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(script).map_err(|e| e.to_string())?;
    }
    if child.wait().is_ok_and(|s| s.success()) {
        Ok(())
    } else {
        Err(format!(
            "sfdisk failed to write {:?}",
            String::from_utf8_lossy(script)
        ))
    }
}

/// Raw disks for `disk_analysis` and `partition_scan`: a 4 MiB NTFS volume (4 KiB clusters),
/// and 8 MiB MBR and GPT disks each holding a 1 KiB-cluster NTFS volume at sector 2048. Made
/// with ntfs-3g and sfdisk (packages ntfs-3g, fdisk).
pub(super) fn disk_seeds() -> Result<Vec<Seed>, String> {
    let dir = tempdir().map_err(|e| format!("seed folder: {e}"))?;
    let vol = dir.join("vol.raw");
    blank(&vol, 4 << 20)?;
    run(
        Command::new("mkntfs")
            .args(["-Q", "-F", "-q", "-c", "4096"])
            .arg(&vol),
        "ntfs-3g",
    )?;
    let whole = read(&vol)?;
    let part = dir.join("part.raw");
    blank(&part, 12288 * 512)?;
    run(
        Command::new("mkntfs")
            .args([
                "-Q", "-F", "-q", "-c", "1024", "-p", "2048", "-H", "0", "-S", "0",
            ])
            .arg(&part),
        "ntfs-3g",
    )?;
    let part_bytes = read(&part)?;
    let mut seeds = vec![("ntfs-4k-whole-disk".to_string(), whole)];
    for (name, script) in [
        (
            "mbr-ntfs-1k",
            &b"label: dos\nstart=2048, size=12288, type=7\n"[..],
        ),
        (
            "gpt-ntfs-1k",
            &b"label: gpt\nstart=2048, size=12288, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"[..],
        ),
    ] {
        let disk = dir.join(format!("{name}.raw"));
        blank(&disk, 8 << 20)?;
        sfdisk(&disk, script)?;
        let mut bytes = read(&disk)?;
        bytes[1 << 20..(1 << 20) + part_bytes.len()].copy_from_slice(&part_bytes);
        seeds.push((name.to_string(), bytes));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}

/// Raw volumes for `ext4_analysis`, made with e2fsprogs (package e2fsprogs) from a folder of
/// two small files: ext4 as WSL formats it (4 KiB blocks, flex_bg, metadata_csum, 64bit),
/// ext4 with 1 KiB blocks and uninitialised groups, ext3 and ext2 (no checksums), bigalloc.
pub(super) fn ext4_seeds() -> Result<Vec<Seed>, String> {
    let dir = tempdir().map_err(|e| format!("seed folder: {e}"))?;
    let src = two_files(&dir)?;
    let kinds: [(&str, u64, &[&str]); 5] = [
        ("ext4-wsl", 8, &["-t", "ext4", "-b", "4096", "-G", "4096"]),
        (
            "ext4-1k-uninit",
            8,
            &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"],
        ),
        ("ext3-1k", 4, &["-t", "ext3", "-b", "1024"]),
        ("ext2-1k", 2, &["-t", "ext2", "-b", "1024"]),
        (
            "ext4-bigalloc",
            8,
            &["-t", "ext4", "-O", "bigalloc", "-C", "16384"],
        ),
    ];
    let mut out = Vec::new();
    for (name, mib, opts) in kinds {
        let vol = dir.join(format!("{name}.raw"));
        blank(&vol, mib << 20)?;
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&src)
                .args(opts)
                .arg(&vol),
            "e2fsprogs",
        )?;
        out.push((name.to_string(), read(&vol)?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// XFS volumes for `xfs_analysis`: 16 MiB, version 5 (4 KiB blocks) and version 4 (1 KiB
/// blocks), made by `mkfs.xfs` (package xfsprogs; the TEST_* variables let it make file
/// systems under 300 MB, as the XFS test suite does).
pub(super) fn xfs_seeds() -> Result<Vec<Seed>, String> {
    let dir = tempdir().map_err(|e| format!("seed folder: {e}"))?;
    let mut seeds = Vec::new();
    for (name, args) in [
        ("xfs-v5-4k", &["-b", "size=4096"][..]),
        ("xfs-v4-1k", &["-m", "crc=0", "-b", "size=1024"][..]),
    ] {
        let vol = dir.join(name);
        blank(&vol, 16 << 20)?;
        run(
            Command::new("mkfs.xfs")
                .env("TEST_DIR", "1")
                .env("TEST_DEV", "1")
                .env("QA_CHECK_FS", "1")
                .args(["-q", "-f"])
                .args(args)
                .arg(&vol),
            "xfsprogs",
        )?;
        seeds.push((name.to_string(), read(&vol)?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}

/// Volumes for `fat_volume`: FAT12 (2 MiB), FAT16 (16 MiB) and FAT32 (40 MiB, 512-byte
/// clusters: the fewest bytes that still count as FAT32) by `mkfs.fat` holding two files
/// copied in by `mcopy` (packages dosfstools, mtools); an 8 MiB exFAT by `mkfs.exfat`
/// (exfatprogs); a 1 MiB swap area by `mkswap` (util-linux).
pub(super) fn fat_family_seeds() -> Result<Vec<Seed>, String> {
    let dir = tempdir().map_err(|e| format!("seed folder: {e}"))?;
    let src = two_files(&dir)?;
    let mut seeds = Vec::new();
    for (name, mib, args) in [
        ("fat12", 2, &["-F", "12"][..]),
        ("fat16", 16, &["-F", "16"][..]),
        ("fat32-512-clusters", 40, &["-F", "32", "-s", "1"][..]),
    ] {
        let vol = dir.join(name);
        blank(&vol, mib << 20)?;
        run(Command::new("mkfs.fat").args(args).arg(&vol), "dosfstools")?;
        run(
            Command::new("mcopy")
                .arg("-i")
                .arg(&vol)
                .arg(src.join("a"))
                .arg(src.join("b"))
                .arg("::/"),
            "mtools",
        )?;
        seeds.push((name.to_string(), read(&vol)?));
    }
    let exfat = dir.join("exfat");
    blank(&exfat, 8 << 20)?;
    run(Command::new("mkfs.exfat").arg(&exfat), "exfatprogs")?;
    seeds.push(("exfat".to_string(), read(&exfat)?));
    let swap = dir.join("swap");
    blank(&swap, 1 << 20)?;
    run(
        Command::new("mkswap").args(["-L", "VSWAP"]).arg(&swap),
        "util-linux",
    )?;
    seeds.push(("swap".to_string(), read(&swap)?));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}

/// Volumes for `btrfs_analysis`: 32 MiB btrfs holding two files, made by `mkfs.btrfs
/// --rootdir` (package btrfs-progs). Below 114 MiB btrfs needs mixed block groups (`-M`): one
/// with the free-space tree (the default), one without.
pub(super) fn btrfs_seeds() -> Result<Vec<Seed>, String> {
    let dir = tempdir().map_err(|e| format!("seed folder: {e}"))?;
    let src = two_files(&dir)?;
    let mut seeds = Vec::new();
    for (name, args) in [
        ("btrfs-mixed", &[][..]),
        (
            "btrfs-mixed-no-free-space-tree",
            &["-R", "^free-space-tree"][..],
        ),
    ] {
        let vol = dir.join(name);
        blank(&vol, 32 << 20)?;
        run(
            Command::new("mkfs.btrfs")
                .args(["-q", "-f", "-M"])
                .args(args)
                .arg("--rootdir")
                .arg(&src)
                .arg(&vol),
            "btrfs-progs",
        )?;
        seeds.push((name.to_string(), read(&vol)?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}
