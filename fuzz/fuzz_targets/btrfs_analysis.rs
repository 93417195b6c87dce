//! The btrfs analyser over a raw volume: the input is a sparse raw volume
//! (`vdisk_fuzz::sparse`); see `vdisk_fuzz::btrfs::exercise` for the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = vdisk_fuzz::sparse::decode(data) {
        vdisk_fuzz::btrfs::exercise(bytes);
    }
});
