//! Recognising a VHD from the bytes the format owns (the rule of
//! [`vdisk_core::FormatDriver::probe`]).
//!
//! A dynamic or differencing VHD starts with a copy of its footer: offset 0 is the format's
//! own, so "conectix" there is [`Confidence::Yes`]. A fixed VHD is raw guest data followed by
//! one footer: its first sector is the guest's (and may hold any other format's signature),
//! and its footer sits where other formats keep guest data (the last block of a dynamic VHDX,
//! the last cluster of a qcow2). So a footer at the end counts only as far as it proves itself:
//! a fixed-disk footer with a valid checksum whose disk size accounts for exactly the bytes
//! before it is [`Confidence::Likely`]; anything less (a dynamic footer without its copy at 0,
//! a wrong checksum, a size that does not match the file) is [`Confidence::Maybe`], enough to
//! give a damaged VHD its own precise error when nothing else claims the file, never enough to
//! outweigh another format's signature at offset 0.

use vdisk_core::{Confidence, HostFile, Result};
use zerocopy::{FromZeros, IntoBytes};

use crate::footer::DiskType;
use crate::format::{DISK_DIFFERENCING, FOOTER_COOKIE, FOOTER_LEN, Footer};

/// How sure the bytes of `file` make a VHD.
pub(crate) fn probe(file: &dyn HostFile) -> Result<Confidence> {
    let len = file.len()?;
    let mut head = [0u8; 8];
    if len >= 8 {
        file.read_at(&mut head, 0)?;
        if head == FOOTER_COOKIE {
            // Open then says what is wrong with a file this short.
            return Ok(Confidence::Yes);
        }
    }
    if len < FOOTER_LEN {
        return Ok(Confidence::No);
    }
    let mut footer = Footer::new_zeroed();
    file.read_at(footer.as_mut_bytes(), len - FOOTER_LEN)?;
    if footer.cookie != FOOTER_COOKIE {
        return Ok(Confidence::No);
    }
    Ok(if proves_fixed_disk(&footer, len) {
        Confidence::Likely
    } else {
        Confidence::Maybe
    })
}

/// Whether `footer`, found at the end of a file of `len` bytes, proves the file a fixed VHD as
/// far as a footer can: fixed type, a checksum some VHD writer computes, and a disk size that
/// is exactly the bytes before it.
fn proves_fixed_disk(footer: &Footer, len: u64) -> bool {
    DiskType::from_raw(footer.disk_type.get()) == Some(DiskType::Fixed)
        && checksum_accepted(footer)
        && footer.current_size.get().checked_add(FOOTER_LEN) == Some(len)
}

/// The checksums open accepts: the right one, and those old writers stored (see
/// [`crate::check`]).
fn checksum_accepted(footer: &Footer) -> bool {
    let stored = footer.checksum.get();
    stored == footer.computed_checksum()
        || stored == footer.checksum_without_unique_id()
        || (footer.disk_type.get() == DISK_DIFFERENCING
            && stored == footer.checksum_as_dynamic_without_unique_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemFile;
    use zerocopy::byteorder::big_endian::{U32, U64};

    use crate::format::{DISK_DYNAMIC, DISK_FIXED};

    fn image(guest: &[u8], disk_type: u32, size: u64, seal: bool) -> MemFile {
        let mut bytes = vec![0u8; usize::try_from(size).unwrap()];
        bytes[..guest.len()].copy_from_slice(guest);
        let mut footer = Footer::new_zeroed();
        footer.cookie = FOOTER_COOKIE;
        footer.disk_type = U32::new(disk_type);
        footer.current_size = U64::new(size);
        if seal {
            footer.seal();
        }
        bytes.extend_from_slice(footer.as_bytes());
        MemFile::from_bytes(bytes)
    }

    #[test]
    fn a_proven_fixed_footer_is_likely_whatever_the_guest_wrote_at_offset_0() {
        let file = image(b"vhdxfile", DISK_FIXED, 8192, true);
        assert_eq!(probe(&file).unwrap(), Confidence::Likely);
    }

    #[test]
    fn a_footer_at_the_end_that_does_not_prove_itself_is_only_maybe() {
        // Wrong checksum; dynamic type without the copy at 0; size not matching the file.
        for file in [
            image(b"", DISK_FIXED, 8192, false),
            image(b"", DISK_DYNAMIC, 8192, true),
        ] {
            assert_eq!(probe(&file).unwrap(), Confidence::Maybe);
        }
        let mut bytes = image(b"", DISK_FIXED, 8192, true).to_vec();
        bytes.splice(0..0, [0u8; 512]);
        assert_eq!(
            probe(&MemFile::from_bytes(bytes)).unwrap(),
            Confidence::Maybe
        );
    }

    #[test]
    fn the_footer_copy_at_offset_0_is_yes_and_no_cookie_is_no() {
        let mut bytes = image(b"", DISK_DYNAMIC, 8192, true).to_vec();
        bytes[..8].copy_from_slice(&FOOTER_COOKIE);
        assert_eq!(probe(&MemFile::from_bytes(bytes)).unwrap(), Confidence::Yes);
        let file = MemFile::from_bytes(vec![0u8; 4096]);
        assert_eq!(probe(&file).unwrap(), Confidence::No);
    }
}
