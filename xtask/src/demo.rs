//! `cargo xtask demo`: the main job, end to end.
//!
//! 1. `cargo build --release -p vdisk-cli` (with the `cargo` that runs us).
//! 2. A bloated sample: a 512 MiB dynamic VHD made with our own library. Of the first 128
//!    blocks, every fifth holds random data; the others were written with data and then
//!    overwritten with zeros (what a guest deleting files and zero-filling free space leaves
//!    behind). The rest of the disk was never written.
//! 3. `vdisk info`, `compact --dry-run`, `compact`, `info`, `check` on it, commands echoed.
//! 4. The content is read back through the library and compared with what was written.

use std::path::Path;
use std::process::Command;

use vdisk_core::{Access, CreateSpec, FormatDriver, ImageKind, OpenOptions, StdFile};

use crate::shared::{build_vdisk, fill_random};

/// Virtual size of the sample disk.
const VIRTUAL_SIZE: u64 = 512 << 20;
/// Block size of the sample (the VHD default).
const BLOCK: u64 = 2 << 20;
/// Blocks written at all.
const WRITTEN_BLOCKS: u64 = 128;

/// What a block of the sample holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Random bytes from a seed.
    Data(u64),
    /// Written, then overwritten with zeros.
    Zeroed,
    /// Never written.
    Untouched,
}

fn content(block: u64) -> Content {
    if block >= WRITTEN_BLOCKS {
        Content::Untouched
    } else if block.is_multiple_of(5) {
        Content::Data(block + 1)
    } else {
        Content::Zeroed
    }
}

/// Runs the demo.
pub fn run(args: &[String]) -> Result<(), String> {
    let keep = match args {
        [] => false,
        [k] if k == "--keep" => true,
        _ => return Err(format!("demo takes no arguments but --keep, got {args:?}")),
    };
    let vdisk = build_vdisk()?;
    let dir = std::env::temp_dir().join(format!("vdisk-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = demo_in(&vdisk, &dir);
    if keep {
        println!("\nthe sample stays in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo_in(vdisk: &Path, dir: &Path) -> Result<(), String> {
    let image = dir.join("bloated.vhd");
    println!("== making a bloated sample: {}", image.display());
    make_sample(&image).map_err(|e| format!("making the sample failed: {e}"))?;
    let before = file_len(&image)?;

    for args in [
        &["info"][..],
        &["compact", "--dry-run"],
        &["compact"],
        &["info"],
        &["check"],
    ] {
        run_vdisk(vdisk, args, &image)?;
    }

    let after = file_len(&image)?;
    verify_content(&image).map_err(|e| format!("content check failed: {e}"))?;
    println!(
        "\n== summary: {} -> {} bytes ({:.1} MiB -> {:.1} MiB, {:.0}% smaller); \
         all {} MiB of virtual content read back identical",
        before,
        after,
        before as f64 / f64::from(1 << 20),
        after as f64 / f64::from(1 << 20),
        100.0 * (1.0 - after as f64 / before.max(1) as f64),
        VIRTUAL_SIZE >> 20
    );
    Ok(())
}

fn file_len(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))
}

/// Creates the sample with the project's own VHD driver.
fn make_sample(path: &Path) -> vdisk_core::Result<()> {
    let file = StdFile::create_new(path)?;
    let spec = CreateSpec::new(ImageKind::Dynamic, VIRTUAL_SIZE).block_size(BLOCK);
    let image = vdisk_vhd::DRIVER.create(Box::new(file), &spec)?;
    let mut data = vec![0u8; usize::try_from(BLOCK).unwrap_or(2 << 20)];
    let zeros = vec![0u8; data.len()];
    let (mut with_data, mut zeroed) = (0, 0);
    for block in 0..WRITTEN_BLOCKS {
        let offset = block * BLOCK;
        match content(block) {
            Content::Data(seed) => {
                fill_random(&mut data, seed);
                image.write_at(&data, offset)?;
                with_data += 1;
            }
            Content::Zeroed => {
                fill_random(&mut data, block + 1000);
                image.write_at(&data, offset)?;
                image.write_at(&zeros, offset)?;
                zeroed += 1;
            }
            Content::Untouched => {}
        }
    }
    image.flush()?;
    println!(
        "   {} MiB virtual, {} MiB blocks: {with_data} with random data, {zeroed} written and then \
         zeroed, {} never written",
        VIRTUAL_SIZE >> 20,
        BLOCK >> 20,
        VIRTUAL_SIZE / BLOCK - WRITTEN_BLOCKS
    );
    Ok(())
}

/// Runs `vdisk ARGS FILE`, echoing the command; fails unless it exits 0.
fn run_vdisk(vdisk: &Path, args: &[&str], image: &Path) -> Result<(), String> {
    let name = image.file_name().map_or_else(
        || image.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    println!("\n$ vdisk {} {name}", args.join(" "));
    let status = Command::new(vdisk)
        .args(args)
        .arg(&name)
        .current_dir(image.parent().unwrap_or(Path::new(".")))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", vdisk.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`vdisk {}` failed ({status})", args.join(" ")))
    }
}

/// Reads every block back through the library and compares it with what was written.
fn verify_content(path: &Path) -> Result<(), String> {
    let file = StdFile::open(path, Access::ReadOnly).map_err(|e| e.to_string())?;
    let image = vdisk_vhd::DRIVER
        .open(Box::new(file), &OpenOptions::read_only())
        .map_err(|e| e.to_string())?;
    let len = usize::try_from(BLOCK).unwrap_or(2 << 20);
    let (mut got, mut want) = (vec![0u8; len], vec![0u8; len]);
    for block in 0..VIRTUAL_SIZE / BLOCK {
        image
            .read_at(&mut got, block * BLOCK)
            .map_err(|e| e.to_string())?;
        match content(block) {
            Content::Data(seed) => fill_random(&mut want, seed),
            Content::Zeroed | Content::Untouched => want.fill(0),
        }
        if got != want {
            return Err(format!("block {block} reads differently after compaction"));
        }
    }
    Ok(())
}
