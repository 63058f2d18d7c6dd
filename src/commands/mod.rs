//! The subcommands, as library functions: `main.rs` parses arguments and calls these.

pub mod demo;
pub mod infer;
