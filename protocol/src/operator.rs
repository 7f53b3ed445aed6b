//! Operator CLI ↔ coordinator messages (operator token in `Authorization: Bearer`).
//!
//! The coordinator's `api` module documents the routes; the types live here so the CLI and
//! the server cannot drift apart.
