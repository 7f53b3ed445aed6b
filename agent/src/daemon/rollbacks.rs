//! Rollbacks made on the host (`hoist-agent rollback`) told to the coordinator: each note kept
//! in the state directory is sent once, and removed when the coordinator acknowledged it. The
//! command sends its own note at once; the daemon sends any left (the coordinator was
//! unreachable) after it registered, before its first poll.
//!
//! It neither decides nor performs a rollback.

use hoist_protocol::agent::LocalRollback;

use crate::client::Client;
use crate::state::{HostCredentials, StateDir};

/// Sends every pending note; how many the coordinator acknowledged. Stops at the first
/// failure (the rest wait for the next try) and returns it.
pub async fn send_local_rollbacks(
    client: &Client,
    host: &HostCredentials,
    state: &StateDir,
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for note in state.local_rollbacks() {
        let req = LocalRollback {
            group_id: note.group_id.clone(),
            deployment_id: note.deployment_id.clone(),
            rollback_id: note.rollback_id.clone(),
            rolled_back_at_ms: note.at_ms,
        };
        client.local_rollback(host, &req).await.map_err(|e| {
            anyhow::anyhow!(
                "telling the coordinator about rollback {}: {}",
                note.rollback_id,
                crate::error_chain(&e)
            )
        })?;
        state.local_rollback_sent(&note.rollback_id)?;
        sent += 1;
    }
    Ok(sent)
}
