//! Signatures of other file systems. FAT has no magic number, and most file systems leave the
//! first sector alone when they are made over an old FAT volume, so a stale FAT boot sector can
//! outlive its file system. A volume that carries both a FAT boot sector and another file
//! system's signature is not trusted: which one is live cannot be told from the boot sector.

use vdisk_core::BlockDevice;
use vdisk_core::Result;

/// (name, byte offset, signature).
const SIGNATURES: [(&str, u64, &[u8]); 5] = [
    ("btrfs", 0x1_0040, b"_BHRfS_M"),
    ("xfs", 0, b"XFSB"),
    ("linux swap", 4086, b"SWAPSPACE2"),
    ("lvm2", 512 + 24, b"LVM2 001"),
    ("exfat", 3, b"EXFAT   "),
];

/// The name of another file system whose signature `volume` carries, if any.
pub(crate) fn find(volume: &dyn BlockDevice) -> Result<Option<&'static str>> {
    let size = volume.size();
    // ext2/3/4: the magic 0xEF53 at 1080 and a sane block size exponent (0..=6) at 1048, so a
    // FAT entry that happens to read 0xEF53 there is less likely to count.
    if size >= 2048 {
        let mut sb = [0u8; 64];
        volume.read_at(&mut sb, 1024)?;
        let log_block_size = u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]);
        if sb[56..58] == [0x53, 0xEF] && log_block_size <= 6 {
            return Ok(Some("ext2/3/4"));
        }
    }
    for (name, offset, magic) in SIGNATURES {
        if offset + magic.len() as u64 > size {
            continue;
        }
        let mut buf = vec![0u8; magic.len()];
        volume.read_at(&mut buf, offset)?;
        if buf == magic {
            return Ok(Some(name));
        }
    }
    Ok(None)
}
