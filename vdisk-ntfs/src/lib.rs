//! File-system-aware free space: partition tables and NTFS. Filled by the NTFS issue.
#![forbid(unsafe_code)]
