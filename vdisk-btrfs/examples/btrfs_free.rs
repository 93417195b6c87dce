//! Prints what the btrfs analyser says about a raw volume file (no partition table):
//! `cargo run --release -p vdisk-btrfs --example btrfs_free -- volume.img`. With `--runs`,
//! also prints each free range (`start end` in bytes, end exclusive).

use std::time::Instant;

use vdisk_core::fs::FileDevice;
use vdisk_core::{FsAnalyzer, FsVerdict};

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: btrfs_free <raw btrfs volume file> [--runs]")?;
    let runs = std::env::args().any(|a| a == "--runs");
    let device = FileDevice::open(std::path::Path::new(&path))?;
    let start = Instant::now();
    let verdict = vdisk_btrfs::ANALYZER.analyze(&device)?;
    let elapsed = start.elapsed();
    match &verdict {
        FsVerdict::NotMine => println!("{path}: not btrfs"),
        FsVerdict::Untrusted { reason, .. } => println!("{path}: untrusted: {reason}"),
        FsVerdict::Container(_) => println!("{path}: a container of other volumes"),
        FsVerdict::Analysed(usage) | FsVerdict::Guarded { usage, .. } => {
            for (k, v) in &usage.details {
                println!("{k}: {v}");
            }
            println!("free bytes: {}", usage.free_bytes());
            if runs {
                for r in usage.free.runs() {
                    println!("{} {}", r.start, r.end);
                }
            }
        }
        other => println!("{path}: a verdict this example does not know: {other:?}"),
    }
    println!("analysis took {elapsed:?}");
    Ok(())
}
