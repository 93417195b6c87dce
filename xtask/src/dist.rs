//! `cargo xtask dist`: the release binaries users download, with their checksums.
//!
//! Writes into `<target>/dist/`: `vdisk` (Linux x86-64, built by the default toolchain),
//! `vdisk.exe` (Windows x86-64, built by `rustc-web` for `x86_64-pc-windows-gnu`, see
//! `windows`), both stripped of symbols and debug info (the release profile keeps line tables
//! for backtraces in development; unstripped, vdisk.exe is 29 MiB instead of 5), and
//! `SHA256SUMS` in the format `sha256sum --check` reads.

use std::path::Path;
use std::process::Command;

use crate::shared::{build_vdisk, target_dir};
use crate::windows::{TARGET, debian_cargo, require, run_status, windows_dir};

/// Builds both binaries in release mode, copies them and writes the checksums.
pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err("usage: cargo xtask dist".into());
    }
    require("sha256sum", "coreutils")?;
    require("strip", "binutils")?;
    require("x86_64-w64-mingw32-strip", "binutils-mingw-w64-x86-64")?;
    let linux = build_vdisk()?;
    println!("== dist: cargo build --release --target {TARGET} (rustc-web, -Zbuild-std)");
    require("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64")?;
    let mut cmd = debian_cargo(&windows_dir())?;
    cmd.args([
        "build",
        "--release",
        "-Zbuild-std=std,panic_abort",
        "--target",
        TARGET,
    ])
    .args(["-p", "vdisk-cli", "--bin", "vdisk"])
    .env(
        "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER",
        "x86_64-w64-mingw32-gcc",
    );
    run_status(&mut cmd, "cargo build --release for windows")?;
    let exe = windows_dir().join(TARGET).join("release/vdisk.exe");
    let dist = target_dir().join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    for (from, name, strip) in [
        (linux.as_path(), "vdisk", "strip"),
        (exe.as_path(), "vdisk.exe", "x86_64-w64-mingw32-strip"),
    ] {
        let to = dist.join(name);
        copy(from, &to)?;
        run_status(Command::new(strip).arg(&to), strip)?;
    }
    let out = Command::new("sha256sum")
        .args(["vdisk", "vdisk.exe"])
        .current_dir(&dist)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum failed ({})", out.status));
    }
    let sums = dist.join("SHA256SUMS");
    std::fs::write(&sums, &out.stdout).map_err(|e| format!("{}: {e}", sums.display()))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("== dist: {}", dist.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}
