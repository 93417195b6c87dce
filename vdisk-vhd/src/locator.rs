//! Parent locators of differencing disks (spec: "Parent Locator Entry"): which platform codes
//! name the parent and how, where their data lies (metadata the compactor must keep), and the
//! entries vdisk writes when it creates a child.
//!
//! The spec counts `data_space` in sectors; Windows writes bytes. As other readers do, a value
//! below 512 is taken as sectors and a multiple of 512 as bytes; the range kept is at least
//! the data length rounded up to a sector.

use std::ops::Range;
use std::path::{Path, PathBuf};

use vdisk_core::{Locator, LocatorKind, Problem};
use zerocopy::FromZeros;
use zerocopy::byteorder::big_endian::{U32, U64};

use crate::format::{ParentLocator, SECTOR, show_tag};

/// Windows relative path, UTF-16LE.
pub(crate) const W2RU: [u8; 4] = *b"W2ru";
/// Windows absolute path, UTF-16LE.
pub(crate) const W2KU: [u8; 4] = *b"W2ku";
/// Deprecated Windows relative path (single-byte characters).
pub(crate) const WI2R: [u8; 4] = *b"Wi2r";
/// Deprecated Windows absolute path (single-byte characters).
pub(crate) const WI2K: [u8; 4] = *b"Wi2k";
/// Mac OS X file URL, UTF-8.
pub(crate) const MACX: [u8; 4] = *b"MacX";
/// Longest locator data accepted: a Windows path of 32767 UTF-16 units, rounded up.
pub(crate) const MAX_LOCATOR_DATA: u64 = 64 << 10;
/// Largest reserved locator space accepted.
pub(crate) const MAX_LOCATOR_SPACE: u64 = 1 << 20;

/// One used locator entry, validated: where its data is, and the data.
#[derive(Debug, Clone)]
pub(crate) struct LocatorEntry {
    /// Index of the entry in the header (0..8).
    pub index: usize,
    /// Platform code.
    pub code: [u8; 4],
    /// Host bytes the entry owns (its data space, at least its data rounded up to a sector).
    pub range: Range<u64>,
    /// The raw data (`data_length` bytes).
    pub data: Vec<u8>,
}

impl LocatorEntry {
    /// The path this entry names, decoded, if its platform code names one vdisk can follow.
    pub(crate) fn locator(&self) -> Option<Locator> {
        let (kind, label, text) = match self.code {
            W2RU => (LocatorKind::WindowsRelative, "W2ru", utf16le(&self.data)),
            W2KU => (LocatorKind::WindowsAbsolute, "W2ku", utf16le(&self.data)),
            WI2R => (LocatorKind::WindowsRelative, "Wi2r", latin1(&self.data)),
            WI2K => (LocatorKind::WindowsAbsolute, "Wi2k", latin1(&self.data)),
            MACX => (
                LocatorKind::Mac,
                "MacX",
                String::from_utf8_lossy(&self.data).into_owned(),
            ),
            _ => return None,
        };
        let path = text.trim_end_matches('\0').to_string();
        (!path.is_empty()).then_some(Locator { kind, label, path })
    }

    /// Resolution order: W2ru, W2ku, the deprecated codes, MacX (spec order); others never.
    fn rank(&self) -> u8 {
        match self.code {
            W2RU => 0,
            W2KU => 1,
            WI2R => 2,
            WI2K => 3,
            MACX => 4,
            _ => u8::MAX,
        }
    }
}

/// The locators to try, in resolution order, followed by the parent name from the header as
/// a last resort (qemu writes no locators, only the name).
pub(crate) fn resolution_order(entries: &[LocatorEntry], parent_name: &str) -> Vec<Locator> {
    let mut sorted: Vec<&LocatorEntry> = entries.iter().filter(|e| e.rank() < u8::MAX).collect();
    sorted.sort_by_key(|e| (e.rank(), e.index));
    let mut out: Vec<Locator> = sorted.iter().filter_map(|e| e.locator()).collect();
    let name = parent_name.trim_end_matches('\0').trim();
    if !name.is_empty() {
        let b = name.as_bytes();
        let absolute = name.starts_with('\\')
            || name.starts_with('/')
            || (b.len() > 2 && b[1] == b':' && b[0].is_ascii_alphabetic());
        out.push(Locator {
            kind: if absolute {
                LocatorKind::WindowsAbsolute
            } else {
                LocatorKind::WindowsRelative
            },
            label: "parent name",
            path: name.to_string(),
        });
    }
    out
}

/// The parent name field: UTF-16BE, up to the first NUL.
pub(crate) fn parent_name(raw: &[u8; 512]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// `name` as the parent name field (UTF-16BE, truncated to 255 units, NUL-padded).
pub(crate) fn encode_parent_name(name: &str) -> [u8; 512] {
    let mut out = [0u8; 512];
    for (slot, unit) in out.chunks_exact_mut(2).zip(name.encode_utf16().take(255)) {
        slot.copy_from_slice(&unit.to_be_bytes());
    }
    out
}

fn utf16le(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn latin1(data: &[u8]) -> String {
    data.iter().map(|&b| char::from(b)).collect()
}

/// Host bytes an entry's `data_space` stands for (see the module doc), `None` if the value is
/// neither a sector count below 512 nor a multiple of 512 bytes.
fn space_bytes(data_space: u32) -> Option<u64> {
    let s = u64::from(data_space);
    if s < SECTOR {
        Some(s * SECTOR)
    } else if s % SECTOR == 0 {
        Some(s)
    } else {
        None
    }
}

/// Validates the used entries of `raw` against a file whose footer is at `footer_pos`;
/// problems go to `problems`, usable entries come back (their data still to be read).
/// `metadata` are the header and table ranges the data must not overlap.
pub(crate) fn validate(
    raw: &[ParentLocator; 8],
    header_offset: u64,
    footer_pos: u64,
    metadata: &[Range<u64>],
    problems: &mut Vec<Problem>,
) -> Vec<(usize, [u8; 4], Range<u64>, u64)> {
    let mut out: Vec<(usize, [u8; 4], Range<u64>, u64)> = Vec::new();
    for (index, e) in raw.iter().enumerate() {
        if e.platform_code == [0; 4] {
            continue;
        }
        let at = header_offset + 0x240 + 24 * index as u64;
        let code = show_tag(&e.platform_code);
        let len = u64::from(e.data_length.get());
        let offset = e.data_offset.get();
        let bad = |msg: String| {
            Problem::error(format!("parent locator {index} ({code}) {msg}"), Some(at))
        };
        if len > MAX_LOCATOR_DATA {
            problems.push(bad(format!(
                "claims {len} bytes of data, more than the {MAX_LOCATOR_DATA} a path can need"
            )));
            continue;
        }
        let space = space_bytes(e.data_space.get())
            .filter(|&s| s <= MAX_LOCATOR_SPACE)
            .unwrap_or(0);
        let need = len.next_multiple_of(SECTOR);
        let end = offset.checked_add(space.max(need));
        if len == 0 && space == 0 {
            continue;
        }
        let Some(end) = end.filter(|&end| offset >= SECTOR && end <= footer_pos) else {
            problems.push(bad(format!(
                "data of {len} bytes at {offset:#x} lies outside the file's {footer_pos:#x} bytes before the footer"
            )));
            continue;
        };
        if offset % SECTOR != 0 {
            problems.push(bad(format!("data at {offset:#x} is not sector-aligned")));
            continue;
        }
        let range = offset..end;
        if metadata
            .iter()
            .any(|m| m.start < range.end && range.start < m.end)
        {
            problems.push(bad(format!(
                "data at {offset:#x}..{end:#x} overlaps the dynamic header or the bat"
            )));
            continue;
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.2.start < range.end && range.start < o.2.end)
        {
            problems.push(bad(format!(
                "data at {offset:#x}..{end:#x} overlaps that of parent locator {}",
                other.0
            )));
            continue;
        }
        out.push((index, e.platform_code, range, len));
    }
    out
}

/// The entries vdisk writes for a parent at `parent` seen from a child at `child`: W2ru
/// (`.\name` when they share a folder, else a relative path) and W2ku (absolute), each
/// UTF-16LE. Returns (code, data) pairs.
pub(crate) fn for_create(parent: &Path, child: &Path) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let parent_abs = absolute(parent);
    let child_dir = absolute(child)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if let Some(rel) = vdisk_core::parent::relative_windows(&child_dir, &parent_abs) {
        out.push((W2RU, encode_utf16le(&rel)));
    }
    out.push((W2KU, encode_utf16le(&absolute_windows(&parent_abs))));
    out
}

/// A locator entry pointing at `len` bytes at `offset` in a space of `space` bytes (stored in
/// bytes, as Windows does; always a multiple of 512, so sector-counting readers see it too).
pub(crate) fn entry(code: [u8; 4], offset: u64, len: u64, space: u64) -> ParentLocator {
    let mut e = ParentLocator::new_zeroed();
    e.platform_code = code;
    e.data_space = U32::new(u32::try_from(space).unwrap_or(u32::MAX));
    e.data_length = U32::new(u32::try_from(len).unwrap_or(u32::MAX));
    e.data_offset = U64::new(offset);
    e
}

fn encode_utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    vdisk_core::parent::normalise(&joined)
}

/// An absolute host path in Windows form: WSL's `/mnt/c/x` becomes `C:\x`; other absolute
/// paths keep their folders with `\` separators (a Unix host path, `\srv\x.vhd`).
fn absolute_windows(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    let b = text.as_bytes();
    if b.len() > 6 && text.starts_with("/mnt/") && b[5].is_ascii_alphabetic() && b[6] == b'/' {
        let drive = char::from(b[5].to_ascii_uppercase());
        return format!("{drive}:{}", text[6..].replace('/', "\\"));
    }
    text.replace('/', "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn created_locators_are_relative_dot_names_and_absolute_windows_paths() {
        let l = for_create(Path::new("/vms/base.vhd"), Path::new("/vms/snap.vhd"));
        assert_eq!(l[0].0, W2RU);
        assert_eq!(utf16le(&l[0].1), ".\\base.vhd");
        assert_eq!(utf16le(&l[1].1), "\\vms\\base.vhd");
        let l = for_create(Path::new("/vms/a/base.vhd"), Path::new("/vms/b/snap.vhd"));
        assert_eq!(utf16le(&l[0].1), "..\\a\\base.vhd");
        let l = for_create(
            Path::new("/mnt/d/vm/base.vhd"),
            Path::new("/mnt/d/vm/c.vhd"),
        );
        assert_eq!(utf16le(&l[1].1), "D:\\vm\\base.vhd");
    }

    /// On Windows the paths are host paths already: the absolute locator is the drive-letter
    /// path as given (a rooted path without a drive would gain the current one).
    #[cfg(windows)]
    #[test]
    fn created_locators_on_windows_are_relative_dot_names_and_drive_letter_paths() {
        let l = for_create(Path::new(r"C:\vms\base.vhd"), Path::new(r"C:\vms\snap.vhd"));
        assert_eq!(l[0].0, W2RU);
        assert_eq!(utf16le(&l[0].1), ".\\base.vhd");
        assert_eq!(utf16le(&l[1].1), "C:\\vms\\base.vhd");
        let l = for_create(
            Path::new(r"C:\vms\a\base.vhd"),
            Path::new(r"C:\vms\b\snap.vhd"),
        );
        assert_eq!(utf16le(&l[0].1), "..\\a\\base.vhd");
    }

    #[test]
    fn data_space_below_512_counts_sectors_and_multiples_of_512_count_bytes() {
        assert_eq!(space_bytes(1), Some(512));
        assert_eq!(space_bytes(4096), Some(4096));
        assert_eq!(space_bytes(513), None);
    }

    fn entry_of(index: usize, code: [u8; 4], text: &str) -> LocatorEntry {
        let data = if code == MACX {
            text.as_bytes().to_vec()
        } else {
            encode_utf16le(text)
        };
        LocatorEntry {
            index,
            code,
            range: 0..512,
            data,
        }
    }

    #[test]
    fn locators_resolve_in_spec_order_then_by_parent_name() {
        let entries = [
            entry_of(0, MACX, "file:///vms/p.vhd"),
            entry_of(1, W2KU, "C:\\vms\\p.vhd"),
            entry_of(2, *b"Mac ", "alias blob"),
            entry_of(3, W2RU, ".\\p.vhd\0"),
        ];
        let order = resolution_order(&entries, "p.vhd");
        let labels: Vec<&str> = order.iter().map(|l| l.label).collect();
        assert_eq!(labels, ["W2ru", "W2ku", "MacX", "parent name"]);
        assert_eq!(order[0].path, ".\\p.vhd", "trailing NULs dropped");
        assert_eq!(order[2].kind, LocatorKind::Mac);
    }

    #[test]
    fn parent_names_round_trip_and_absolute_names_are_told_apart() {
        let raw = encode_parent_name("C:\\x\\p.vhd");
        assert_eq!(parent_name(&raw), "C:\\x\\p.vhd");
        let order = resolution_order(&[], &parent_name(&raw));
        assert_eq!(order[0].kind, LocatorKind::WindowsAbsolute);
        let order = resolution_order(&[], "image.vhd");
        assert_eq!(order[0].kind, LocatorKind::WindowsRelative);
    }
}
