//! Zero detection at memory bandwidth.

/// Bytes folded before each early-exit test: large enough for the compiler to unroll into wide
/// vector ORs, small enough that a block with data stops within a few cache lines.
const FOLD: usize = 256;

/// True if every byte of `buf` is zero.
///
/// OR-folds 256-byte chunks (the compiler vectorises the inner fold) and stops at the first
/// chunk holding a non-zero byte, so a block with data costs almost nothing.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(FOLD);
    for chunk in &mut chunks {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_zero_buffers_are_zero() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
    }

    proptest! {
        #[test]
        fn any_single_nonzero_byte_is_found(len in 1usize..2000, pos in any::<prop::sample::Index>(), val in 1u8..) {
            let mut buf = vec![0u8; len];
            buf[pos.index(len)] = val;
            prop_assert!(!is_zero(&buf));
        }
    }
}
