//! `cargo xtask <task>`: project chores written in Rust instead of shell scripts.
//!
//! Tasks (one module each):
//! - `demo`: build the `vdisk` binary, make a bloated sample VHD and compact it.
//! - `bench`: vdisk's in-place compaction against `qemu-img convert` and `virt-sparsify`.
//! - `fuzz`: the cargo-fuzz targets of `fuzz/`, each for a bounded time.
//! - `mutate`: the mutation fuzzer driving the real `vdisk` binary over mutated images.
//! - `windows`: `vdisk.exe` built with Debian's rustc-web and tested under Wine.
//! - `macos-check`: `cargo check` for both macOS targets.
//! - `dist`: the release binaries for Linux and Windows with SHA-256 checksums.
//! - `help`: every task's options (`cargo xtask help [TASK]`, `cargo xtask TASK --help`).
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod dist;
mod fuzz;
mod help;
mod mutate;
mod shared;
mod windows;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str);
    if let Some(text) = task
        .filter(|_| help::asked(&args[1..]))
        .and_then(help::task)
    {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    let result = match task {
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        // Timed by `bench` as a peer; not for direct use.
        Some("bench-floor") => bench::floor(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("mutate") => mutate::run(&args[1..]),
        Some("windows") => windows::run(&args[1..]),
        Some("macos-check") => windows::macos_check(),
        Some("dist") => dist::run(&args[1..]),
        Some("help" | "-h" | "--help") => match args.get(1) {
            None => {
                println!("{}", help::overview());
                Ok(())
            }
            Some(name) => help::task(name)
                .map(|text| println!("{text}"))
                .ok_or_else(|| format!("no task {name:?}\n\n{}", help::overview())),
        },
        Some(other) => Err(format!("unknown task {other:?}\n\n{}", help::overview())),
        None => Err(help::overview()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
