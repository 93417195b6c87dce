//! Integration tests of vdisk-qcow2: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod bad_input;
    mod chain;
    mod check;
    mod compact;
    pub mod compact_util;
    mod crash;
    mod create;
    mod mutation;
    mod prop;
    mod qemu;
    mod space;
    pub mod util;
}
