//! Checksums of the superblock and tree nodes: the first 32 bytes of each hold the checksum
//! of everything after them.

use vdisk_core::fs::{Examined, damaged};

/// Bytes at the start of a block that hold its checksum.
pub(crate) const CSUM_LEN: usize = 32;

/// The checksum algorithm a file system uses (`csum_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsumType {
    /// CRC-32C (Castagnoli), little-endian in the first 4 bytes: the default.
    Crc32c,
}

impl CsumType {
    /// The algorithm of `csum_type`; xxhash64, sha256 and blake2b are valid btrfs choices
    /// this version cannot verify, so a volume using them is not trusted.
    pub(crate) fn from_raw(raw: u16) -> Examined<CsumType> {
        match raw {
            0 => Ok(CsumType::Crc32c),
            1..=3 => damaged(format!(
                "btrfs checksum type not supported ({}): only crc32c volumes are analysed",
                ["", "xxhash64", "sha256", "blake2b"][usize::from(raw)]
            )),
            _ => damaged(format!("btrfs checksum type {raw} is not valid")),
        }
    }

    /// Name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CsumType::Crc32c => "crc32c",
        }
    }

    /// Whether `block`'s stored checksum matches its contents.
    pub(crate) fn verify(self, block: &[u8]) -> bool {
        let Some(body) = block.get(CSUM_LEN..) else {
            return false;
        };
        match self {
            CsumType::Crc32c => block[..4] == crc32c::crc32c(body).to_le_bytes(),
        }
    }
}
