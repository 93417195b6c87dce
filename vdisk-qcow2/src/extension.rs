//! Header extensions: the (type, length, data) records after the header in cluster 0. They
//! are parsed with every length bounded by the space they may occupy, listed in `vdisk info`,
//! and never rewritten (kept byte for byte).

use vdisk_core::{Error, Result};

use crate::format::{
    EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE, EXT_END, EXT_FEATURE_TABLE, be32,
    idx,
};

/// One header extension as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    /// Its type.
    pub kind: u32,
    /// Offset of its 8-byte type/length prefix in the file.
    pub offset: u64,
    /// Its data (without the padding to 8 bytes).
    pub data: Vec<u8>,
}

impl Extension {
    /// A lowercase name for reports.
    pub fn name(&self) -> String {
        match self.kind {
            EXT_BACKING_FORMAT => "backing format".to_string(),
            EXT_FEATURE_TABLE => "feature name table".to_string(),
            EXT_BITMAPS => "bitmaps".to_string(),
            EXT_CRYPTO => "full disk encryption header".to_string(),
            EXT_DATA_FILE => "external data file name".to_string(),
            k => format!("unknown {k:#010x}"),
        }
    }
}

/// The extensions in `area` (the bytes of cluster 0 from `start`, the end of the header, to
/// `end`: the backing file name or the end of the cluster). Refused
/// ([`vdisk_core::ErrorKind::InvalidImage`]) when one's length runs past `end` or the list
/// has no end marker before it.
pub(crate) fn parse(cluster0: &[u8], start: u64, end: u64) -> Result<Vec<Extension>> {
    let mut out = Vec::new();
    let end = end.min(cluster0.len() as u64);
    let mut at = start;
    loop {
        if at == end {
            // No room even for the end marker: qemu accepts a list that fills the space.
            return Ok(out);
        }
        if at.checked_add(8).is_none_or(|e| e > end) {
            return Err(Error::invalid(
                format!(
                    "the header extension at {at:#x} does not fit before {end:#x} (the end of \
                     the space for extensions)"
                ),
                at,
            ));
        }
        let i = idx(at);
        let kind = be32(cluster0, i);
        let len = u64::from(be32(cluster0, i + 4));
        if kind == EXT_END {
            return Ok(out);
        }
        let data_end = at + 8 + len;
        let padded = (at + 8).saturating_add(len.next_multiple_of(8));
        if data_end > end || padded > end {
            return Err(Error::invalid(
                format!(
                    "header extension {kind:#010x} at {at:#x} claims {len} bytes, past {end:#x} \
                     (the end of the space for extensions)"
                ),
                at,
            ));
        }
        out.push(Extension {
            kind,
            offset: at,
            data: cluster0[i + 8..idx(data_end)].to_vec(),
        });
        at = padded;
    }
}

/// The names the feature name table gives (type 0 incompatible, 1 compatible, 2 autoclear;
/// bit), for messages about unknown bits.
pub(crate) fn feature_names(exts: &[Extension]) -> Vec<(u8, u8, String)> {
    let mut out = Vec::new();
    for e in exts.iter().filter(|e| e.kind == EXT_FEATURE_TABLE) {
        for entry in e.data.chunks_exact(48) {
            let end = entry[2..]
                .iter()
                .position(|&b| b == 0)
                .map_or(48, |p| p + 2);
            let name = String::from_utf8_lossy(&entry[2..end]).to_string();
            out.push((entry[0], entry[1], name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(kind: u32, data: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend((u32::try_from(data.len()).unwrap()).to_be_bytes());
        v.extend(data);
        v.resize(v.len().next_multiple_of(8), 0);
        v
    }

    #[test]
    fn extensions_are_read_up_to_the_end_marker_with_their_bytes_intact() {
        let mut c = vec![0u8; 104];
        c.extend(ext(EXT_BACKING_FORMAT, b"qcow2"));
        c.extend(ext(0x1234_5678, &[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        c.extend([0u8; 8]);
        c.resize(512, 0xee);
        let exts = parse(&c, 104, 512).unwrap();
        assert_eq!(exts.len(), 2);
        assert_eq!(exts[0].data, b"qcow2");
        assert_eq!(exts[1].data, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(exts[1].offset, 104 + 16);
    }

    #[test]
    fn an_extension_length_past_its_space_is_refused() {
        let mut c = vec![0u8; 104];
        c.extend(0x1234u32.to_be_bytes());
        c.extend(u32::MAX.to_be_bytes());
        c.resize(512, 0);
        let err = parse(&c, 104, 512).unwrap_err();
        assert!(err.message().contains("past"), "{err}");
        let mut c = vec![0u8; 104];
        c.extend(ext(0x1234, &[0; 300]));
        assert!(parse(&c, 104, 300).is_err());
    }
}
