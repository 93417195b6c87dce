//! Integration tests of vdisk-vdi: one binary, one module per concern.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test images are small and tests run on 64-bit hosts"
)]

mod main {
    mod bad_input;
    mod crash;
    mod differencing;
    mod modification;
    mod prop;
    mod qemu;
    pub mod util;
}
