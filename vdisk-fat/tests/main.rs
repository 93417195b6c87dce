//! Integration tests of vdisk-fat: one binary, one module per concern, over FAT volumes built
//! in memory (`image`).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod damaged;
    mod free_space;
    pub mod image;
    mod trust;
}
