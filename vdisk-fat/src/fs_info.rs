//! FAT32's FSInfo sector: a cached count of free clusters and a hint where to look for one.
//! Drivers are free not to maintain it, so it is never trusted; a count that is far from what
//! the FAT says is only reported.

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use vdisk_core::fs::{Examined, MetaReader};

/// "RRaA" at byte 0.
const LEAD_SIGNATURE: u32 = 0x4161_5252;
/// "rrAa" at byte 484.
const STRUCT_SIGNATURE: u32 = 0x6141_7272;
/// At byte 508.
const TRAIL_SIGNATURE: u32 = 0xAA55_0000;
/// The free count when the driver does not know it.
const UNKNOWN: u32 = 0xFFFF_FFFF;

/// The 512-byte FSInfo structure.
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct FsInfo {
    /// [`LEAD_SIGNATURE`].
    lead_signature: U32,
    /// Reserved (zero).
    reserved1: [u8; 480],
    /// [`STRUCT_SIGNATURE`].
    struct_signature: U32,
    /// Last known count of free clusters, or [`UNKNOWN`].
    free_count: U32,
    /// Cluster number to start looking for a free one (a hint), or [`UNKNOWN`].
    next_free: U32,
    /// Reserved (zero).
    reserved2: [u8; 12],
    /// [`TRAIL_SIGNATURE`].
    trail_signature: U32,
}

const _: () = assert!(size_of::<FsInfo>() == 512);

/// What the FSInfo sector at byte `offset` says about the free count, as report details.
pub(crate) fn details(
    r: &MetaReader<'_>,
    offset: u64,
    fat_free: u64,
    clusters: u64,
) -> Examined<Vec<(String, String)>> {
    let bytes = r.read(offset, size_of::<FsInfo>(), "the fsinfo sector")?;
    let Ok((info, _)) = FsInfo::read_from_prefix(&bytes) else {
        return Ok(Vec::new());
    };
    if info.lead_signature.get() != LEAD_SIGNATURE
        || info.struct_signature.get() != STRUCT_SIGNATURE
        || info.trail_signature.get() != TRAIL_SIGNATURE
    {
        return Ok(vec![(
            "fsinfo".to_owned(),
            "invalid signature (ignored)".to_owned(),
        )]);
    }
    let hint = info.free_count.get();
    if hint == UNKNOWN {
        return Ok(vec![(
            "fsinfo_free_clusters".to_owned(),
            "unknown".to_owned(),
        )]);
    }
    let hint = u64::from(hint);
    let mut out = vec![("fsinfo_free_clusters".to_owned(), hint.to_string())];
    // "Wildly off": more than 1% of the clusters (and more than 16) apart, or beyond the count.
    if hint > clusters || hint.abs_diff(fat_free) > (clusters / 100).max(16) {
        out.push((
            "fsinfo".to_owned(),
            format!(
                "its free count ({hint} clusters) is far from the fat's ({fat_free}); it is only \
                 a hint, the fat was used"
            ),
        ));
    }
    Ok(out)
}
