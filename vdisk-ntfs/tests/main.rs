//! Integration tests of vdisk-ntfs: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod damaged;
    mod oracle;
    mod trust;
    pub mod util;
}
