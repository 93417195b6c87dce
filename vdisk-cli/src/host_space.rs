//! The host storage a file takes, as `du` counts it: its allocated blocks, not its length. A
//! retrim keeps the length and gives space back by punching holes, so only this shows what the
//! host really gave back (a second run over holes gives back nothing, and says so).

use std::path::Path;

/// Allocated bytes of a file before and after a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpace {
    /// Before the compaction started.
    pub before: u64,
    /// After it ended.
    pub after: u64,
}

impl HostSpace {
    /// Bytes the host gave back (zero if the file takes more now).
    pub fn given_back(self) -> u64 {
        self.before.saturating_sub(self.after)
    }
}

/// The bytes of host storage allocated to `path` ([`vdisk_core::allocated_size`]: `st_blocks`
/// × 512 on Unix, what `du` shows; `GetCompressedFileSizeW` on Windows, where vdisk never
/// punches, so only a file that was sparse already takes less than its length), or `None` for
/// a folder or a file that cannot be examined.
pub fn allocated(path: &Path) -> Option<u64> {
    vdisk_core::allocated_size(path)
}

/// Both measurements, if the host gave both (`before` measured by the caller before it started).
pub fn measured(path: &Path, before: Option<u64>) -> Option<HostSpace> {
    Some(HostSpace {
        before: before?,
        after: allocated(path)?,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_takes_less_than_its_length_and_writing_allocates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        let empty = allocated(&path).unwrap();
        assert!(empty < 1 << 20, "a hole takes no space: {empty}");
        std::fs::write(&path, vec![1u8; 4 << 20]).unwrap();
        let full = allocated(&path).unwrap();
        assert!(full >= 4 << 20, "written data takes space: {full}");
        assert_eq!(allocated(dir.path()), None, "a folder is not measured");
    }
}
