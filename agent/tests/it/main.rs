//! The agent's integration tests: real files, real processes, real users and servers.

#![allow(clippy::unwrap_used)]

mod cli;
mod daemon;
mod fetch;
mod hooks;
