//! The `vdisk` command: inspect, check, create and compact VHD/VHDX images.
//!
//! ```text
//!   main ─► cli (clap) ─► commands::{info, compact, create, check}
//!                              │ registry::registry()   (the one list of format drivers)
//!                              │ registry::analyzers()  (the one list of file systems)
//!                              │ cli.parent_policy()    (--parent, --parent-dir → every open)
//!                              │ registry::toolkit()    (both, for core's compact_path)
//!                              │ progress::Bar          (indicatif, stderr, terminals only)
//!                              │ batch (compact -r/--jobs/--report: walk, threshold, rows)
//!                              ▼
//!                         report (human lines / JSON Lines) · exit (ErrorKind → exit code)
//! ```
#![forbid(unsafe_code)]

mod batch;
mod cli;
mod commands;
mod exit;
mod host_space;
mod progress;
mod registry;
mod report;
mod volumes;

use std::process::ExitCode;

use vdisk_core::CancelToken;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // Before any thread starts (they inherit the signal mask): a file-size limit then makes
    // writes fail with "no space" (exit 7) instead of killing the process without a word.
    if let Err(e) = vdisk_core::survive_file_size_limit() {
        report::err(&format!("vdisk: note: {e}"));
    }
    let cli = Cli::parse_with_formats(&registry::known_ids(&registry::supported()));
    let registry = registry::registry();
    let parents = cli.parent_policy();
    let code = match &cli.command {
        Command::Info(args) => commands::info::run(args, &registry, &parents),
        Command::Check(args) => commands::check::run(args, &registry, &parents),
        Command::Map(args) => commands::map::run(args, &registry, &parents),
        Command::Create(args) => commands::create::run(args, &registry::supported(), &parents),
        Command::Compact(args) => {
            let cancel = CancelToken::new();
            install_interrupt_handler(&cancel);
            commands::compact::run(args, &registry::toolkit(), &parents, &cancel)
        }
    };
    ExitCode::from(code)
}

/// Ctrl-C, SIGTERM and SIGHUP trip `cancel`: the compactor stops at the next block boundary,
/// leaving a valid image. A second signal exits at once (the image is valid at every step).
fn install_interrupt_handler(cancel: &CancelToken) {
    let token = cancel.clone();
    let installed = ctrlc::set_handler(move || {
        if token.is_cancelled() {
            report::err(
                "vdisk: interrupted again; exiting now (the image is valid; run the same command again to finish)",
            );
            std::process::exit(i32::from(exit::CANCELLED));
        }
        token.cancel();
        report::err(
            "vdisk: stopping at the next safe point (press Ctrl-C again to exit at once; the image stays valid)",
        );
    });
    if let Err(e) = installed {
        report::err(&format!(
            "vdisk: note: cannot catch Ctrl-C ({e}); interrupting still leaves a valid image"
        ));
    }
}
