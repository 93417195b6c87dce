//! The vdisk command.
fn main() {}
