//! Subcommand groups of the command line.

pub mod gan;
