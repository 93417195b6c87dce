//! `cargo xtask windows build|test|cli-test` and `cargo xtask macos-check`: vdisk for other
//! hosts, built on this Linux machine with Debian's `rustc-web` toolchain, which compiles the
//! standard library for any target (`-Zbuild-std`), and run under Wine.
//!
//! ```text
//!   /usr/bin/cargo (rustc-web 1.96, RUSTC_BOOTSTRAP=1, -Zbuild-std=std,panic_abort)
//!        │ --target x86_64-pc-windows-gnu, linker x86_64-w64-mingw32-gcc, --profile windows
//!        ▼
//!   target/windows/   (its own target dir: the rustup toolchain's target/ is never touched)
//!        ├─ x86_64-pc-windows-gnu/windows/vdisk.exe    build, test, cli-test
//!        ├─ x86_64-pc-windows-gnu/windows/deps/*.exe   test (cargo's runner: wine64)
//!        ├─ {aarch64,x86_64}-apple-darwin/             macos-check (metadata only)
//!        ├─ harness/holder.exe, bcryptprimitives.dll   test helpers, mingw-built, never shipped
//!        └─ wine/                                      the Wine prefix (WINEARCH=win64)
//! ```
//!
//! Everything here uses the `windows` profile (workspace Cargo.toml: opt-level 1, no
//! debuginfo), so the standard library, the dependencies and the host code (build scripts,
//! proc-macros) are compiled once for `vdisk.exe`, the library tests and the macOS check.

mod cli;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::shared::target_dir;

/// The Windows target triple.
pub const TARGET: &str = "x86_64-pc-windows-gnu";
/// The Debian toolchain's cargo and rustc (packages cargo-web, rustc-web).
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
/// The standard library's source (package rust-web-src).
const STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
/// The mingw C compiler and linker (package gcc-mingw-w64-x86-64).
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
/// Wine's 64-bit loader (package wine64).
const WINE: &str = "/usr/lib/wine/wine64";
/// Wine's server (package wine64).
const WINESERVER: &str = "/usr/lib/wine/wineserver";
/// The crates whose library tests run under Wine: the core and the formats.
/// The file-system crates read bytes through core's traits and hold no host code; their tests
/// run on Linux only.
const TESTED_CRATES: [&str; 4] = ["vdisk-core", "vdisk-vhd", "vdisk-vhdx", "vdisk-vdi"];
/// The cargo profile of everything built for Windows here (workspace Cargo.toml): vdisk.exe
/// and the library tests share one compilation of the standard library and the dependencies.
const PROFILE: &str = "windows";

/// `cargo xtask windows ...`.
pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("build") => build_vdisk_exe().map(|exe| println!("{}", exe.display())),
        Some("test") => lib_tests(),
        Some("cli-test") => cli::run(args.get(1).map(String::as_str) == Some("--full")),
        Some("all") => {
            lib_tests()?;
            cli::run(true)
        }
        _ => Err(crate::help::task("windows").unwrap_or_default()),
    }
}

/// The target directory for everything built here.
pub fn windows_dir() -> PathBuf {
    target_dir().join("windows")
}

/// Fails with a message naming the package when a tool is missing (CI must fail, not skip).
pub fn require(tool: &str, package: &str) -> Result<(), String> {
    let found = if tool.contains('/') {
        Path::new(tool).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(format!("{tool} is missing (apt-get install -y {package})"))
    }
}

/// A `cargo` of the Debian toolchain, set up to build the standard library for `target` into
/// `target_dir`.
pub fn debian_cargo(target_dir: &Path) -> Result<Command, String> {
    require(DEBIAN_CARGO, "cargo-web")?;
    require(DEBIAN_RUSTC, "rustc-web")?;
    if !Path::new(STD_SRC).join("std/Cargo.toml").is_file() {
        return Err(format!(
            "the standard library's source is missing at {STD_SRC} (apt-get install -y rust-web-src)"
        ));
    }
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", DEBIAN_RUSTDOC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("__CARGO_TESTS_ONLY_SRC_ROOT", STD_SRC)
        .env("CARGO_TARGET_DIR", target_dir)
        // The rustup proxy's settings must not leak into the Debian toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTFLAGS");
    Ok(cmd)
}

/// `cargo <sub> -Zbuild-std --target x86_64-pc-windows-gnu --profile windows ...` with mingw as
/// the linker.
fn windows_cargo(sub: &str) -> Result<Command, String> {
    require(MINGW_GCC, "gcc-mingw-w64-x86-64")?;
    let mut cmd = debian_cargo(&windows_dir())?;
    cmd.args([sub, "-Zbuild-std=std,panic_abort", "--target", TARGET])
        .args(["--profile", PROFILE])
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER", MINGW_GCC);
    Ok(cmd)
}

/// Runs `cmd`, failing with `what` if it does not succeed.
pub fn run_status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Builds `vdisk.exe` (profile `windows`) and returns its path.
pub fn build_vdisk_exe() -> Result<PathBuf, String> {
    println!("== windows: build vdisk.exe ({TARGET}, rustc-web, -Zbuild-std)");
    run_status(
        windows_cargo("build")?.args(["-p", "vdisk-cli", "--bin", "vdisk"]),
        "cargo build for windows",
    )?;
    let exe = windows_dir().join(TARGET).join(PROFILE).join("vdisk.exe");
    exe.is_file()
        .then_some(exe.clone())
        .ok_or_else(|| format!("built, but {} is missing", exe.display()))
}

/// The library tests of the core and format crates, built for Windows and run by cargo with
/// Wine as the runner.
fn lib_tests() -> Result<(), String> {
    let wine = Wine::prepare()?;
    println!(
        "== windows: library tests of {} under wine",
        TESTED_CRATES.join(", ")
    );
    let mut cmd = windows_cargo("test")?;
    for krate in TESTED_CRATES {
        cmd.args(["-p", krate]);
    }
    // Every crate's tests run and report, even after one crate fails.
    cmd.args(["--lib", "--no-fail-fast"])
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER", WINE);
    wine.configure(&mut cmd);
    run_status(&mut cmd, "the windows library tests")
}

/// A Wine prefix of our own with the test-harness DLL in place, and the helper programs.
pub struct Wine {
    prefix: PathBuf,
    /// `holder.exe`: holds a file open for writing, sharing only reading.
    pub holder: PathBuf,
}

impl Wine {
    /// Makes the prefix (once), builds the shim DLL and the holder, and installs the shim.
    pub fn prepare() -> Result<Wine, String> {
        require(WINE, "wine64")?;
        require(MINGW_GCC, "gcc-mingw-w64-x86-64")?;
        let dir = windows_dir();
        let harness = dir.join("harness");
        std::fs::create_dir_all(&harness).map_err(|e| format!("{}: {e}", harness.display()))?;
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/windows");
        let shim = harness.join("bcryptprimitives.dll");
        run_status(
            Command::new(MINGW_GCC)
                .args(["-O2", "-shared", "-o"])
                .arg(&shim)
                .arg(src.join("processprng_shim.c"))
                .arg("-ladvapi32"),
            "building the ProcessPrng shim",
        )?;
        let holder = harness.join("holder.exe");
        run_status(
            Command::new(MINGW_GCC)
                .args(["-O2", "-municode", "-o"])
                .arg(&holder)
                .arg(src.join("holder.c")),
            "building holder.exe",
        )?;
        let wine = Wine {
            prefix: dir.join("wine"),
            holder,
        };
        if !wine.prefix.join("system.reg").is_file() {
            println!(
                "== windows: making the wine prefix {}",
                wine.prefix.display()
            );
            run_status(
                wine.command().arg("wineboot").arg("-i"),
                "wineboot -i (making the wine prefix)",
            )?;
        }
        // One wineserver for the whole run (each Wine process otherwise waits for a new one
        // to start); it exits by itself 30 s after the last Wine process.
        let mut server = Command::new(WINESERVER);
        wine.configure(&mut server);
        // A server already running for this prefix makes it refuse: that one serves us too.
        server
            .arg("-p30")
            .status()
            .map_err(|e| format!("cannot run {WINESERVER}: {e}"))?;
        let system32 = wine.prefix.join("drive_c/windows/system32");
        std::fs::copy(&shim, system32.join("bcryptprimitives.dll"))
            .map_err(|e| format!("cannot install the shim in {}: {e}", system32.display()))?;
        Ok(wine)
    }

    /// Sets the environment every Wine process of ours runs with.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("WINEPREFIX", &self.prefix)
            .env("WINEARCH", "win64")
            .env("WINEDEBUG", "-all")
            // The shim (native) before any builtin; no Mono or Gecko install prompts.
            .env("WINEDLLOVERRIDES", "bcryptprimitives=n,b;mscoree=;mshtml=");
    }

    /// `wine64` with our environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(WINE);
        self.configure(&mut cmd);
        cmd
    }
}

/// `cargo xtask macos-check`: `cargo check` of `vdisk` for both macOS targets in one cargo run
/// (no linker needed), the standard library checked from source. `vdisk-cli` pulls in every
/// crate it ships; checking it alone checks them all. It shares the Windows build's target
/// folder and profile, so the build scripts and proc-macros (host code) built there serve here.
pub fn macos_check() -> Result<(), String> {
    let targets = ["aarch64-apple-darwin", "x86_64-apple-darwin"];
    println!(
        "== macos: cargo check -p vdisk-cli for {}",
        targets.join(", ")
    );
    let mut cmd = debian_cargo(&windows_dir())?;
    cmd.args([
        "check",
        "-Zbuild-std=std",
        "--profile",
        PROFILE,
        "-p",
        "vdisk-cli",
    ])
    .args(targets.iter().flat_map(|t| ["--target", t]));
    run_status(&mut cmd, "cargo check for macos")
}
