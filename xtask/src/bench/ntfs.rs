//! Bench case (d)'s volume: NTFS made over random bytes, then filled with random files, all
//! with ntfs-3g's tools on a plain file (no mount, no root).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::shared::fill_random;

/// Size of each file copied into the volume.
const FILE_LEN: u64 = 64 << 20;

/// Makes a raw NTFS volume of `size` bytes at `raw` whose free space holds garbage, with
/// `files` bytes of random files in it. Scratch files go to `work`.
pub fn make_volume(raw: &Path, size: u64, files: u64, work: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(raw);
    write_random(raw, size, 0x6e74_6673)?;
    // -Q: quick format (no zeroing, so the garbage stays); -F: a file, not a device.
    run("mkntfs", &["-Q", "-F", "-q", "-L", "bench"], raw, &[])?;
    let scratch = work.join("ntfs-file.bin");
    let count = files.div_ceil(FILE_LEN);
    for i in 0..count {
        let len = FILE_LEN.min(files - i * FILE_LEN);
        write_random(&scratch, len, 1000 + i)?;
        let dest = format!("/file{i:03}.bin");
        let scratch_arg = scratch.to_string_lossy().into_owned();
        run(
            "ntfscp",
            &["-q"],
            raw,
            &[scratch_arg.as_str(), dest.as_str()],
        )?;
    }
    let _ = std::fs::remove_file(&scratch);
    Ok(())
}

/// Writes `len` deterministic random bytes to a new file at `path`.
pub(super) fn write_random(path: &Path, len: u64, seed: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = File::create(path).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).map_or(buf.len(), |r| r.min(buf.len()));
        fill_random(&mut buf[..n], seed.wrapping_mul(1 << 32) + done);
        f.write_all(&buf[..n]).map_err(err)?;
        done += n as u64;
    }
    f.sync_all().map_err(err)
}

/// The bytes [`write_random`] writes for `len` and `seed`.
pub(super) fn random_bytes(len: u64, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(len).unwrap_or(0)];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        fill_random(chunk, seed.wrapping_mul(1 << 32) + ((i as u64) << 20));
    }
    out
}

/// Checks a compacted case (d) image the way a user would: ntfs-3g reads every file copied
/// in by [`make_volume`] back byte for byte (file-system-aware modes may zero free clusters,
/// so a whole-disk comparison would not apply). `format` is qemu's name for the image format.
pub fn verify_files(image: &Path, format: &str, files: u64, work: &Path) -> Result<(), String> {
    let raw = work.join("ntfs-verify.raw");
    let _ = std::fs::remove_file(&raw);
    let out = Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .output()
        .map_err(|e| format!("cannot run qemu-img convert: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img convert of {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let count = files.div_ceil(FILE_LEN);
    let result = (0..count).try_for_each(|i| {
        let len = FILE_LEN.min(files - i * FILE_LEN);
        let name = format!("/file{i:03}.bin");
        let out = Command::new("ntfscat")
            .arg(&raw)
            .arg(&name)
            .output()
            .map_err(|e| format!("cannot run ntfscat (Debian package ntfs-3g): {e}"))?;
        if !out.status.success() || out.stdout != random_bytes(len, 1000 + i) {
            return Err(format!(
                "CONTENT MISMATCH: ntfscat {name} from the compacted {} does not return the \
                 file copied in ({} of {len} bytes read; {})",
                image.display(),
                out.stdout.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&raw);
    result
}

/// Runs an ntfs-3g tool on the volume; fails (never skips) when it is missing or fails.
fn run(tool: &str, opts: &[&str], raw: &Path, rest: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(opts)
        .arg(raw)
        .args(rest)
        .output()
        .map_err(|e| format!("cannot run {tool} (Debian package ntfs-3g) for bench case d: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
