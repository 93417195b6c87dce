//! CRC32c of version 5 metadata: the standard CRC-32C (Castagnoli) of the structure with its
//! 4-byte checksum field taken as zero, stored little-endian.

/// Whether the little-endian CRC32c at `offset` of `bytes` matches the rest of `bytes`.
/// False if the field does not fit.
pub(crate) fn verify(bytes: &[u8], offset: usize) -> bool {
    let Some(field) = bytes.get(offset..offset + 4) else {
        return false;
    };
    let stored = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    compute(bytes, offset) == stored
}

/// The CRC32c of `bytes` with the 4 bytes at `offset` counted as zero.
pub(crate) fn compute(bytes: &[u8], offset: usize) -> u32 {
    let (head, rest) = bytes.split_at(offset.min(bytes.len()));
    let tail = rest.get(4..).unwrap_or(&[]);
    let crc = crc32c::crc32c(head);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_covers_every_byte_but_its_own_field() {
        let mut block = vec![0x5au8; 512];
        let crc = compute(&block, 52);
        block[52..56].copy_from_slice(&crc.to_le_bytes());
        assert!(verify(&block, 52));
        block[100] ^= 1;
        assert!(!verify(&block, 52));
        block[100] ^= 1;
        block[53] ^= 1;
        assert!(!verify(&block, 52));
        assert!(!verify(&block, 510));
    }
}
