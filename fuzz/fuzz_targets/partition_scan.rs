//! Partition tables (MBR/EBR, GPT) alone, with overflow checks: the input is a sparse raw disk
//! (`vdisk_fuzz::sparse`); see `vdisk_fuzz::analysis::partitions` for the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = vdisk_fuzz::sparse::decode(data) {
        vdisk_fuzz::analysis::partitions(bytes);
    }
});
