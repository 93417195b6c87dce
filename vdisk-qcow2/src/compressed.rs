//! Compressed clusters: a raw deflate stream (zlib with window bits -12, as qemu writes it)
//! that must inflate to exactly one cluster.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use vdisk_core::{Error, Result};

/// Inflates `stream` into `out` (one cluster). Bytes of the stream past its end (the rest of
/// its last sector) are ignored; a stream that ends before filling `out`, or is damaged, is
/// [`vdisk_core::ErrorKind::InvalidImage`].
pub(crate) fn inflate(stream: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut state, stream, out, 0, flags);
    let filled = written == out.len();
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if filled => Ok(()),
        _ => Err(Error::invalid(
            format!(
                "the compressed cluster at {at:#x} does not inflate to a whole cluster \
                 ({written} of {} bytes; {status:?})",
                out.len()
            ),
            at,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_ends_early_or_is_garbage_is_refused() {
        let mut out = vec![0u8; 512];
        // A stored block of 3 bytes only.
        let short = [0x01, 0x03, 0x00, 0xfc, 0xff, 1, 2, 3];
        assert!(inflate(&short, &mut out, 0x1000).is_err());
        assert!(inflate(&[0xff; 16], &mut out, 0x1000).is_err());
        let mut full = vec![0x01, 0x00, 0x02, 0xff, 0xfd];
        full.extend([7u8; 512]);
        full.extend([0xaa; 9]);
        inflate(&full, &mut out, 0).unwrap();
        assert!(out.iter().all(|&b| b == 7));
    }
}
