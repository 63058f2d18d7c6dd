//! The subcommands, as library functions: `main.rs` parses arguments and calls these.

pub mod bench;
pub mod calibrate;
pub mod capture;
pub mod check;
pub mod control;
pub mod demo;
pub mod eval;
pub mod infer;
pub mod run;
pub mod version;
