//! A compact encoding of a mostly-zero image file, so the fuzzer mutates the few KiB of
//! structures of a VHDX instead of the MiB of zeros between them.
//!
//! Layout (little-endian): `u64` file length (at most [`MAX_LEN`]), then records until the
//! input ends: `u32` offset, `u16` length, that many bytes (fewer if the input ends). Record
//! bytes past the file length are dropped; later records overwrite earlier ones.
//!
//! Shared by the fuzz targets (decode) and `cargo xtask fuzz` (encode, for seeds).

/// Largest file a sparse input may describe: 64 MiB (room for the smallest FAT32, 33 MiB).
pub const MAX_LEN: u64 = 64 << 20;

/// The file `input` describes, or `None` if its header is short or the length too large.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let (len, mut rest) = input.split_first_chunk::<8>()?;
    let len = u64::from_le_bytes(*len);
    if len > MAX_LEN {
        return None;
    }
    let mut file = vec![0u8; usize::try_from(len).ok()?];
    while let Some((head, tail)) = rest.split_first_chunk::<6>() {
        let offset = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let n = usize::from(u16::from_le_bytes([head[4], head[5]])).min(tail.len());
        let (data, next) = tail.split_at(n);
        if offset < file.len() {
            let end = offset.saturating_add(n).min(file.len());
            file[offset..end].copy_from_slice(&data[..end - offset]);
        }
        rest = next;
    }
    Some(file)
}

/// Encodes `file` (at most [`MAX_LEN`] bytes): one record per run of non-zero 512-byte
/// sectors, at most 127 sectors each. `None` if the file is too large.
pub fn encode(file: &[u8]) -> Option<Vec<u8>> {
    if file.len() as u64 > MAX_LEN {
        return None;
    }
    let mut out = (file.len() as u64).to_le_bytes().to_vec();
    let sectors: Vec<(usize, &[u8])> = file
        .chunks(512)
        .enumerate()
        .filter(|(_, s)| s.iter().any(|&b| b != 0))
        .map(|(i, s)| (i * 512, s))
        .collect();
    let mut i = 0;
    while i < sectors.len() {
        let start = sectors[i].0;
        let mut end = start + sectors[i].1.len();
        i += 1;
        while i < sectors.len() && sectors[i].0 == end && end - start < 127 * 512 {
            end += sectors[i].1.len();
            i += 1;
        }
        out.extend_from_slice(&u32::try_from(start).ok()?.to_le_bytes());
        out.extend_from_slice(&u16::try_from(end - start).ok()?.to_le_bytes());
        out.extend_from_slice(&file[start..end]);
    }
    Some(out)
}
