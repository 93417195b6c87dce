//! Integration tests of vdisk-vhd: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod bad_input;
    mod cancel;
    pub mod chain_util;
    mod compaction;
    mod crash;
    mod crash_modes;
    mod diff_crash;
    mod differencing;
    mod fixtures;
    mod holes;
    mod parse;
    mod qemu;
    mod retrim;
    mod roundtrip;
    pub mod util;
}
