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
//! - [`bounds`]: what is accepted from hosts (names, tags, versions, event reports) and
//!   how much of it.
//! - [`rollout`]: the pure minimum-healthy-hosts arithmetic.
//! - [`store`]: the durable state behind a trait, SQLite by default.
//! - [`sources`]: looking at pipeline sources (`git ls-remote`, S3 reads into the bundle
//!   store) for `hoist server`.
//! - [`bundles`]: the content-addressed bundle store (a local directory or S3-compatible
//!   storage), read whole or by byte range.
//! - [`s3`]: S3 endpoint, region and credentials from the environment, and `s3://` locations.
//! - [`memory`]: the allocator's arena limit for `hoist server`.
//! - [`tls`]: the TLS certificate: the configured one or a generated self-signed one, and
//!   its fingerprint.
//! - [`webhooks`]: the delivery of webhook events (signed JSON POSTs, retried with backoff)
//!   from the store's outbox.
//! - [`cli`]: the operator CLI, one file per subcommand.
//!
//! The wire types live in the `hoist-protocol` crate.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod bounds;
pub mod bundles;
pub mod cli;
pub mod config;
pub mod memory;
pub mod metrics;
pub mod rollout;
pub mod s3;
pub mod server;
pub mod service;
pub mod sources;
pub mod store;
pub mod tls;
pub mod webhooks;
