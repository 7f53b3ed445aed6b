//! Registration: the host's credentials from `host.json`, or registering with the
//! coordinator's token when there are none, with the space for `host.json` reserved before
//! the coordinator issues them.

use anyhow::Context;
use hoist_protocol::agent::RegisterRequest;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::note_contact;
use crate::client::Client;
use crate::config::Config;
use crate::retry::RetryPolicy;
use crate::state::HostCredentials;
use crate::state::{self, StateDir, SCHEMA_VERSION};

/// Loads the host's credentials, registering first when there are none. `None` on shutdown.
pub(super) async fn register(
    config: &Config,
    state: &StateDir,
    client: &Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<HostCredentials>> {
    let path = state.host_credentials_path();
    if let Some(host) = state::read_json::<HostCredentials>(&path)? {
        return Ok(Some(host));
    }
    // Credentials the coordinator issued but this host could not keep would leave a host
    // registered there that nobody can use: the space for host.json is taken first.
    const HOST_JSON_RESERVE: usize = 4096;
    let token = config.registration_token()?.context(
        "this host is not registered and the config has no coordinator.registration_token(_file)",
    )?;
    let req = RegisterRequest {
        name: config.host_name(),
        tags: config.host.tags.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let policy = RetryPolicy::from_config(&config.poll);
    let mut delays = policy.delays();
    // Kept across attempts: space released between them could be taken by someone else.
    let mut reserved = None;
    loop {
        if reserved.is_none() {
            reserved = match state::reserve(&path, HOST_JSON_RESERVE, 0o600) {
                Ok(r) => Some(r),
                Err(e) => {
                    let delay = policy.next_delay(&mut delays, None);
                    error!(
                        "not registering: {}; retrying in {delay:?}",
                        state::write_failure(state.root(), &e)
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
        }
        match client.register(&token, &req).await {
            Ok(resp) => {
                let host = HostCredentials {
                    schema_version: SCHEMA_VERSION,
                    host_id: resp.host_id,
                    host_secret: resp.host_secret,
                    coordinator_url: client.base_url().to_string(),
                };
                let committed = match reserved.take() {
                    Some(r) => r.commit_json(&host),
                    None => state::write_json(&path, &host),
                };
                if let Err(e) = committed {
                    error!(
                        host_id = %host.host_id,
                        "registered as host {}, but its credentials could not be kept; revoke \
                         that host on the coordinator: {e:#}",
                        host.host_id
                    );
                    return Err(e);
                }
                info!(host_id = %host.host_id, "registered with the coordinator");
                note_contact(state, None);
                return Ok(Some(host));
            }
            Err(e) => {
                note_contact(state, Some(&e));
                let delay = policy.next_delay(&mut delays, e.retry_after());
                let e = anyhow::Error::new(e);
                // A refused token may be fixed by the operator without restarting us.
                error!("registration failed, retrying in {delay:?}: {e:#}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
