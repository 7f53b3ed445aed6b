//! Helpers for the end-to-end tests: locating the built binaries, temp dirs, bundle builders.

pub mod archive;
