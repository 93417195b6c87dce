//! The reference images: what each bench case holds, and making it with our own drivers.

use std::path::Path;

use vdisk_core::{CreateSpec, FormatDriver, ImageKind, StdFile};

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
}

/// One bench case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub format: Format,
    pub virtual_size: u64,
    pub block: u64,
    pub layout: Layout,
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

    /// Writes the pristine image to `path` with our own driver.
    pub fn make(&self, path: &Path) -> vdisk_core::Result<()> {
        let file = StdFile::create_new(path)?;
        let spec = CreateSpec::new(ImageKind::Dynamic, self.virtual_size).block_size(self.block);
        let driver: &dyn FormatDriver = match self.format {
            Format::Vhd => &vdisk_vhd::DRIVER,
            Format::Vhdx => &vdisk_vhdx::DRIVER,
        };
        let image = driver.create(Box::new(file), &spec)?;
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
    vec![
        Case {
            name: "a-vhdx-mixed",
            format: Format::Vhdx,
            virtual_size: pick(8 * GIB, GIB),
            block: 32 * MIB,
            layout: Layout::Mixed,
        },
        Case {
            name: "b-vhd-mixed",
            format: Format::Vhd,
            virtual_size: pick(8 * GIB, GIB),
            block: 2 * MIB,
            layout: Layout::Mixed,
        },
        Case {
            name: "c-vhdx-huge",
            format: Format::Vhdx,
            virtual_size: pick(2048 * GIB, 256 * GIB),
            block: 32 * MIB,
            layout: spread,
        },
        Case {
            name: "c-vhdx-small",
            format: Format::Vhdx,
            virtual_size: pick(16 * GIB, 2 * GIB),
            block: 32 * MIB,
            layout: spread,
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
