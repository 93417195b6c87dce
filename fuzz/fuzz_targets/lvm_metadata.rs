//! The LVM2 text-format parser and the metadata-to-extents path: the input's first 8 bytes
//! are a physical volume size, the rest a metadata text; see `vdisk_fuzz::lvm::exercise`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdisk_fuzz::lvm::exercise(data);
});
