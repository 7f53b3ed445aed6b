//! The agent's integration tests: real files, real processes, real users.

#![allow(clippy::unwrap_used)]

mod hooks;
