//! The formats and file systems this build of `vdisk` knows. Adding a format is one line in
//! [`DRIVERS`]; adding a file system one line in [`ANALYZERS`].

use vdisk_core::{
    Confidence, DiskImage, Error, ErrorKind, FormatDriver, FsAnalyzer, HostFile, OpenOptions,
    Registry, Result, Toolkit,
};

/// Every supported format driver, in detection priority order.
static DRIVERS: &[&dyn FormatDriver] = &[
    &vdisk_vhd::DRIVER,
    &vdisk_vhdx::DRIVER,
    &vdisk_vdi::DRIVER,
    &vdisk_qcow2::DRIVER,
];

/// Every file-system analyser, tried in this order on each volume; the first that recognises
/// a volume decides about it.
static ANALYZERS: &[&dyn FsAnalyzer] = &[
    &vdisk_ntfs::ANALYZER,
    &vdisk_lvm::ANALYZER,
    &vdisk_ext4::ANALYZER,
    &vdisk_xfs::ANALYZER,
    &vdisk_btrfs::ANALYZER,
    &vdisk_fat::ANALYZER,
    &vdisk_exfat::ANALYZER,
    &vdisk_swap::ANALYZER,
];

/// The file-system analysers `compact` and `info` use.
pub fn analyzers() -> &'static [&'static dyn FsAnalyzer] {
    ANALYZERS
}

/// Formats recognised by their signature only, so that a healthy image of a format this build
/// cannot handle is called unsupported (exit 5), not "not a disk image" (exit 4). They come
/// after [`DRIVERS`] in detection, so a real driver for the same format always wins. A bare
/// magic number is only [`Confidence::Maybe`]: the same bytes are guest data at the start of a
/// fixed VHD, whose proven footer ([`Confidence::Likely`]) must win.
static RECOGNISED_ONLY: [Foreign; 1] = [Foreign::new("vmdk", "VMDK (sparse)", 0, b"KDMV")];

/// The registry used to open and check files: the supported drivers, then the formats only
/// recognised.
pub fn registry() -> Registry {
    let mut all: Vec<&'static dyn FormatDriver> = DRIVERS.to_vec();
    all.extend(
        RECOGNISED_ONLY
            .iter()
            .map(|f| f as &'static dyn FormatDriver),
    );
    Registry::new(&all)
}

/// The formats of [`registry`] and the file systems of [`analyzers`], for core's compaction
/// entry point.
pub fn toolkit() -> Toolkit {
    Toolkit::new(registry(), ANALYZERS)
}

/// The registry of formats that can really be created and opened.
pub fn supported() -> Registry {
    Registry::new(DRIVERS)
}

/// The ids of the registered formats, for messages ("vhd, vhdx").
pub fn known_ids(registry: &Registry) -> String {
    let ids: Vec<&str> = registry.drivers().iter().map(|d| d.id()).collect();
    ids.join(", ")
}

/// A format known only by its signature: it is detected, and every operation on it fails with
/// [`ErrorKind::Unsupported`].
#[derive(Debug)]
struct Foreign {
    id: &'static str,
    name: &'static str,
    offset: u64,
    magic: &'static [u8],
}

impl Foreign {
    const fn new(id: &'static str, name: &'static str, offset: u64, magic: &'static [u8]) -> Self {
        Foreign {
            id,
            name,
            offset,
            magic,
        }
    }
}

impl FormatDriver for Foreign {
    fn id(&self) -> &'static str {
        self.id
    }

    fn extensions(&self) -> &'static [&'static str] {
        &[]
    }

    fn probe(&self, file: &dyn HostFile) -> Result<Confidence> {
        let end = self.offset + self.magic.len() as u64;
        if file.len()? < end {
            return Ok(Confidence::No);
        }
        let mut buf = [0u8; 8];
        let buf = &mut buf[..self.magic.len().min(8)];
        file.read_at(buf, self.offset)?;
        Ok(if *buf == *self.magic {
            Confidence::Maybe
        } else {
            Confidence::No
        })
    }

    fn open(&self, _file: Box<dyn HostFile>, _opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "this is a {} image; this version of vdisk does not support {} images yet",
                self.name, self.name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk_core::MemFile;

    #[test]
    fn a_vmdk_signature_is_unsupported_not_invalid() {
        let mut bytes = vec![0u8; 4096];
        bytes[..4].copy_from_slice(b"KDMV");
        let file = MemFile::from_bytes(bytes);
        let driver = registry().detect(&file).unwrap();
        let opened = driver.open(Box::new(file), &OpenOptions::read_only());
        assert_eq!(opened.err().map(|e| e.kind()), Some(ErrorKind::Unsupported));
    }

    #[test]
    fn garbage_is_still_not_an_image() {
        let file = MemFile::from_bytes(vec![7u8; 4096]);
        let err = registry().detect(&file).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidImage);
    }

    #[test]
    fn recognised_only_formats_cannot_be_created() {
        assert!(supported().by_id("vhd").is_some());
        assert!(supported().by_id("qcow2").is_some());
        assert!(supported().by_id("vmdk").is_none());
    }
}
