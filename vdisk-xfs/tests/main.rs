//! Integration tests of vdisk-xfs over file systems made by xfsprogs: one binary, one module
//! per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod oracle;
    mod trust;
    pub mod util;
}
