//! What the two command lines (`hoist` and `hoist-agent`) share, so that they behave as one
//! product on a terminal.
//!
//! Layout:
//! - [`usage`]: how both word a command-line usage error (a sentence naming the subcommand
//!   and what is wrong, that subcommand's own usage line, its `--help`).
//! - [`colour`]: whether log lines are coloured (a terminal, no `NO_COLOR`).
//! - [`assets`]: both CLIs' shell completions and man pages, for the hidden `generate`
//!   subcommand that `packaging/build.sh` runs.
//!
//! Deliberately not here: the commands themselves (each binary's `cli` module), or how text
//! from the wire is escaped (`hoist_protocol::text`).

pub mod assets;
pub mod colour;
pub mod usage;
