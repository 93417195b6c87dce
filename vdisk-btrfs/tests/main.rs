//! Integration tests of vdisk-btrfs: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod damaged;
    pub mod dump_tree;
    mod oracle;
    mod trust;
    pub mod util;
}
