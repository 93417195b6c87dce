//! The ceiling of file-system-aware reclaim on a built guest ([`ceiling`]), from the file
//! system's own map, never from vdisk's analysers: the kernel's own allocator (`fstrim` on a
//! loop mount, which the loop device turns into holes punched in the raw file) for ext4, XFS
//! and btrfs; the FAT and the exFAT allocation bitmap read where their boot sectors (and
//! `dump.exfat`) place them; LVM's own segment report for the extents no LV uses.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::guests::{Built, Guest, mount};
use super::host::{Loop, data_ranges, fstrim, punch, tool};

/// The ceiling of file-system-aware reclaim: bytes of the image's allocated `block`-sized
/// blocks (indexes in `allocated`) that lie entirely in space the file system's own map (and
/// LVM's) calls free. Works on `built.raw`, which it changes (the free ranges are punched out
/// of it); call it after the image is made. Returns (ceiling bytes, bytes of allocated blocks
/// that held a never-written hole before the punching and so may be over-counted).
pub fn ceiling(
    built: &Built,
    allocated: &[u64],
    block: u64,
    work: &Path,
) -> Result<(u64, u64), String> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(&built.raw)
        .map_err(|e| format!("cannot open {}: {e}", built.raw.display()))?;
    let before = data_ranges(&file)?;
    let holed = |b: u64, ranges: &[Range<u64>]| {
        let (a, z) = (b * block, (b + 1) * block);
        let covered: u64 = ranges
            .iter()
            .map(|r| r.end.min(z).saturating_sub(r.start.max(a)))
            .sum();
        covered < z - a
    };
    punch(&file, &built.unused)?;
    let vol = &built.volume;
    match built.guest {
        Guest::Fat32Mbr => punch(&file, &shift(fat32_free(&file, vol.start)?, vol.start))?,
        Guest::ExfatGpt => {
            let free = exfat_free(&file, &built.raw, vol.clone())?;
            punch(&file, &shift(free, vol.start))?;
        }
        g => {
            let dev = Loop::attach(&built.raw, vol.start, vol.end - vol.start)?;
            let m = mount(g, &dev.0, &work.join("guest-mnt"))?;
            fstrim(&m)?;
            m.unmount()?;
            drop(dev);
        }
    }
    file.sync_all().map_err(|e| e.to_string())?;
    let after = data_ranges(&file)?;
    let (mut ceiling, mut unsure) = (0, 0);
    for &b in allocated {
        let empty = !after
            .iter()
            .any(|r| r.start < (b + 1) * block && r.end > b * block);
        if empty {
            ceiling += block;
            if holed(b, &before) {
                unsure += block;
            }
        }
    }
    Ok((ceiling, unsure))
}

fn shift(v: Vec<Range<u64>>, by: u64) -> Vec<Range<u64>> {
    v.into_iter().map(|r| r.start + by..r.end + by).collect()
}

/// Little-endian field of `len` bytes at `at` of `b`.
fn le(b: &[u8], at: usize, len: usize) -> u64 {
    b[at..at + len]
        .iter()
        .rev()
        .fold(0, |v, &x| (v << 8) | u64::from(x))
}

/// Free clusters of the FAT32 volume at `base` of `disk` (byte ranges of the volume), read
/// from the first FAT at the layout its boot sector gives.
fn fat32_free(disk: &File, base: u64) -> Result<Vec<Range<u64>>, String> {
    let mut b = [0u8; 512];
    disk.read_exact_at(&mut b, base)
        .map_err(|e| e.to_string())?;
    let (bps, spc) = (le(&b, 11, 2), le(&b, 13, 1));
    let (reserved, fats, fat_sectors, total) =
        (le(&b, 14, 2), le(&b, 16, 1), le(&b, 36, 4), le(&b, 32, 4));
    let data = (reserved + fats * fat_sectors) * bps;
    let clusters = (total - reserved - fats * fat_sectors) / spc;
    let mut fat = vec![0u8; usize::try_from((clusters + 2) * 4).map_err(|e| e.to_string())?];
    disk.read_exact_at(&mut fat, base + reserved * bps)
        .map_err(|e| e.to_string())?;
    let cluster = spc * bps;
    let mut free: Vec<Range<u64>> = Vec::new();
    for n in 2..clusters + 2 {
        let i = usize::try_from(4 * n).unwrap_or(usize::MAX);
        if le(&fat, i, 4) & 0x0FFF_FFFF == 0 {
            push(
                &mut free,
                data + (n - 2) * cluster..data + (n - 1) * cluster,
            );
        }
    }
    Ok(free)
}

fn push(v: &mut Vec<Range<u64>>, r: Range<u64>) {
    match v.last_mut() {
        Some(l) if l.end == r.start => l.end = r.end,
        _ => v.push(r),
    }
}

/// Free clusters of the exFAT volume `vol` of `disk`, from its allocation bitmap where
/// `dump.exfat` says it lies (byte ranges of the volume).
fn exfat_free(disk: &File, raw: &Path, vol: Range<u64>) -> Result<Vec<Range<u64>>, String> {
    let dev = Loop::attach(raw, vol.start, vol.end - vol.start)?;
    let dump = tool("dump.exfat", "exfatprogs", &[&dev.0], None)?;
    drop(dev);
    let get = |key: &str| -> Result<u64, String> {
        dump.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in dump.exfat's output:\n{dump}"))
    };
    let heap = get("Cluster Heap Offset")? * 512;
    let clusters = get("Cluster Count")?;
    let cluster = get("Cluster size")?;
    let bitmap_at = heap + (get("Bitmap start cluster")? - 2) * cluster;
    let mut bitmap = vec![0u8; usize::try_from(clusters.div_ceil(8)).map_err(|e| e.to_string())?];
    disk.read_exact_at(&mut bitmap, vol.start + bitmap_at)
        .map_err(|e| e.to_string())?;
    let mut free = Vec::new();
    let mut count = 0;
    for i in 0..clusters {
        if bitmap[usize::try_from(i / 8).unwrap_or(0)] & (1 << (i % 8)) == 0 {
            count += 1;
            push(&mut free, heap + i * cluster..heap + (i + 1) * cluster);
        }
    }
    let expected = get("Free Clusters")?;
    if count != expected {
        return Err(format!(
            "exFAT bitmap read by the bench: {count} free clusters, dump.exfat: {expected}"
        ));
    }
    Ok(free)
}
