//! The file identifier and the two headers: which one is current.

use vdisk_core::{Error, ErrorKind, HostFile, Problem, Result};
use zerocopy::FromBytes;

use crate::format::{
    FILE_SIGNATURE, FileIdentifier, HEADER_LEN, HEADER_OFFSETS, HEADER_SECTION_LEN,
    HEADER_SIGNATURE, HEADER_VERSION, Header, LOG_VERSION, MAX_LOG_LEN, REGION_ALIGN,
    crc_with_zeroed_field,
};

/// The header in effect, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct CurrentHeader {
    /// The header.
    pub header: Header,
    /// Which copy (0 at 64 KiB, 1 at 128 KiB).
    pub index: usize,
    /// Creator string of the file identifier.
    pub creator: String,
}

impl CurrentHeader {
    /// Host range of the log (may be empty).
    pub(crate) fn log_range(&self) -> std::ops::Range<u64> {
        let start = self.header.log_offset.get();
        start..start.saturating_add(u64::from(self.header.log_length.get()))
    }

    /// Whether the log holds entries that must be replayed.
    pub(crate) fn log_in_use(&self) -> bool {
        self.header.log_guid != [0; 16]
    }
}

/// Reads the identifier and both headers and picks the current one. Problems with one copy
/// (bad checksum) are pushed as warnings; only a file with no usable header fails.
pub(crate) fn read_headers(
    file: &dyn HostFile,
    problems: &mut Vec<Problem>,
) -> Result<CurrentHeader> {
    let len = file.len()?;
    if len < HEADER_SECTION_LEN {
        return Err(Error::invalid(
            format!("file is {len} bytes, shorter than the 1 MiB vhdx header section (truncated?)"),
            0,
        ));
    }
    let mut id = [0u8; size_of::<FileIdentifier>()];
    file.read_at(&mut id, 0)?;
    let id = FileIdentifier::read_from_bytes(&id)
        .map_err(|_| Error::invalid("cannot parse the file identifier", 0))?;
    if id.signature != FILE_SIGNATURE {
        return Err(Error::invalid(
            "not a vhdx file: the signature \"vhdxfile\" is missing",
            0,
        ));
    }
    let creator = utf16_name(&id.creator);

    let mut copies: [Option<Header>; 2] = [None, None];
    for (i, &offset) in HEADER_OFFSETS.iter().enumerate() {
        let mut buf = vec![0u8; HEADER_LEN];
        file.read_at(&mut buf, offset)?;
        match validate_copy(&buf, offset) {
            Ok(h) => copies[i] = Some(h),
            Err(msg) => problems.push(Problem::warning(
                format!("header {} is not valid: {msg}", i + 1),
                Some(offset),
            )),
        }
    }
    let (header, index) = match copies {
        [None, None] => {
            return Err(Error::invalid(
                "neither vhdx header is valid (bad signature or checksum in both)",
                HEADER_OFFSETS[0],
            ));
        }
        [Some(a), None] => (a, 0),
        [None, Some(b)] => (b, 1),
        [Some(a), Some(b)] => {
            let (sa, sb) = (a.sequence_number.get(), b.sequence_number.get());
            if sa > sb {
                (a, 0)
            } else if sb > sa {
                (b, 1)
            } else if zerocopy::IntoBytes::as_bytes(&a) == zerocopy::IntoBytes::as_bytes(&b) {
                // Not allowed by the spec, but Disk2VHD writes it: identical copies are fine.
                (a, 0)
            } else {
                return Err(Error::invalid(
                    format!(
                        "both headers have sequence number {sa} but different contents; \
                         cannot tell which is current"
                    ),
                    HEADER_OFFSETS[0],
                ));
            }
        }
    };
    let at = HEADER_OFFSETS[index];
    if header.version.get() != HEADER_VERSION {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("vhdx version {} is not supported", header.version.get()),
        )
        .with_offset(at));
    }
    if header.log_version.get() != LOG_VERSION {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "vhdx log version {} is not supported",
                header.log_version.get()
            ),
        )
        .with_offset(at));
    }
    let current = CurrentHeader {
        header,
        index,
        creator,
    };
    check_log_placement(&current, len, at)?;
    Ok(current)
}

/// Signature and checksum of one header copy.
fn validate_copy(buf: &[u8], offset: u64) -> std::result::Result<Header, String> {
    let header = Header::read_from_bytes(buf).map_err(|_| "short read".to_string())?;
    if header.signature != HEADER_SIGNATURE {
        return Err("signature \"head\" missing".into());
    }
    let crc = crc_with_zeroed_field(buf, 4);
    if crc != header.checksum.get() {
        return Err(format!(
            "checksum {:#010x} does not match the computed {crc:#010x} (header at {offset:#x})",
            header.checksum.get()
        ));
    }
    Ok(header)
}

fn check_log_placement(current: &CurrentHeader, file_len: u64, at: u64) -> Result<()> {
    let h = &current.header;
    let (offset, length) = (h.log_offset.get(), u64::from(h.log_length.get()));
    if length == 0 {
        if current.log_in_use() {
            return Err(Error::invalid(
                "the header has a log guid but the log is empty",
                at,
            ));
        }
        return Ok(());
    }
    if length % REGION_ALIGN != 0 || offset % REGION_ALIGN != 0 || offset < HEADER_SECTION_LEN {
        return Err(Error::invalid(
            format!(
                "log at {offset:#x} of {length:#x} bytes is not 1 MiB aligned or overlaps the \
                 header section"
            ),
            at,
        ));
    }
    if length > MAX_LOG_LEN {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("a log of {length} bytes is larger than the supported {MAX_LOG_LEN}"),
        )
        .with_offset(at));
    }
    match offset.checked_add(length) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::invalid(
            format!(
                "log at {offset:#x} of {length:#x} bytes extends past the end of the \
                 {file_len}-byte file (truncated?)"
            ),
            at,
        )),
    }
}

/// A UTF-16LE, NUL-terminated name.
pub(crate) fn utf16_name(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}
