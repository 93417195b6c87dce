//! Pieces the tasks share: building the `vdisk` binary and deterministic sample data.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory cargo uses (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf);
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_relative() { root.join(t) } else { t })
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the release binary with the `cargo` running us and returns its path.
pub fn build_vdisk() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("== cargo build --release -p vdisk-cli");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "vdisk-cli"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    let exe = target_dir()
        .join("release")
        .join(format!("vdisk{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "built, but {} is missing (is the target directory configured elsewhere?)",
            exe.display()
        ))
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): no dependency, same every run.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}
