//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as GPT headers and entry arrays use.
//!
//! Written here rather than taken from a crate: it is twelve lines, and the workspace's
//! `crc32c` crate computes the Castagnoli polynomial, which GPT does not use.

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0usize;
    #[allow(clippy::cast_possible_truncation, reason = "i < 256")]
    while i < 256 {
        let mut c = i as u32; // i < 256
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32 of `bytes`.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[usize::from(c.to_le_bytes()[0] ^ b)] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_the_standard() {
        // The catalogue check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
