//! Integration tests: the real `hoist server` binary on 127.0.0.1 with a free port in a
//! temp data dir, driven by the real `hoist` CLI and by simulated hosts over HTTP.

#![allow(clippy::unwrap_used)]

mod assets;
mod auth;
mod bundles;
mod convergence;
mod dashboard;
mod deploy;
mod membership;
mod metrics;
mod pipelines;
mod progress;
mod releases;
mod replicas;
mod reports;
mod resilience;
mod revisions;
mod roles;
mod s3;
mod server;
mod signatures;
mod support;
mod transport;
mod usage;
mod variables;
mod webhooks;
