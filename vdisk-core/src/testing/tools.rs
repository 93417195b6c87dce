//! Running the external tools tests use as oracles (qemu-img, e2fsprogs, ...).

use std::process::{Command, Output};

/// Runs `program` (from the Debian package `package`) with `args` and returns its stdout.
/// Panics if it is missing (a test that needs a tool fails, never skips) or fails, with its
/// output.
#[track_caller]
pub fn run_tool(program: &str, package: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = tool_succeeds(&mut cmd, package);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` (its program from the Debian package `package`) and returns its output,
/// whatever its exit status. Panics only if the program cannot be started: a test that needs
/// a tool fails, never skips.
#[track_caller]
pub fn tool_output(cmd: &mut Command, package: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): install the {package} package",
            cmd.get_program().to_string_lossy()
        )
    })
}

/// Runs `cmd` as [`tool_output`] does and panics, with its output, unless it succeeds.
#[track_caller]
pub fn tool_succeeds(cmd: &mut Command, package: &str) -> Output {
    let out = tool_output(cmd, package);
    assert!(
        out.status.success(),
        "{} {:?} failed: {}{}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
