//! The one module that talks to the operating system beyond `std`: locks, hole punching,
//! in-kernel copies and sparse-file queries. Everything goes through `rustix`, which wraps the
//! system calls safely, so the workspace keeps `unsafe_code = "forbid"`.

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
#[cfg(unix)]
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

/// Locks are advisory and not available here: report success.
#[cfg(not(unix))]
pub(crate) fn try_lock(_file: &File, _exclusive: bool) -> io::Result<bool> {
    Ok(true)
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

/// Hole punching is only implemented on Linux so far.
#[cfg(not(target_os = "linux"))]
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
