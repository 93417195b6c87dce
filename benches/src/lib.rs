//! Benchmarks live in benches/main.rs.
