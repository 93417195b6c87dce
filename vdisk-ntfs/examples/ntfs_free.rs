//! Prints what the NTFS analyser says about a raw volume file (no partition table):
//! `cargo run --release -p vdisk-ntfs --example ntfs_free -- volume.img`.

use std::time::Instant;

use vdisk_core::fs::FileDevice;
use vdisk_core::{FsAnalyzer, FsVerdict};

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: ntfs_free <raw ntfs volume file>")?;
    let device = FileDevice::open(std::path::Path::new(&path))?;
    let start = Instant::now();
    let verdict = vdisk_ntfs::ANALYZER.analyze(&device)?;
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
        other => println!("{path}: a verdict this example does not know: {other:?}"),
    }
    println!("analysis took {elapsed:?}");
    Ok(())
}
