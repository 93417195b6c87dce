//! `hiberfil.sys` in the root directory: is Windows hibernated (or in fast startup) on this
//! volume? Then the volume's metadata lives partly in the hibernation image and the on-disk
//! `$Bitmap` must not be trusted.
//!
//! The rule is ntfs-3g's (`ntfs_volume_check_hiberfile`): no `hiberfil.sys` means not
//! hibernated; one whose data is shorter than the 4096-byte header, or whose header starts
//! with the signature "hibr", means hibernated. We also take "HIBR" (the uppercase form later
//! Windows versions write) as hibernated.

/// Bytes of the hibernation file header that are examined.
pub(crate) const HEADER_LEN: usize = 4096;
/// Signatures of an active hibernation image.
const ACTIVE_SIGNATURES: [&[u8; 4]; 2] = [b"hibr", b"HIBR"];

/// What the first bytes of `hiberfil.sys` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hibernation {
    /// Header present and not an active image.
    Inactive,
    /// Active hibernation image.
    Active,
    /// Shorter than a header: a hibernated non-system volume, as ntfs-3g treats it.
    Truncated,
}

/// Classifies the first bytes of the file (`head.len()` = bytes the file has, at most
/// [`HEADER_LEN`]).
pub(crate) fn classify(head: &[u8]) -> Hibernation {
    if head.len() < HEADER_LEN {
        return Hibernation::Truncated;
    }
    if ACTIVE_SIGNATURES.iter().any(|s| head.starts_with(*s)) {
        Hibernation::Active
    } else {
        Hibernation::Inactive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_or_short_file_means_hibernated() {
        let mut h = vec![0u8; HEADER_LEN];
        assert_eq!(classify(&h), Hibernation::Inactive);
        h[..4].copy_from_slice(b"hibr");
        assert_eq!(classify(&h), Hibernation::Active);
        h[..4].copy_from_slice(b"HIBR");
        assert_eq!(classify(&h), Hibernation::Active);
        h[..4].copy_from_slice(b"wake");
        assert_eq!(classify(&h), Hibernation::Inactive);
        assert_eq!(classify(&h[..100]), Hibernation::Truncated);
    }
}
