//! Newtypes for the address spaces a compactor mixes up (STYLE.md habit 4), and sizes.

use std::fmt;

/// Bytes in a VHD/VHDX sector as addressed by tables (logical sectors may be larger).
pub const SECTOR: u64 = 512;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// A byte offset in the image file on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostOffset(pub u64);

/// A byte offset in the virtual disk as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtOffset(pub u64);

/// The index of an allocation unit (VHD/VHDX block) of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockIndex(pub u64);

impl fmt::Display for HostOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two or any non-zero value).
/// Returns `None` on overflow.
pub fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align > 0);
    value.checked_next_multiple_of(align)
}
