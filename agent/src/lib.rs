//! hoist-agent: the host daemon and its local commands.
//!
//! Layout:
//! - [`config`]: `/etc/hoist/agent.yaml`, parsed strictly; data only (each module builds its
//!   own settings from it).
//! - [`trust`]: the signing keys this host trusts and the one check of a revision's signature.
//! - [`state`]: the state directory: layout, atomic writes, the host lock.
//! - [`bundle`]: opening bundles ([`bundle::extract`] for archives, [`bundle::fetch`] for sources).
//! - [`install`]: the built-in Install event (files, cleanup of the previous revision, permissions).
//! - [`hooks`]: running one hook script (process group, runas, timeout, output capture).
//! - [`deployment`]: drives one deployment through its lifecycle events.
//! - [`recovery`]: what a starting agent does about a deployment a crash interrupted.
//! - [`client`]: the only module speaking HTTP to the coordinator (its API and its bundle
//!   store); it builds the one HTTP client, which bundle downloads are handed.
//! - [`retry`]: the one retry policy (backoff, capped `Retry-After`) of the client and downloads.
//! - [`outbox`]: event reports, durable until acknowledged.
//! - [`daemon`]: `hoist-agent run`: registration, the long-poll loop, the report sender.
//! - [`notify`]: telling systemd READY, STOPPING and a status line (`Type=notify`).
//! - [`status`]: what `hoist-agent status` reads from the state directory.
//! - [`tls`]: pinning the coordinator's certificate (`coordinator.pin_sha256`).
//! - [`cli`]: the command line (`run`, `status`, `deploy`, `validate`).

pub mod bundle;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod deployment;
pub mod hooks;
pub mod install;
pub mod notify;
pub mod outbox;
pub mod recovery;
pub mod retry;
pub mod state;
pub mod status;
pub mod tls;
pub mod trust;

/// An error and its sources on one line, as anyhow's `{:#}` prints them, for errors held by
/// reference or kept as text in records and reports.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
