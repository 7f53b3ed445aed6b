//! hoist: the Hoist coordinator server (`hoist server`) and the operator CLI (every other
//! subcommand), in one binary.
//!
//! Layout:
//! - [`server`]: wiring of `hoist server` — data directory, store, service, lease sweeper,
//!   HTTP or HTTPS listener with connection limits, graceful shutdown.
//! - [`config`]: the server's YAML config file and flag overrides.
//! - [`metrics`]: the Prometheus series of `GET /metrics` and the process's replica id.
//! - [`api`]: the HTTP API (axum); the only module that knows HTTP requests and answers
//!   on the server side (`server` owns the connections beneath it).
//! - [`service`]: the rules — registration, polls, reports, deployments, stops, leases,
//!   auto-rollback — on top of the store.
//! - [`sources`]: looking at pipeline sources (`git ls-remote`, S3 reads into the bundle
//!   store) for `hoist server`.
//! - [`bounds`]: what is accepted from hosts (names, tags, versions, event reports) and
//!   how much of it.
//! - [`rollout`]: the pure minimum-healthy-hosts arithmetic.
//! - [`store`]: the durable state behind a trait, SQLite by default.
//! - [`s3`]: the S3 endpoint and credentials, from the usual `AWS_*` variables.
//! - [`bundles`]: the content-addressed bundle store, read whole or by byte range.
//! - [`tls`]: the TLS certificate: the configured one or a generated self-signed one, and
//!   its fingerprint.
//! - [`cli`]: the operator CLI, one file per subcommand.
//!
//! The wire types live in the `hoist-protocol` crate.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod bounds;
pub mod bundles;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod rollout;
pub mod s3;
pub mod server;
pub mod service;
pub mod sources;
pub mod store;
pub mod tls;
