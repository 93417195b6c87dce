//! Integration tests of vdisk-ext4 against real file systems made by e2fsprogs: one binary,
//! one module per concern.
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
