//! Running the external tools tests use as oracles (qemu-img, e2fsprogs, ...).

use std::process::Command;

/// Runs `program` (from the Debian package `package`) with `args` and returns its stdout.
/// Panics if it is missing (a test that needs a tool fails, never skips) or fails, with its
/// output.
#[track_caller]
pub fn run_tool(program: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is missing ({e}): install the {package} package"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
