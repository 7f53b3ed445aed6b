//! hoist-agent: the host daemon and its local commands.
//!
//! Layout:
//! - [`config`]: `/etc/hoist/agent.yaml`, parsed strictly.
//! - [`state`]: the state directory: layout, atomic writes, the host lock.
//! - [`bundle`]: opening bundles ([`bundle::extract`] for archives, [`bundle::fetch`] for sources).
//! - [`install`]: the built-in Install event (files, cleanup of the previous revision, permissions).
//! - [`hooks`]: running one hook script (process group, runas, timeout, output capture).
//! - [`deployment`]: drives one deployment through its lifecycle events.
//! - [`cli`]: the local commands (`deploy`, `validate`, `status`).

pub mod bundle;
pub mod cli;
pub mod config;
pub mod deployment;
pub mod hooks;
pub mod install;
pub mod state;
