//! The parent locator metadata item of a differencing VHDX (MS-VHDX 2.6.2.6): who the parent
//! is (`parent_linkage`, the parent's DataWriteGuid) and where to look for it.
//!
//! ```text
//!  0    LocatorHeader   locator type GUID, reserved, KeyValueCount
//!  20   LocatorEntry[KeyValueCount]   key offset, value offset, key length, value length
//!  ...  UTF-16LE strings, anywhere inside the item
//! ```
//!
//! Every count, offset and length is checked against the item (at most 1 MiB) before use;
//! strings must be valid UTF-16 without NULs; keys must be unique; unknown keys are ignored.

use std::path::Path;

use uuid::Uuid;
use vdisk_core::{Error, ErrorKind, Locator, LocatorKind, Result};
use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::format::{LocatorEntry, LocatorHeader, VHDX_LOCATOR_TYPE, guid};

/// The keys this crate reads, in the order paths are tried (MS-VHDX 2.6.2.6.3).
const PATH_KEYS: [(&str, LocatorKind); 3] = [
    ("relative_path", LocatorKind::WindowsRelative),
    ("volume_path", LocatorKind::WindowsVolume),
    ("absolute_win32_path", LocatorKind::WindowsAbsolute),
];

/// A decoded VHDX parent locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParentLocator {
    /// `parent_linkage`: the DataWriteGuid the parent must have.
    pub linkage: Uuid,
    /// `parent_linkage2`: another accepted DataWriteGuid, if present.
    pub linkage2: Option<Uuid>,
    /// The path entries present, in the order they are tried.
    pub paths: Vec<Locator>,
}

impl ParentLocator {
    /// Whether `dwg` (a parent's DataWriteGuid) is one this child accepts.
    pub(crate) fn accepts(&self, dwg: Uuid) -> bool {
        self.linkage == dwg || self.linkage2 == Some(dwg)
    }
}

/// Parses the parent locator item `item`, found at host offset `at` (for messages).
pub(crate) fn parse_locator(item: &[u8], at: u64) -> Result<ParentLocator> {
    let bad = |msg: String| Error::invalid(format!("parent locator: {msg}"), at);
    let (header, _) = LocatorHeader::read_from_prefix(item)
        .map_err(|_| bad(format!("the item is {} bytes, too short", item.len())))?;
    let kind = guid(header.locator_type);
    if kind != VHDX_LOCATOR_TYPE {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the parent is located by locator type {{{kind}}}; only vhdx parents \
                 ({{{VHDX_LOCATOR_TYPE}}}) are supported"
            ),
        )
        .with_offset(at));
    }
    let count = usize::from(header.key_value_count.get());
    let table = &item[size_of::<LocatorHeader>()..];
    let room = table.len() / size_of::<LocatorEntry>();
    if count > room {
        return Err(bad(format!(
            "{count} key/value entries do not fit in the {}-byte item",
            item.len()
        )));
    }
    let (entries, _) = <[LocatorEntry]>::ref_from_prefix_with_elems(table, count)
        .map_err(|_| bad("the entry table does not fit".into()))?;
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(count);
    for (i, e) in entries.iter().enumerate() {
        let key = string(
            item,
            e.key_offset.get(),
            e.key_length.get(),
            &format!("key {i}"),
        )
        .map_err(bad)?;
        let value = string(
            item,
            e.value_offset.get(),
            e.value_length.get(),
            &format!("value of {key:?}"),
        )
        .map_err(bad)?;
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("key {key:?} appears twice")));
        }
        pairs.push((key, value));
    }
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let linkage = |k: &str| -> Result<Option<Uuid>> {
        get(k)
            .map(|v| parse_guid(v).ok_or_else(|| bad(format!("{k} {v:?} is not a braced guid"))))
            .transpose()
    };
    let linkage2 = linkage("parent_linkage2")?;
    let linkage = linkage("parent_linkage")?
        .ok_or_else(|| bad("the required key \"parent_linkage\" is missing".into()))?;
    let paths: Vec<Locator> = PATH_KEYS
        .iter()
        .filter_map(|&(label, kind)| {
            get(label).map(|v| Locator {
                kind,
                label,
                path: v.clone(),
            })
        })
        .collect();
    if paths.is_empty() {
        return Err(bad(
            "none of relative_path, volume_path, absolute_win32_path is present".into(),
        ));
    }
    Ok(ParentLocator {
        linkage,
        linkage2,
        paths,
    })
}

/// The UTF-16LE string at `offset..offset+len` of `item`.
fn string(item: &[u8], offset: u32, len: u16, what: &str) -> std::result::Result<String, String> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(usize::from(len));
    if offset == 0 || len == 0 || !len.is_multiple_of(2) || end > item.len() {
        return Err(format!(
            "{what} at offset {offset} of {len} bytes is empty, odd-sized or outside the \
             {}-byte item",
            item.len()
        ));
    }
    let units: Vec<u16> = item[start..end]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).map_err(|_| format!("{what} is not valid utf-16"))?;
    if text.contains('\0') {
        return Err(format!("{what} holds a nul character"));
    }
    Ok(text)
}

/// `{xxxxxxxx-...}` (any case) as a GUID.
fn parse_guid(text: &str) -> Option<Uuid> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    (inner.len() == 36).then(|| Uuid::parse_str(inner).ok())?
}

/// The locator item for a new child: `parent_linkage` = `linkage` (lowercase, braced) and
/// `relative_path` = the parent's path relative to the child's folder, Windows style
/// (`.\name`, `..\dir\name`). On Windows hosts `absolute_win32_path` is written too; elsewhere
/// no Windows absolute path exists to write.
pub(crate) fn build_locator(linkage: Uuid, child: &Path, parent: &Path) -> Result<Vec<u8>> {
    let mut pairs = vec![
        ("parent_linkage".to_string(), format!("{{{linkage}}}")),
        (
            "relative_path".to_string(),
            relative_windows_path(child, parent)?,
        ),
    ];
    if cfg!(windows)
        && let Ok(abs) = parent.canonicalize()
    {
        pairs.push((
            "absolute_win32_path".into(),
            vdisk_core::parent::plain_windows_path(&abs.display().to_string()),
        ));
    }
    encode(&pairs)
}

/// Encodes key/value pairs as a locator item.
pub(crate) fn encode(pairs: &[(String, String)]) -> Result<Vec<u8>> {
    let table_end = size_of::<LocatorHeader>() + pairs.len() * size_of::<LocatorEntry>();
    let mut head = LocatorHeader::new_zeroed();
    head.locator_type = VHDX_LOCATOR_TYPE.to_bytes_le();
    head.key_value_count = U16::new(
        u16::try_from(pairs.len())
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "too many locator entries"))?,
    );
    let mut out = head.as_bytes().to_vec();
    let mut strings = Vec::new();
    let put = |s: &str, strings: &mut Vec<u8>| -> Result<(U32, U16)> {
        let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let offset = u32::try_from(table_end + strings.len()).ok();
        let len = u16::try_from(bytes.len()).ok();
        strings.extend_from_slice(&bytes);
        match (offset, len) {
            (Some(o), Some(l)) => Ok((U32::new(o), U16::new(l))),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("parent locator string of {} bytes is too long", bytes.len()),
            )),
        }
    };
    for (k, v) in pairs {
        let (key_offset, key_length) = put(k, &mut strings)?;
        let (value_offset, value_length) = put(v, &mut strings)?;
        let e = LocatorEntry {
            key_offset,
            value_offset,
            key_length,
            value_length,
        };
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(&strings);
    Ok(out)
}

/// The path of `parent` relative to the folder of `child`, with `\` separators, starting with
/// `.\` when the parent lies in the child's folder or below it.
fn relative_windows_path(child: &Path, parent: &Path) -> Result<String> {
    let canon = |p: &Path| {
        p.canonicalize().map_err(|e| {
            Error::io(e, "cannot resolve the path for the parent locator").with_path(p)
        })
    };
    let child_dir = canon(
        child
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let parent = canon(parent)?;
    vdisk_core::parent::relative_windows(&child_dir, &parent).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "parent path {} cannot be stored as a relative locator (not valid unicode, or \
                 no folder in common with the child)",
                parent.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Vec<u8> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        encode(&owned).unwrap()
    }

    const LINK: &str = "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}";

    #[test]
    fn locator_round_trips_and_lists_paths_in_spec_order() {
        let bytes = item(&[
            ("absolute_win32_path", "\\\\?\\d:\\p\\parent.vhdx"),
            ("unknown_key", "ignored"),
            ("parent_linkage", "{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}"),
            ("relative_path", "..\\p\\parent.vhdx"),
        ]);
        let loc = parse_locator(&bytes, 0).unwrap();
        assert_eq!(loc.linkage, Uuid::parse_str(&LINK[1..37]).unwrap());
        assert_eq!(loc.linkage2, None);
        let labels: Vec<_> = loc.paths.iter().map(|p| p.label).collect();
        assert_eq!(labels, ["relative_path", "absolute_win32_path"]);
    }

    #[test]
    fn hostile_locators_are_refused_with_reasons() {
        let ok = item(&[("parent_linkage", LINK), ("relative_path", ".\\p.vhdx")]);
        let reason = |b: &[u8]| parse_locator(b, 0x1234).unwrap_err().to_string();
        // Count larger than the item.
        let mut b = ok.clone();
        b[18..20].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(reason(&b).contains("do not fit"), "{}", reason(&b));
        // Offset far outside.
        let mut b = ok.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(reason(&b).contains("outside"), "{}", reason(&b));
        // Zero length.
        let mut b = ok.clone();
        b[28..30].copy_from_slice(&0u16.to_le_bytes());
        assert!(reason(&b).contains("empty"), "{}", reason(&b));
        // Lone surrogate in a value.
        let mut b = ok.clone();
        let vo = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
        b[vo..vo + 2].copy_from_slice(&0xd800u16.to_le_bytes());
        assert!(reason(&b).contains("utf-16"), "{}", reason(&b));
        // Missing keys, duplicates, bad guid, wrong type, truncated header.
        let b = item(&[("relative_path", ".\\p.vhdx")]);
        assert!(reason(&b).contains("parent_linkage"), "{}", reason(&b));
        let b = item(&[("parent_linkage", LINK)]);
        assert!(reason(&b).contains("relative_path"), "{}", reason(&b));
        let b = item(&[
            ("parent_linkage", LINK),
            ("relative_path", "a"),
            ("relative_path", "b"),
        ]);
        assert!(reason(&b).contains("twice"), "{}", reason(&b));
        let b = item(&[("parent_linkage", "not-a-guid"), ("relative_path", "a")]);
        assert!(reason(&b).contains("guid"), "{}", reason(&b));
        let mut b = ok.clone();
        b[0] ^= 1;
        assert_eq!(
            parse_locator(&b, 0).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(reason(&ok[..10]).contains("too short"));
        let mut b = ok;
        let ko = u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
        b[ko..ko + 2].fill(0);
        assert!(reason(&b).contains("nul"), "{}", reason(&b));
    }

    #[test]
    fn relative_paths_are_windows_style_from_the_child_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let parent = dir.path().join("a/p.vhdx");
        std::fs::write(&parent, b"x").unwrap();
        let same = dir.path().join("a/c.vhdx");
        assert_eq!(relative_windows_path(&same, &parent).unwrap(), ".\\p.vhdx");
        let other = dir.path().join("b/c.vhdx");
        assert_eq!(
            relative_windows_path(&other, &parent).unwrap(),
            "..\\a\\p.vhdx"
        );
        let above = dir.path().join("c.vhdx");
        assert_eq!(
            relative_windows_path(&above, &parent).unwrap(),
            ".\\a\\p.vhdx"
        );
    }
}
