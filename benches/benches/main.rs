//! Criterion benches.
fn main() {}
