//! The XFS analyser over a raw volume (`vdisk_fuzz::sparse`); see
//! `vdisk_fuzz::xfs::exercise` for the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = vdisk_fuzz::sparse::decode(data) {
        vdisk_fuzz::xfs::exercise(bytes);
    }
});
