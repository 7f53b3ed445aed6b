//! End-to-end tests: they start the real `hoist-agent` (and `hoist`) binaries against real
//! files, processes and users. Run with `cargo test --workspace`.

mod convergence;
mod daemon;
mod dashboard;
mod demo;
mod durability;
mod fleet;
mod local_deploy;
mod pipelines;
mod releases;
mod replicas;
mod resilience;
mod signatures;
mod sources;
mod tls;
mod webhooks;
