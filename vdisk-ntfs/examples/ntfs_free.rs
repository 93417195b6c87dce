//! Prints what the NTFS analyser says about a raw volume file (no partition table):
//! `cargo run --release -p vdisk-ntfs --example ntfs_free -- volume.img`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use vdisk_core::{BlockDevice, Error, FsAnalyzer, FsVerdict, Result};

/// A read-only block device over a raw file.
#[derive(Debug)]
struct RawFile(File, u64);

impl BlockDevice for RawFile {
    fn size(&self) -> u64 {
        self.1
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        vdisk_core::check_range(self.1, offset, buf.len())?;
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(e, "reading the volume").with_offset(offset))
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: ntfs_free <raw ntfs volume file>")?;
    let file = File::open(&path)?;
    let size = file.metadata()?.len();
    let start = Instant::now();
    let verdict = vdisk_ntfs::ANALYZER.analyze(&RawFile(file, size))?;
    let elapsed = start.elapsed();
    match &verdict {
        FsVerdict::NotMine => println!("{path}: not ntfs"),
        FsVerdict::Untrusted { reason, .. } => println!("{path}: untrusted: {reason}"),
        FsVerdict::Container(_) => println!("{path}: a container of other volumes"),
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            if let FsVerdict::Guarded { hazard, .. } = &verdict {
                println!("guarded ({}): {}", hazard.id, hazard.reason);
            }
            for (k, v) in &usage.details {
                println!("{k}: {v}");
            }
            println!("free bytes: {}", usage.free_bytes());
            println!("free ranges: {}", usage.free.len());
        }
    }
    println!("analysis took {elapsed:?}");
    Ok(())
}
