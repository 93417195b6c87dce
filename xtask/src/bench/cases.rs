//! The reference images: what each bench case holds, and making it with our own drivers.

use std::path::Path;

use vdisk_core::{CreateSpec, FormatDriver, HostFile, ImageKind, StdFile};

use super::ntfs;

use crate::shared::fill_random;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The image format of a case, as our drivers and qemu-img name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vhd,
    Vhdx,
}

impl Format {
    /// File extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
        }
    }

    /// qemu-img's name for the format.
    pub fn qemu(self) -> &'static str {
        match self {
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
        }
    }

    /// `-o` options that make qemu-img write the same kind of image we benchmark.
    pub fn qemu_options(self) -> &'static str {
        match self {
            // qemu's vpc writes 2 MiB blocks, the VHD default; it has no block_size option.
            Format::Vhd => "subformat=dynamic",
            Format::Vhdx => "subformat=dynamic,block_size=32M",
        }
    }
}

/// Which blocks hold what.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// Every fourth block random data, the next one written and then zeroed, the rest never
    /// written: 25% data, 25% zeroed, 50% untouched.
    Mixed,
    /// `data` bytes of random data in whole blocks, spread evenly over the disk.
    Spread { data: u64 },
    /// An NTFS volume over the whole disk, made over random bytes (`mkntfs -Q` does not zero),
    /// with `files` bytes of random files copied in (`ntfscp`): the rest is free space full of
    /// garbage that only a file-system-aware compaction can reclaim.
    Ntfs { files: u64 },
}

/// One bench case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub format: Format,
    pub virtual_size: u64,
    pub block: u64,
    pub layout: Layout,
    /// `vdisk compact --mode` for this case.
    pub mode: &'static str,
    /// Whether `qemu-img convert` is timed too (it cannot see file-system free space, so a
    /// comparison on a case made for that would say nothing).
    pub peer: bool,
    /// Printed with the case (what the numbers do and do not show yet).
    pub note: &'static str,
}

/// What one block of a case holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Random bytes from a seed.
    Data(u64),
    /// Written with data, then overwritten with zeros.
    Zeroed,
    /// Never written.
    Untouched,
}

impl Case {
    fn blocks(&self) -> u64 {
        self.virtual_size.div_ceil(self.block)
    }

    fn content(&self, block: u64) -> Content {
        match self.layout {
            Layout::Mixed => match block % 4 {
                0 => Content::Data(block + 1),
                1 => Content::Zeroed,
                _ => Content::Untouched,
            },
            Layout::Ntfs { .. } => Content::Data(block + 1),
            Layout::Spread { data } => {
                let wanted = (data / self.block).max(1);
                let stride = (self.blocks() / wanted).max(1);
                if block.is_multiple_of(stride) && block / stride < wanted {
                    Content::Data(block + 1)
                } else {
                    Content::Untouched
                }
            }
        }
    }

    /// A one-line description for the report.
    pub fn describe(&self) -> String {
        if let Layout::Ntfs { files } = self.layout {
            let used = files as f64 / self.virtual_size as f64 * 100.0;
            return format!(
                "{} dynamic, {} virtual, {} MiB blocks: NTFS over random bytes, {} MiB of files \
                 ({used:.0}% used), free space is garbage; --mode {}{}",
                self.format.ext(),
                human(self.virtual_size),
                self.block / MIB,
                files / MIB,
                self.mode,
                self.note
            );
        }
        let (data, zeroed) = (0..self.blocks()).fold((0, 0), |(d, z), b| match self.content(b) {
            Content::Data(_) => (d + 1, z),
            Content::Zeroed => (d, z + 1),
            Content::Untouched => (d, z),
        });
        format!(
            "{} dynamic, {} virtual, {} MiB blocks: {} MiB data, {} MiB zeroed, rest never written",
            self.format.ext(),
            human(self.virtual_size),
            self.block / MIB,
            data * self.block / MIB,
            zeroed * self.block / MIB
        )
    }

    /// Writes the pristine image to `path` with our own driver (scratch files go to `work`).
    pub fn make(&self, path: &Path, work: &Path) -> Result<(), String> {
        if let Layout::Ntfs { files } = self.layout {
            let raw = work.join(format!("{}.raw", self.name));
            ntfs::make_volume(&raw, self.virtual_size, files, work)?;
            let done = self.copy_raw(&raw, path).map_err(|e| e.to_string());
            let _ = std::fs::remove_file(&raw);
            return done;
        }
        self.make_blocks(path).map_err(|e| e.to_string())
    }

    /// The image of a raw disk: every block written (none of them is zero).
    fn copy_raw(&self, raw: &Path, path: &Path) -> vdisk_core::Result<()> {
        let src = StdFile::open(raw, vdisk_core::Access::ReadOnly)?;
        let image = self.create(path)?;
        let mut buf = vec![0u8; usize::try_from(self.block).unwrap_or(32 << 20)];
        for block in 0..self.blocks() {
            let offset = block * self.block;
            let n = usize::try_from(self.block.min(self.virtual_size - offset)).unwrap_or(0);
            src.read_at(&mut buf[..n], offset)?;
            image.write_at(&buf[..n], offset)?;
        }
        image.flush()
    }

    fn create(&self, path: &Path) -> vdisk_core::Result<Box<dyn vdisk_core::DiskImage>> {
        let file = StdFile::create_new(path)?;
        let spec = CreateSpec::new(ImageKind::Dynamic, self.virtual_size).block_size(self.block);
        let driver: &dyn FormatDriver = match self.format {
            Format::Vhd => &vdisk_vhd::DRIVER,
            Format::Vhdx => &vdisk_vhdx::DRIVER,
        };
        driver.create(Box::new(file), &spec)
    }

    fn make_blocks(&self, path: &Path) -> vdisk_core::Result<()> {
        let image = self.create(path)?;
        let mut data = vec![0u8; usize::try_from(self.block).unwrap_or(32 << 20)];
        let zeros = vec![0u8; data.len()];
        for block in 0..self.blocks() {
            let offset = block * self.block;
            match self.content(block) {
                Content::Data(seed) => {
                    fill_random(&mut data, seed);
                    image.write_at(&data, offset)?;
                }
                Content::Zeroed => {
                    fill_random(&mut data, block + 1_000_000);
                    image.write_at(&data, offset)?;
                    image.write_at(&zeros, offset)?;
                }
                Content::Untouched => {}
            }
        }
        image.flush()
    }
}

/// The cases, full size or `--quick` size.
pub fn all(quick: bool) -> Vec<Case> {
    let pick = |full: u64, small: u64| if quick { small } else { full };
    let spread = Layout::Spread {
        data: pick(GIB, 128 * MIB),
    };
    let ntfs_size = pick(2 * GIB, 256 * MIB);
    let base = Case {
        name: "",
        format: Format::Vhdx,
        virtual_size: 0,
        block: 32 * MIB,
        layout: Layout::Mixed,
        mode: "prezeroed",
        peer: true,
        note: "",
    };
    vec![
        Case {
            name: "a-vhdx-mixed",
            format: Format::Vhdx,
            virtual_size: pick(8 * GIB, GIB),
            block: 32 * MIB,
            layout: Layout::Mixed,
            ..base
        },
        Case {
            name: "b-vhd-mixed",
            format: Format::Vhd,
            virtual_size: pick(8 * GIB, GIB),
            block: 2 * MIB,
            layout: Layout::Mixed,
            ..base
        },
        Case {
            name: "c-vhdx-huge",
            format: Format::Vhdx,
            virtual_size: pick(2048 * GIB, 256 * GIB),
            block: 32 * MIB,
            layout: spread,
            ..base
        },
        Case {
            name: "c-vhdx-small",
            format: Format::Vhdx,
            virtual_size: pick(16 * GIB, 2 * GIB),
            block: 32 * MIB,
            layout: spread,
            ..base
        },
        Case {
            name: "d-vhdx-ntfs",
            format: Format::Vhdx,
            virtual_size: ntfs_size,
            block: 32 * MIB,
            layout: Layout::Ntfs {
                files: ntfs_size / 10 * 3,
            },
            mode: "full",
            peer: false,
            note: " (checked by reading every file back with ntfscat)",
        },
    ]
}

/// "8 GiB", "2 TiB", "512 MiB".
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 40 && bytes.is_multiple_of(1 << 40) {
        format!("{} TiB", bytes >> 40)
    } else if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
