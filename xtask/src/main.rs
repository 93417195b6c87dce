//! `cargo xtask <task>`: project chores written in Rust instead of shell scripts.
//!
//! Tasks (one module each):
//! - `demo`: build the `vdisk` binary, make a bloated sample VHD and compact it.
//! - `bench`: vdisk's in-place compaction against `qemu-img convert`, same process.
//! - `fuzz`: the cargo-fuzz targets of `fuzz/`, each for a bounded time.
//! - `mutate`: the mutation fuzzer driving the real `vdisk` binary over mutated images.
//! - `windows`: `vdisk.exe` built with Debian's rustc-web and tested under Wine.
//! - `macos-check`: `cargo check` for both macOS targets.
//! - `dist`: the release binaries for Linux and Windows with SHA-256 checksums.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod dist;
mod fuzz;
mod mutate;
mod shared;
mod windows;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  demo [--keep]   build vdisk, make a bloated sample VHD, show info/compact/check on it
                  (--keep leaves the temporary folder in place)
  bench [--quick] [--runs N] [--out DIR]
                  vdisk compact against qemu-img convert on reference images; writes
                  bench.json and bench.md into DIR (default <target>/bench)
  bench-floor FILE FROM TO LEN AFTER
                  (run by bench) copy LEN bytes FROM -> TO inside FILE, sync, truncate to
                  AFTER: the least I/O an in-place compaction moving LEN bytes does
  fuzz [--time SECS] [TARGET]
                  write seed corpora, run each cargo-fuzz target (vhd_open, vhdx_open) for
                  SECS seconds (default 60), print executions and crashes per target
  mutate [--time SECS | --cases N] [--seed N] [--format vhd|vhdx|all] [--keep DIR]
         [--case N] [--workers N] [--vdisk PATH]
                  mutate VHD/VHDX seeds (made by qemu and vdisk) field by field and run
                  info, check, compact --dry-run and compact in every mode of the release
                  vdisk on each (default 60 s, seed 1, all formats, 2 workers): no hang,
                  panic, signal or memory blow-up; failed runs leave the file unchanged;
                  compactions read the same (qemu-img compare, libvhdi for children).
                  --keep writes failing inputs with a repro line; --case replays one case
                  (same --seed and --format); --vdisk uses that binary instead of building
  windows build|test|cli-test [--full]|all
                  with Debian's rustc-web toolchain (-Zbuild-std) into target/windows:
                  build vdisk.exe; run the core and format crates' library tests under
                  wine; run the CLI suite (real vdisk.exe under wine on qemu-made images,
                  checked with qemu-img and libvhdi): the Windows-only cases, --full adds
                  every mode and create cross-checked against the Linux vdisk
  macos-check     cargo check for aarch64-apple-darwin and x86_64-apple-darwin
  dist            release vdisk and vdisk.exe with SHA256SUMS in target/dist";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        // Timed by `bench` as a peer; not for direct use.
        Some("bench-floor") => bench::floor(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("mutate") => mutate::run(&args[1..]),
        Some("windows") => windows::run(&args[1..]),
        Some("macos-check") => windows::macos_check(),
        Some("dist") => dist::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
