//! The one module that talks to the operating system beyond `std`: locks, opens that follow
//! no symbolic link, hole punching, in-kernel copies, sparse-file queries and durable
//! flushes. On Unix everything goes through `rustix` (and `nix`), which wrap the system calls
//! safely. Windows lives in `windows`, the only module of the workspace allowed `unsafe`
//! (calls into `windows-sys` with a `// SAFETY:` line each), for what `std` does not offer:
//! the final path of an open handle and the Restart Manager's list of holders.
//!
//! Every platform difference is here: the rest of the crate calls these functions and never
//! looks at `cfg(unix)` or `cfg(windows)` for I/O.

use std::fs::File;
use std::io;

/// Takes the locks that tell other programs the image is in use.
///
/// Two locks, because programs disagree on which kind they check: `flock` (held per open file,
/// used by other `vdisk` processes and many tools) and a whole-file POSIX record lock, which
/// conflicts with the OFD byte-range locks qemu (qemu-nbd, qemu-system, qemu-storage-daemon,
/// qemu-img) takes on images it has open. Exclusive for writers, shared for readers.
/// Returns `Ok(false)` if another holder conflicts.
#[cfg(unix)]
pub(crate) fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    use rustix::fs::{FlockOperation, fcntl_lock, flock};
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    let busy = |e: rustix::io::Errno| {
        e == rustix::io::Errno::WOULDBLOCK
            || e == rustix::io::Errno::ACCESS
            || e == rustix::io::Errno::AGAIN
    };
    match flock(file, op) {
        Ok(()) => {}
        Err(e) if busy(e) => return Ok(false),
        // Some file systems (old NFS, FUSE) do not support flock: fall through to fcntl.
        Err(rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP) => {}
        Err(e) => return Err(e.into()),
    }
    let record_lock = if exclusive {
        fcntl_lock(file, op)
    } else {
        shared_record_lock(file)
    };
    match record_lock {
        Ok(()) if !exclusive && qemu_writer_present(file)? => {
            let _ = flock(file, FlockOperation::Unlock);
            let _ = fcntl_lock(file, FlockOperation::Unlock);
            Ok(false)
        }
        Ok(()) => Ok(true),
        Err(e) if busy(e) => {
            let _ = flock(file, FlockOperation::Unlock);
            Ok(false)
        }
        Err(rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The byte qemu locks (shared, OFD) while it holds write permission on an image: its lock
/// bytes start at 100, one per permission bit, and "write" is bit 1.
#[cfg(target_os = "linux")]
const QEMU_WRITE_PERMISSION_BYTE: i64 = 101;

/// Whether another program holds a lock that shows it is writing the file: qemu's
/// write-permission byte (qemu-system, qemu-nbd, qemu-storage-daemon, qemu-io opened for
/// writing) or a lock a writer holds over the whole file (another vdisk). Readers' shared
/// locks do not conflict with this query, so concurrent readers stay possible.
///
/// A process-associated `F_GETLK` query: it ignores this process's own locks and reports
/// other processes' record locks and every OFD lock. (`nix` rather than `rustix` here: rustix
/// 1.1 panics on the `l_pid` of -1 that the kernel reports for OFD locks.)
#[expect(
    clippy::cast_possible_truncation,
    reason = "F_RDLCK, F_WRLCK, F_UNLCK and SEEK_SET are 0..=2 and fit c_short"
)]
#[cfg(target_os = "linux")]
fn qemu_writer_present(file: &File) -> io::Result<bool> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: QEMU_WRITE_PERMISSION_BYTE,
        l_len: 1,
        l_pid: 0,
    };
    match fcntl(file, FcntlArg::F_GETLK(&mut probe)) {
        Ok(_) => Ok(probe.l_type != libc::F_UNLCK as libc::c_short),
        // File systems without POSIX locks cannot tell: assume no writer, as flock did.
        Err(
            nix::errno::Errno::ENOLCK | nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL,
        ) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A shared record lock over the whole file except qemu's write-permission byte, so that
/// readers never look like writers to each other's [`qemu_writer_present`] query, while a
/// writer opening the file (qemu checks its lock bytes, another vdisk the whole file) still
/// sees a reader.
#[expect(
    clippy::cast_possible_truncation,
    reason = "F_RDLCK, F_WRLCK, F_UNLCK and SEEK_SET are 0..=2 and fit c_short"
)]
#[cfg(target_os = "linux")]
fn shared_record_lock(file: &File) -> Result<(), rustix::io::Errno> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let lock = |start: i64, len: i64| {
        let range = libc::flock {
            l_type: libc::F_RDLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: start,
            l_len: len,
            l_pid: 0,
        };
        fcntl(file, FcntlArg::F_SETLK(&range))
            .map(drop)
            .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))
    };
    lock(0, QEMU_WRITE_PERMISSION_BYTE)?;
    // A length of 0 reaches past any end the file may grow to.
    lock(QEMU_WRITE_PERMISSION_BYTE + 1, 0)
}

/// A shared record lock over the whole file.
#[cfg(all(unix, not(target_os = "linux")))]
fn shared_record_lock(file: &File) -> Result<(), rustix::io::Errno> {
    rustix::fs::fcntl_lock(file, rustix::fs::FlockOperation::NonBlockingLockShared)
}

/// No lock query on other hosts yet.
#[cfg(all(unix, not(target_os = "linux")))]
fn qemu_writer_present(_file: &File) -> io::Result<bool> {
    Ok(false)
}

/// Windows: the lock is the share mode the file was opened with ([`share_for`]); an open that
/// conflicts fails with a sharing violation ([`is_in_use`]) before a lock could be tried.
#[cfg(not(unix))]
pub(crate) fn try_lock(_file: &File, _exclusive: bool) -> io::Result<bool> {
    Ok(true)
}

/// Locks on Unix are taken after the open ([`try_lock`]): nothing to ask of the open itself.
#[cfg(not(windows))]
pub(crate) fn share_for(_options: &mut std::fs::OpenOptions, _writable: bool) {}

/// Whether `err` says another program holds the file (Windows sharing and lock violations).
/// Unix reports a held lock through [`try_lock`], never as an error.
#[cfg(not(windows))]
pub(crate) fn is_in_use(_err: &io::Error) -> bool {
    false
}

/// The programs holding the file at `path`, where the host can tell (Windows: the Restart
/// Manager); empty elsewhere.
#[cfg(not(windows))]
pub(crate) fn holders(_path: &std::path::Path) -> Vec<String> {
    Vec::new()
}

/// The bytes of storage allocated to the file at `path` (`st_blocks` × 512, what `du` shows).
#[cfg(unix)]
pub(crate) fn allocated_size(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.blocks().saturating_mul(512))
}

/// Neither Unix nor Windows: the host does not say.
#[cfg(not(any(unix, windows)))]
pub(crate) fn allocated_size(_path: &std::path::Path) -> Option<u64> {
    None
}

/// Whether the file carries the sparse attribute (Windows); Unix files have no such flag.
#[cfg(not(windows))]
pub(crate) fn has_sparse_flag(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Whether the file carries a read-only attribute of its own (Windows); Unix has only
/// permissions, which the open itself checks.
#[cfg(not(windows))]
pub(crate) fn has_read_only_attribute(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Whether [`punch_hole`] can give host space back here without making the file something
/// the host's hypervisor refuses. Linux: yes (a sparse file is an ordinary file there).
#[cfg(target_os = "linux")]
pub(crate) const PUNCHES_HOLES: bool = true;

/// Not on macOS (not implemented) and never on Windows (`windows::punch_hole`).
#[cfg(not(target_os = "linux"))]
pub(crate) const PUNCHES_HOLES: bool = false;

/// Reads exactly `buf.len()` bytes at `offset` without a seek cursor (`pread`).
#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Writes all of `buf` at `offset` without a seek cursor (`pwrite`).
#[cfg(unix)]
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

/// Makes every completed write and length change of `file` durable. macOS: `F_FULLFSYNC`,
/// because plain `fsync` there only hands the data to the drive, whose cache may still lose
/// it on power failure.
#[cfg(target_os = "macos")]
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    rustix::fs::fcntl_fullfsync(file).map_err(io::Error::from)
}

/// Makes every completed write and length change of `file` durable: `fdatasync` on Unix,
/// `FlushFileBuffers` on Windows (which flushes the metadata, the file length included).
#[cfg(not(target_os = "macos"))]
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Asks `open` not to block: opening a FIFO for reading otherwise waits for a writer, before
/// the caller can see it is not a regular file.
#[cfg(unix)]
pub(crate) fn open_without_blocking(options: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
}

/// Nothing blocks in `open` here.
#[cfg(not(unix))]
pub(crate) fn open_without_blocking(_options: &mut std::fs::OpenOptions) {}

/// Opens `path` read-only if, and only if, it is a regular file, for a look that must never
/// open anything else: `lstat` first (a FIFO, device, socket, folder or symbolic link is not
/// opened at all); then an open that does not follow a symbolic link in the last component
/// (`O_NOFOLLOW`), never blocks (`O_NONBLOCK`: a FIFO swapped in meanwhile would otherwise
/// wait for a writer) and never becomes a controlling terminal (`O_NOCTTY`); then the file
/// opened must be the one `lstat` saw (same device and inode, still a regular file).
/// Anything else fails with [`io::ErrorKind::InvalidInput`]. The blocking flag is cleared
/// again on success.
#[cfg(unix)]
pub(crate) fn open_regular_file(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    let seen = std::fs::symlink_metadata(path)?;
    if !seen.file_type().is_file() {
        return Err(not_regular());
    }
    let flags =
        rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NOCTTY;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            // ELOOP: the name became a symbolic link after the lstat.
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                not_regular()
            } else {
                e
            }
        })?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != seen.dev() || opened.ino() != seen.ino() {
        return Err(not_regular());
    }
    restore_blocking(&file)?;
    Ok(file)
}

/// Opens `path` read-only if it is a regular file (no symbolic-link or FIFO tricks to guard
/// against here beyond the type check).
#[cfg(not(any(unix, windows)))]
pub(crate) fn open_regular_file(path: &std::path::Path) -> io::Result<File> {
    let seen = std::fs::symlink_metadata(path)?;
    if !seen.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    File::open(path)
}

/// Clears the non-blocking flag [`open_without_blocking`] set, once the file is known to be a
/// regular file (where the flag has no effect on Linux, but may elsewhere).
#[cfg(unix)]
pub(crate) fn restore_blocking(file: &File) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

/// Nothing to restore here.
#[cfg(not(unix))]
pub(crate) fn restore_blocking(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Deallocates `len` bytes at `offset` of `file` without changing its size; the range then
/// reads as zeros. `Unsupported` if the host file system cannot punch holes.
#[cfg(target_os = "linux")]
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "punching holes is not supported by this host file system",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Hole punching is only implemented on Linux so far (Windows: see `windows::punch_hole`).
#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "punching holes is not supported on this host",
    ))
}

/// Copies `len` bytes inside one file from `from` to `to` (ranges must not overlap) with
/// `copy_file_range`, so the data never enters user space and reflink-capable file systems
/// can share extents. Returns how many bytes were copied before the kernel declined; the
/// caller copies the rest itself.
#[cfg(target_os = "linux")]
pub(crate) fn copy_in_kernel(file: &File, from: u64, to: u64, len: u64) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = from + done;
        let mut off_out = to + done;
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(file, Some(&mut off_in), file, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            // Cross-device, unsupported file system, old kernel: fall back to user-space copy.
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL,
            ) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` back to the device now,
/// without waiting. A hint for a caller that will `fdatasync` later: the writeback of data it
/// has just written then overlaps with the work it does before that sync, instead of all of
/// it happening inside the sync.
///
/// Linux's `POSIX_FADV_DONTNEED` starts asynchronous writeback of the range's dirty pages and
/// drops only pages that are clean and idle, so what was just written stays cached; no data
/// is lost either way, it only leaves the page cache. Errors are ignored: durability still
/// comes from the caller's sync, which reports any write error.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    use rustix::fs::{Advice, fadvise};
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = fadvise(file, offset, Some(len), Advice::DontNeed);
    }
}

/// Nothing to hint here: the caller's sync writes everything back.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// No in-kernel copy here: the caller copies everything itself.
#[cfg(not(target_os = "linux"))]
pub(crate) fn copy_in_kernel(_file: &File, _from: u64, _to: u64, _len: u64) -> io::Result<u64> {
    Ok(0)
}

/// The first offset at or after `offset` where `file` may hold data (`SEEK_DATA`), or `None`
/// if only a hole lies between `offset` and the end of the file. File systems without sparse
/// support answer `offset` itself (every byte is data), which is always safe.
///
/// `lseek` moves the descriptor's cursor as a side effect; nothing in vdisk reads or writes
/// through the cursor (positional I/O only), so this is harmless and safe between threads.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
pub(crate) fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    use rustix::fs::{SeekFrom, seek};
    match seek(file, SeekFrom::Data(offset)) {
        Ok(at) => Ok(Some(at)),
        // ENXIO: no data at or after `offset` (or `offset` is at or past the end).
        Err(rustix::io::Errno::NXIO) => Ok(None),
        // No SEEK_DATA support: treat everything as data.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            Ok(Some(offset))
        }
        Err(e) => Err(e.into()),
    }
}

/// No sparse-file queries here: every byte may be data.
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
pub(crate) fn next_data(_file: &File, offset: u64) -> io::Result<Option<u64>> {
    Ok(Some(offset))
}

/// The first offset at or after `offset` that starts a hole, the end of the file counting as
/// one (`SEEK_HOLE`); `offset` itself when it is at or past the end. File systems without
/// sparse support answer the end of the file. Same cursor note as [`next_data`].
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
pub(crate) fn next_hole(file: &File, offset: u64) -> io::Result<u64> {
    use rustix::fs::{SeekFrom, seek};
    match seek(file, SeekFrom::Hole(offset)) {
        Ok(at) => Ok(at.max(offset)),
        Err(rustix::io::Errno::NXIO) => Ok(offset),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            Ok(file.metadata()?.len().max(offset))
        }
        Err(e) => Err(e.into()),
    }
}

/// No sparse-file queries here: the file is data up to its end.
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
pub(crate) fn next_hole(file: &File, offset: u64) -> io::Result<u64> {
    Ok(file.metadata()?.len().max(offset))
}

/// Keeps `SIGXFSZ` from killing the process, so a write past the file-size limit (`ulimit -f`)
/// fails with `EFBIG` and is reported like a full disk. The signal is *blocked* rather than
/// ignored: `sigprocmask` is a safe call (changing a disposition is not, and the workspace
/// forbids `unsafe`), and for this signal the kernel behaves the same either way (the write
/// returns `EFBIG`; the blocked signal stays pending, never delivered). Call it first thing in
/// `main`, before any thread starts: threads inherit the mask of the thread that made them.
#[cfg(target_os = "linux")]
pub(crate) fn block_file_size_signal() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGXFSZ);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)
}

/// Not done on this host (no safe binding here); a file-size limit still kills the process.
#[cfg(not(target_os = "linux"))]
pub(crate) fn block_file_size_signal() -> io::Result<()> {
    Ok(())
}

/// Opens the file at `path` (absolute and already resolved: no component should be a
/// symbolic link) for reading, or reading and writing, without following a symbolic link at
/// any component, without blocking (FIFOs, devices) and without taking a terminal as the
/// controlling one.
///
/// Linux: `openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so a link swapped in
/// anywhere along the path after it was resolved fails the open with `ELOOP` and nothing
/// behind it is opened. Where that call is missing (kernels before 5.6, sandboxes that filter
/// it) and on other hosts this is [`open_last_no_follow`]: only the last component is
/// protected, and the caller must check what was opened ([`opened_path`], [`file_id`]).
#[cfg(target_os = "linux")]
pub(crate) fn open_no_follow(path: &std::path::Path, writable: bool) -> io::Result<File> {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};
    let access = if writable {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    match openat2(
        CWD,
        path,
        access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            open_last_no_follow(path, writable)
        }
        Err(e) => Err(e.into()),
    }
}

/// No `openat2` here: the last component is not followed, the caller checks the rest.
#[cfg(not(target_os = "linux"))]
pub(crate) fn open_no_follow(path: &std::path::Path, writable: bool) -> io::Result<File> {
    open_last_no_follow(path, writable)
}

/// Opens `path` without blocking and without following a symbolic link in its last component
/// (`O_NOFOLLOW`; links in earlier components are followed). The portable half of
/// [`open_no_follow`].
pub(crate) fn open_last_no_follow(path: &std::path::Path, writable: bool) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(writable);
    share_for(&mut options, writable);
    #[cfg(windows)]
    windows::open_reparse_point_itself(&mut options);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
        options.custom_flags(flags.bits() as i32);
    }
    options.open(path)
}

/// Whether `err` is the "symbolic link met where none may be followed" error (`ELOOP`).
#[cfg(unix)]
pub(crate) fn is_link_refused(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// No such error here.
#[cfg(not(unix))]
pub(crate) fn is_link_refused(_err: &io::Error) -> bool {
    false
}

/// Where the open file `file` lives now, as the kernel knows it (Linux: the link
/// `/proc/self/fd/N`; macOS: `F_GETPATH`), or `None` where the host cannot tell (no `/proc`).
#[cfg(target_os = "linux")]
pub(crate) fn opened_path(file: &File) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// Where the open file `file` lives now (`F_GETPATH`).
#[cfg(target_os = "macos")]
pub(crate) fn opened_path(file: &File) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let path = rustix::fs::getpath(file).ok()?;
    Some(std::ffi::OsString::from_vec(path.into_bytes()).into())
}

/// The host cannot tell where an open file lives.
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub(crate) fn opened_path(_file: &File) -> Option<std::path::PathBuf> {
    None
}

/// Device and inode number: the identity of a file whatever path reaches it.
#[cfg(unix)]
pub(crate) fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// No stable identity available here.
#[cfg(not(unix))]
pub(crate) fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// `path` as the host compares file names: unchanged on Unix (case-sensitive).
#[cfg(not(windows))]
pub(crate) fn fold_case(path: &std::path::Path) -> std::path::PathBuf {
    path.to_path_buf()
}

/// A Windows absolute path stored in an image as a path on this host: `None` on Unix, where
/// the caller maps it itself (sibling, WSL's `/mnt/<drive>`).
#[cfg(not(windows))]
pub(crate) fn native_windows_path(_text: &str) -> Option<std::path::PathBuf> {
    None
}

#[cfg(windows)]
#[allow(
    unsafe_code,
    reason = "the one module of the workspace that calls windows-sys; each block has a SAFETY line"
)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{
    allocated_size, fold_case, has_read_only_attribute, has_sparse_flag, holders, is_in_use,
    native_windows_path, open_regular_file, opened_path, punch_hole, read_exact_at, share_for,
    write_all_at,
};
