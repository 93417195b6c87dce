//! LVM's own checksum: the reflected CRC-32 of polynomial 0xEDB88320 (as in zlib), but started
//! from [`INITIAL_CRC`] instead of all ones and without the final inversion. The label, the
//! metadata area header and the metadata text each carry one.

/// The value LVM starts every checksum from.
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

/// The byte-wise lookup table of the reflected polynomial.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation, reason = "i < 256")]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Continues the checksum `crc` over `data` (start from [`INITIAL_CRC`]).
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

/// The checksum of `data`.
pub fn crc(data: &[u8]) -> u32 {
    update(INITIAL_CRC, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_matches_a_label_written_by_pvcreate() {
        // The label sector pvcreate (LVM 2.03.16) wrote on a 64 MiB device; its header
        // stored 0xde934abd for bytes 20..512.
        let mut s = [0u8; 512];
        s[20..24].copy_from_slice(&32u32.to_le_bytes()); // pv header offset
        s[24..32].copy_from_slice(b"LVM2 001");
        s[32..64].copy_from_slice(b"7ieZhEtv3RkLALSGua24jM19vhgBMTUK");
        s[64..72].copy_from_slice(&(64u64 << 20).to_le_bytes()); // device size
        s[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes()); // data area at 1 MiB
        s[104..112].copy_from_slice(&4096u64.to_le_bytes()); // metadata area at 4 KiB
        s[112..120].copy_from_slice(&1_044_480u64.to_le_bytes()); // of 1020 KiB
        s[136..140].copy_from_slice(&2u32.to_le_bytes()); // header extension version 2
        s[140..144].copy_from_slice(&1u32.to_le_bytes()); // in use
        assert_eq!(crc(&s[20..]), 0xde93_4abd);
        // Split anywhere, the running checksum is the same.
        assert_eq!(update(crc(&s[20..100]), &s[100..]), 0xde93_4abd);
    }
}
