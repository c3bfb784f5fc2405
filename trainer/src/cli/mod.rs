//! The subcommands, grouped by what they work on; `main.rs` only parses and dispatches.

pub mod data;
pub mod gan;
pub mod model;
pub mod train;
