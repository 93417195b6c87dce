//! The two checksums of ext4 metadata.
//!
//! - crc32c (`metadata_csum`) as the kernel's `ext4_chksum`: the raw Castagnoli CRC register,
//!   with no inversion on the way in or out, so a checksum can be continued over several
//!   pieces. The `crc32c` crate computes the standard CRC (inverted in and out), hence the
//!   inversions here.
//! - crc16 (`uninit_bg` = `gdt_csum`, group descriptors only): the kernel's `crc16`, the
//!   reflected 0x8005 polynomial (0xA001), register seeded with `!0`, no final inversion.

/// The raw crc32c register after `data`, starting from `seed`.
pub(crate) fn ext4(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The crc16 register after `data`, starting from `seed`.
pub(crate) fn crc16(seed: u16, data: &[u8]) -> u16 {
    let mut crc = seed;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksums_match_their_published_check_values() {
        // CRC-32C check value of "123456789" (inverted in and out) is 0xE3069283.
        assert_eq!(!ext4(!0, b"123456789"), 0xE306_9283);
        // Continuing over pieces equals one pass.
        assert_eq!(ext4(ext4(7, b"1234"), b"56789"), ext4(7, b"123456789"));
        // CRC-16/MODBUS (0xA001, seed 0xFFFF, no final xor) check value is 0x4B37.
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
    }
}
