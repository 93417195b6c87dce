//! One module per subcommand; each returns the process exit code.

pub mod check;
pub mod compact;
pub mod create;
pub mod info;
pub mod map;
