//! VHDX: the input is a sparse image (`vdisk_fuzz::sparse`), so mutations land on the few
//! KiB of structures inside a file of several MiB; see `vdisk_fuzz::exercise` for the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = vdisk_fuzz::sparse::decode(data) {
        vdisk_fuzz::exercise(&vdisk_vhdx::DRIVER, bytes);
    }
});
