//! Who holds a file that is in use, where the system can tell: on Linux, the processes with
//! a lock on it (`/proc/locks`) or, for locks that do not name their process (qemu's open
//! file description locks), the processes that have it open (`/proc/*/fd`); each named by
//! `/proc/<pid>/comm`. Only read, for the message: the lock itself decides what is in use.

use std::path::Path;

/// "held by qemu-io (pid 4242)", or `None` when the holder cannot be named.
pub fn describe(path: &Path) -> Option<String> {
    let holders = holders(path);
    if holders.is_empty() {
        return None;
    }
    let named: Vec<String> = holders
        .iter()
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect();
    Some(format!("held by {}", named.join(", ")))
}

#[cfg(target_os = "linux")]
fn holders(path: &Path) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let me = std::process::id();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let (mut pids, anonymous) = lockers(&locks, dev, ino);
    if anonymous || pids.is_empty() {
        pids.extend(openers(dev, ino));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|&p| p != me);
    pids.into_iter()
        .map(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "a process".to_string());
            (pid, name)
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn holders(_path: &Path) -> Vec<(u32, String)> {
    Vec::new()
}

/// The pids `/proc/locks` names for locks on (`dev`, `ino`), and whether a lock there names
/// no process (pid -1: an open file description lock).
///
/// Lines look like `1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF`, waiters with `->`
/// after the number; the device is `major:minor` in hex.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn lockers(text: &str, dev: u64, ino: u64) -> (Vec<u32>, bool) {
    let (major, minor) = split_dev(dev);
    let mut pids = Vec::new();
    let mut anonymous = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
        let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(ma), Some(mi), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let same = u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino);
        if !same {
            continue;
        }
        match pid.parse::<i64>() {
            Ok(p) if p > 0 => pids.extend(u32::try_from(p).ok()),
            _ => anonymous = true,
        }
    }
    (pids, anonymous)
}

/// Linux's `dev_t` split into major and minor (glibc's `gnu_dev_major`/`gnu_dev_minor`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The processes with a descriptor open on (`dev`, `ino`).
#[cfg(target_os = "linux")]
fn openers(dev: u64, ino: u64) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let opens = fds.filter_map(Result::ok).any(|fd| {
            // The magic link leads to the open file itself, wherever it is now.
            std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        });
        if opens {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_give_the_lockers_of_one_file_and_flag_anonymous_locks() {
        // dev 8:1 as std encodes it; inode 1234.
        let dev = (8 << 8) | 1;
        let text = "\
1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 77 08:01:9999 0 EOF
2: -> FLOCK  ADVISORY  WRITE 78 08:01:1234 0 EOF
3: OFDLCK ADVISORY  READ  -1 08:01:1234 100 100
4: POSIX  ADVISORY  WRITE 55 fd:00:1234 0 EOF
";
        let (pids, anonymous) = lockers(text, dev, 1234);
        assert_eq!(pids, [4242, 78]);
        assert!(anonymous);
        let (pids, anonymous) = lockers(text, dev, 9999);
        assert_eq!(pids, [77]);
        assert!(!anonymous);
    }

    #[test]
    fn large_device_numbers_split_like_glibc() {
        // major 259, minor 65537 (nvme partitions and device-mapper reach these).
        let (major, minor): (u64, u64) = (259, 65537);
        let dev = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!(split_dev(dev), (259, 65537));
    }
}
