//! Integration tests of vdisk-vhdx: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod bad_input;
    mod compact;
    mod compact_cases;
    mod compact_prop;
    mod crash;
    mod crash_modes;
    pub mod create;
    pub mod diff;
    pub mod diff_cases;
    mod diff_crash;
    mod diff_prop;
    mod fixtures;
    mod fuzz;
    mod holes;
    mod qemu;
    pub mod util;
    mod write;
}
