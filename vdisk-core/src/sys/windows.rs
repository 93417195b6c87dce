//! Windows: share modes are the lock, positional I/O through `std`, never a sparse file, and
//! the two questions `std` cannot answer: where an open handle leads
//! (`GetFinalPathNameByHandleW`) and who holds a file (the Restart Manager).
//!
//! `windows-sys` is the binding: Microsoft's own, generated from the Windows metadata, with no
//! wrapper logic of its own to trust, and already in the lock file (through `ctrlc`,
//! `tempfile` and `indicatif`). Every call into it is an `unsafe` block below with a
//! `// SAFETY:` line; this is the only module of the workspace where `unsafe` is allowed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Foundation::{
    ERROR_LOCK_VIOLATION, ERROR_MORE_DATA, ERROR_SHARING_VIOLATION, ERROR_SUCCESS, GetLastError,
    HANDLE, NO_ERROR,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_NAME_NORMALIZED, FILE_SHARE_READ, GetCompressedFileSizeW,
    GetFinalPathNameByHandleW, INVALID_FILE_SIZE, VOLUME_NAME_DOS,
};
use windows_sys::Win32::System::RestartManager::{
    CCH_RM_SESSION_KEY, RM_PROCESS_INFO, RmEndSession, RmGetList, RmRegisterResources,
    RmStartSession,
};

/// The share mode is the lock on Windows, checked by the kernel at open against every other
/// open of the file. A writer shares nothing: another program that has the file open (a VM
/// that attached it, WSL, Docker Desktop, a second vdisk) makes the open fail with a sharing
/// violation, and nobody can open it while vdisk compacts it. A reader shares reading only,
/// so it fails while a writer has the file open and keeps writers out while it reads: the
/// same contract as the Unix exclusive and shared locks.
pub(crate) fn share_for(options: &mut OpenOptions, writable: bool) {
    options.share_mode(if writable { 0 } else { FILE_SHARE_READ });
}

/// Opens a reparse point (symbolic link, junction) itself instead of what it leads to: the
/// Windows `O_NOFOLLOW` for the last component; the caller then sees it is not a regular file.
pub(crate) fn open_reparse_point_itself(options: &mut OpenOptions) {
    options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
}

/// Whether `err` is a sharing violation (an open that conflicts with another program's share
/// mode) or a lock violation (a read or write into a range another program locked).
pub(crate) fn is_in_use(err: &io::Error) -> bool {
    err.raw_os_error()
        .and_then(|c| u32::try_from(c).ok())
        .is_some_and(|c| c == ERROR_SHARING_VIOLATION || c == ERROR_LOCK_VIOLATION)
}

/// Whether the file carries `FILE_ATTRIBUTE_SPARSE_FILE` (WSL's sparse mode sets it; Windows
/// then refuses to attach the disk).
pub(crate) fn has_sparse_flag(meta: &std::fs::Metadata) -> bool {
    meta.file_attributes() & FILE_ATTRIBUTE_SPARSE_FILE != 0
}

/// The bytes of disk the file at `path` takes (`GetCompressedFileSizeW`): its length for an
/// ordinary file, less for a sparse or compressed one; `None` if Windows cannot say.
pub(crate) fn allocated_size(path: &Path) -> Option<u64> {
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut high = 0u32;
    // SAFETY: `wide` is a NUL-terminated UTF-16 string alive for the call; `high` is valid
    // for a write of one u32.
    let low = unsafe { GetCompressedFileSizeW(wide.as_ptr(), &mut high) };
    // INVALID_FILE_SIZE is also a valid low half: only the thread's last error tells.
    // SAFETY: reads the calling thread's last-error value; no pointers involved.
    if low == INVALID_FILE_SIZE && unsafe { GetLastError() } != NO_ERROR {
        return None;
    }
    Some(u64::from(high) << 32 | u64::from(low))
}

/// Whether the file has `FILE_ATTRIBUTE_READONLY`. Windows already refuses to open such a
/// file for writing (access denied); the check after the open makes that hold for every
/// account that could open it anyway (Wine running as root maps the attribute to permission
/// bits root ignores), so "read-only" is exit 6 whoever runs vdisk.
pub(crate) fn has_read_only_attribute(meta: &std::fs::Metadata) -> bool {
    meta.file_attributes() & FILE_ATTRIBUTE_READONLY != 0
}

/// Never punches: freeing a range inside a file needs the sparse attribute
/// (`FSCTL_SET_SPARSE`, then `FSCTL_SET_ZERO_DATA`), and Windows refuses to attach a VHD or
/// VHDX whose file is sparse. Space is given back by moving blocks and truncating instead.
pub(crate) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "vdisk does not punch holes on windows: it would make the file sparse, and windows \
         refuses to attach a sparse vhd or vhdx",
    ))
}

/// Opens `path` read-only if, and only if, it is a regular file: not a folder, device or
/// reparse point (symbolic link, junction), checked before and after the open; the open
/// itself does not follow a reparse point in the last component.
pub(crate) fn open_regular_file(path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    let seen = std::fs::symlink_metadata(path)?;
    if !seen.file_type().is_file() {
        return Err(not_regular());
    }
    let mut options = OpenOptions::new();
    options.read(true);
    share_for(&mut options, false);
    open_reparse_point_itself(&mut options);
    let file = options.open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(not_regular());
    }
    Ok(file)
}

/// Reads exactly `buf.len()` bytes at `offset`. `seek_read` is positional (`ReadFile` with an
/// offset); it also moves the handle's cursor, which nothing in vdisk uses.
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ));
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset` (`WriteFile` with an offset, see [`read_exact_at`]).
pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the open file lives now, in the form `std::fs::canonicalize` gives
/// (`\\?\C:\dir\file` or `\\?\UNC\server\share\file`): both come from
/// `GetFinalPathNameByHandleW`, so a path the caller canonicalised compares equal.
pub(crate) fn opened_path(file: &File) -> Option<PathBuf> {
    let handle = file.as_raw_handle() as HANDLE;
    let mut buf = vec![0u16; 512];
    for _ in 0..3 {
        let len = u32::try_from(buf.len()).ok()?;
        // SAFETY: `handle` is the open handle `file` owns for the whole call; `buf` is valid
        // for writes of `len` UTF-16 units, and the call writes at most that many.
        let n = unsafe {
            GetFinalPathNameByHandleW(
                handle,
                buf.as_mut_ptr(),
                len,
                FILE_NAME_NORMALIZED | VOLUME_NAME_DOS,
            )
        };
        let n = usize::try_from(n).ok()?;
        if n == 0 {
            return None;
        }
        if n < buf.len() {
            buf.truncate(n);
            return Some(std::ffi::OsString::from_wide(&buf).into());
        }
        // Too small: `n` is the size needed, terminating NUL included (bounded by the API's
        // own limit of 32767 units).
        buf.resize(n.min(32_768), 0);
    }
    None
}

/// The programs that hold the file at `path`, as the Restart Manager names them
/// (`"Vmmem (pid 1234)"`), for the "in use" message. Empty when it cannot tell (no session,
/// a service that hides its process, or a host without the API, such as Wine's stub).
pub(crate) fn holders(path: &Path) -> Vec<String> {
    let Ok(path) = std::path::absolute(path) else {
        return Vec::new();
    };
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut session = 0u32;
    let mut key = [0u16; CCH_RM_SESSION_KEY as usize + 1];
    // SAFETY: `session` is valid for a write; `key` has room for the CCH_RM_SESSION_KEY
    // characters plus the NUL the call writes.
    if unsafe { RmStartSession(&mut session, 0, key.as_mut_ptr()) } != ERROR_SUCCESS {
        return Vec::new();
    }
    let names = [wide.as_ptr()];
    let mut out = Vec::new();
    // SAFETY: `names` holds one pointer to a NUL-terminated UTF-16 string (`wide`), both alive
    // for the call; no applications or services are passed (null with count 0).
    let registered = unsafe {
        RmRegisterResources(
            session,
            1,
            names.as_ptr(),
            0,
            std::ptr::null(),
            0,
            std::ptr::null(),
        )
    };
    if registered == ERROR_SUCCESS {
        let mut infos = vec![RM_PROCESS_INFO::default(); 8];
        for _ in 0..3 {
            let mut needed = 0u32;
            let mut reasons = 0u32;
            let Ok(mut count) = u32::try_from(infos.len()) else {
                break;
            };
            // SAFETY: `infos` is valid for writes of `count` elements; `needed`, `count` and
            // `reasons` are valid for writes; `session` was started above.
            let rc = unsafe {
                RmGetList(
                    session,
                    &mut needed,
                    &mut count,
                    infos.as_mut_ptr(),
                    &mut reasons,
                )
            };
            if rc == ERROR_MORE_DATA {
                // Bounded: a file held by more than 256 processes is named by its first 256.
                infos.resize((needed as usize).clamp(1, 256), RM_PROCESS_INFO::default());
                continue;
            }
            if rc == ERROR_SUCCESS {
                let count = (count as usize).min(infos.len());
                out.extend(infos[..count].iter().map(describe_process));
            }
            break;
        }
    }
    // SAFETY: ends the session started above; nothing uses it afterwards.
    unsafe { RmEndSession(session) };
    out
}

/// `"name (pid N)"` for one Restart Manager entry.
fn describe_process(info: &RM_PROCESS_INFO) -> String {
    let name = &info.strAppName;
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let name = String::from_utf16_lossy(&name[..end]);
    let pid = info.Process.dwProcessId;
    if name.is_empty() {
        format!("process {pid}")
    } else {
        format!("{name} (pid {pid})")
    }
}

/// `path` as Windows compares file names: case-insensitively (NTFS's default; a folder made
/// case-sensitive with `fsutil` is rare and never where disk images live). Lowercased text.
pub(crate) fn fold_case(path: &Path) -> PathBuf {
    PathBuf::from(path.to_string_lossy().to_lowercase())
}

/// A Windows path stored in a parent locator, as a path to open here: drive-letter paths
/// (`C:\VMs\base.vhdx`, `C:/VMs/base.vhdx`), UNC shares (`\\server\share\base.vhdx`) and
/// verbatim or volume paths (`\\?\C:\...`, `\\?\Volume{GUID}\...`) are absolute Windows paths
/// already; anything else (relative, or a rooted path without a drive) is not used.
pub(crate) fn native_windows_path(text: &str) -> Option<PathBuf> {
    let path = Path::new(text);
    let b = text.as_bytes();
    let drive = b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    let unc = text.starts_with("\\\\") || text.starts_with("//");
    (path.is_absolute() && (drive || unc)).then(|| path.to_path_buf())
}
