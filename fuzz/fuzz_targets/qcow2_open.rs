//! qcow2: open read-only, read, check; see `vdisk_fuzz::exercise` for the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_fuzz::exercise(&vdisk_qcow2::DRIVER, data.to_vec());
});
