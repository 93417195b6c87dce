//! Host plumbing for the Linux-guest cases: running a file system's tools (a missing one fails
//! naming its Debian package), loop devices and mounts that are undone when dropped (also when
//! the bench fails half-way), a cold page cache, and raw disks turned into dynamic VHDX images
//! by our own driver.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vdisk_core::{CreateSpec, FormatDriver, ImageKind, StdFile, is_zero};

/// Runs `program args` (from Debian package `package`), feeding `stdin`; returns stdout.
pub fn tool(
    program: &str,
    package: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    tool_env(program, package, args, stdin, &[])
}

/// [`tool`] with extra environment variables.
pub fn tool_env(
    program: &str,
    package: &str,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        format!("cannot run {program} (Debian package {package}; the bench needs it): {e}")
    })?;
    if let Some(input) = stdin {
        use std::io::Write;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())
                .map_err(|e| format!("feeding {program}: {e}"))?;
        }
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails naming the package unless every `(program, package)` is on the PATH.
pub fn require(tools: &[(&str, &str)]) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = tools
        .iter()
        .filter(|(p, _)| !std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the Linux-guest bench cases need tools that are missing: {}",
            missing.join(", ")
        ))
    }
}

/// Loop mounts and `losetup` need root.
pub fn require_root() -> Result<(), String> {
    let uid = tool("id", "coreutils", &["-u"], None)?;
    if uid.trim() == "0" {
        Ok(())
    } else {
        Err(
            "the Linux-guest bench cases build guests through loop devices and mounts: run \
             them as root (or leave them out with --only)"
                .into(),
        )
    }
}

/// A loop device over `len` bytes of a file at `offset`, detached when dropped.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path, offset: u64, len: u64) -> Result<Loop, String> {
        let (o, l) = (offset.to_string(), len.to_string());
        let f = file.to_string_lossy();
        let dev = tool(
            "losetup",
            "mount",
            &["-f", "--show", "-o", &o, "--sizelimit", &l, &f],
            None,
        )?;
        Ok(Loop(dev.trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mounted file system, unmounted when dropped (kernel mount, or a FUSE program).
pub struct Mount(pub PathBuf);

impl Mount {
    /// `mount -o opts dev at` (`program` is `mount` or a FUSE mounter such as
    /// `mount.exfat-fuse`).
    pub fn new(
        program: &str,
        package: &str,
        dev: &str,
        at: &Path,
        opts: &str,
    ) -> Result<Mount, String> {
        std::fs::create_dir_all(at).map_err(|e| format!("cannot create {}: {e}", at.display()))?;
        let at_s = at.to_string_lossy();
        tool(program, package, &["-o", opts, dev, &at_s], None)?;
        Ok(Mount(at.to_path_buf()))
    }

    /// Unmounts now, reporting a failure (drop only tries).
    pub fn unmount(self) -> Result<(), String> {
        let at = self.0.to_string_lossy().into_owned();
        std::mem::forget(self);
        tool("umount", "mount", &[&at], None).map(drop)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Starts a run from a cold cache: writes `paths`' dirty pages back, waits, and drops their
/// pages from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)` on each whole file).
pub fn evict(paths: &[&Path]) -> Result<(), String> {
    for p in paths {
        let f = File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        f.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", p.display()))?;
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
            .map_err(|e| format!("cannot evict {} from the page cache: {e}", p.display()))?;
    }
    Ok(())
}

/// Byte ranges of `file` that hold data (`SEEK_DATA`/`SEEK_HOLE`), in order.
pub fn data_ranges(file: &File) -> Result<Vec<Range<u64>>, String> {
    use rustix::fs::{SeekFrom, seek};
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let Ok(start) = seek(file, SeekFrom::Data(at)) else {
            break; // ENXIO: only a hole up to the end
        };
        let end = seek(file, SeekFrom::Hole(start)).map_err(|e| format!("SEEK_HOLE: {e}"))?;
        out.push(start..end);
        at = end;
    }
    Ok(out)
}

/// Writes the raw disk `raw` into a new dynamic VHDX at `image` with `block` bytes per block
/// (logical sectors 512, physical 4096, as WSL's `ext4.vhdx`), with our own driver. Only
/// blocks holding a non-zero byte are written (as `qemu-img convert` does): returns their
/// indexes, the blocks allocated in the image.
pub fn raw_to_vhdx(raw: &Path, image: &Path, block: u64) -> Result<Vec<u64>, String> {
    let e = |e: vdisk_core::Error| format!("{}: {e}", image.display());
    let src = File::open(raw).map_err(|e| format!("cannot open {}: {e}", raw.display()))?;
    let size = src.metadata().map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(image);
    let file = StdFile::create_new(image).map_err(e)?;
    let spec = CreateSpec::new(ImageKind::Dynamic, size).block_size(block);
    let out = vdisk_vhdx::DRIVER
        .create(Box::new(file), &spec)
        .map_err(e)?;
    let mut buf = vec![0u8; usize::try_from(block).map_err(|_| "block size too large")?];
    let mut written = Vec::new();
    let mut last = None;
    for r in data_ranges(&src)? {
        for b in r.start / block..r.end.div_ceil(block) {
            if last.is_some_and(|l| l >= b) {
                continue;
            }
            last = Some(b);
            let at = b * block;
            let n = usize::try_from(block.min(size - at)).unwrap_or(buf.len());
            src.read_exact_at(&mut buf[..n], at)
                .map_err(|e| format!("reading {}: {e}", raw.display()))?;
            if !is_zero(&buf[..n]) {
                out.write_at(&buf[..n], at).map_err(e)?;
                written.push(b);
            }
        }
    }
    out.flush().map_err(e)?;
    Ok(written)
}

/// A raw disk of `size` bytes that holds nothing yet (a sparse file).
pub fn sparse_file(path: &Path, size: u64) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Punches `ranges` out of `file` (the file keeps its length).
pub fn punch(file: &File, ranges: &[Range<u64>]) -> Result<(), String> {
    use rustix::fs::{FallocateFlags, fallocate};
    for r in ranges.iter().filter(|r| r.end > r.start) {
        fallocate(
            file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            r.start,
            r.end - r.start,
        )
        .map_err(|e| format!("cannot punch a hole: {e}"))?;
    }
    Ok(())
}

/// Runs `fstrim` on a mounted file system: the kernel discards every range its allocator
/// holds free, which a loop device turns into holes in its backing file.
pub fn fstrim(mount: &Mount) -> Result<(), String> {
    let at = mount.0.to_string_lossy();
    tool("fstrim", "util-linux", &[&at], None).map(drop)
}
