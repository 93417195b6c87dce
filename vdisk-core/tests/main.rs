//! Integration tests of vdisk-core against tools nobody on the team wrote.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test disks are small and tests run on 64-bit hosts"
)]

mod main {
    mod partition;
}
