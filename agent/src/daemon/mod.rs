//! `hoist-agent run`: the daemon. It registers once, then long-polls the coordinator for
//! commands, runs each through the [`Deployer`], and sends the event reports queued in the
//! [`Outbox`] from a separate task, so reporting never waits for a hook and a hook never
//! waits for the network.
//!
//! SIGTERM (the `shutdown` token) stops polling at once, lets a running script finish up to
//! the stop grace period, reports, flushes the outbox briefly and returns.
//!
//! Layout: this file is the poll loop; [`register`] gets the host's credentials, [`command`]
//! runs one command handed out (never twice, heartbeats while it runs), [`rollbacks`] tells
//! the coordinator about rollbacks made on the host, [`reports`] turns
//! a deployment's progress into queued reports and sends them. The end of an event and of a
//! command are reported from the same values the host records (`state::EventRecord`,
//! `state::Ending`), as recovery does, never assembled here field by field.

mod command;
mod register;
mod reports;
pub mod rollbacks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hoist_protocol::agent::{GroupSync, PollRequest};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::deployment::{deployer_settings, Deployer};
use crate::outbox::Outbox;
use crate::retry::RetryPolicy;
use crate::state::{
    self, AgentInfo, Contact, GroupSyncEntry, HostLock, StateDir, SyncRecord, SCHEMA_VERSION,
};
use crate::trust::Trust;

use command::{heartbeat_every, run_command, Alive, DirectReports};
use register::register;
use reports::{send_reports, wait_outbox_empty};

/// The command running now, so the report sender can abort it.
type Running = Arc<Mutex<Option<(String, CancellationToken)>>>;

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, trust: Trust, shutdown: CancellationToken) -> anyhow::Result<()> {
    let coordinator = config.coordinator.clone().context(
        "the config has no coordinator section; `hoist-agent run` needs coordinator.url (or coordinator.urls)",
    )?;
    let state = StateDir::open(&config.state_dir)?;
    let _lock = HostLock::acquire(&state, "hoist-agent run")?;
    let info = AgentInfo {
        schema_version: SCHEMA_VERSION,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_ms: state::now_ms(),
        coordinator_url: coordinator.urls().join(", "),
        host_name: config.host_name(),
        tags: config.host.tags.clone(),
    };
    // For `status` only: a full state directory must not keep the agent from starting (it
    // then refuses to register, or reports its commands failed, saying why).
    if let Err(e) = state::write_json(&state.agent_info_path(), &info) {
        warn!("{}", state::write_failure(state.root(), &e));
    }
    let client = Client::new(&config)?;
    let outbox = Outbox::open(&state)?;
    state
        .migrate()
        .context("moving per-group state to the layout keyed by group id")?;
    crate::recovery::recover(&state, Some(&outbox), config.hooks.kill_grace()).await?;
    info!(
        coordinator = %coordinator.urls().join(", "),
        host = %info.host_name,
        state_dir = %state.root().display(),
        "hoist-agent {} started",
        info.version
    );

    // Ready once the lock is held and recovery is done: waiting for the coordinator here
    // would make an unreachable coordinator fail the service start.
    crate::notify::ready();
    let running: Running = Arc::new(Mutex::new(None));
    let Some(host) = register(&config, &state, &client, &shutdown).await? else {
        return Ok(());
    };
    match rollbacks::send_local_rollbacks(&client, &host, &state).await {
        Ok(0) => {}
        Ok(n) => info!("told the coordinator about {n} rollbacks made on this host"),
        Err(e) => warn!("{e:#}; sent again at the next start"),
    }
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn(send_reports(
        client.clone(),
        host.clone(),
        outbox.clone(),
        state.clone(),
        running.clone(),
        config.poll.clone(),
        sender_stop.clone(),
    ));

    let mut deployer = Deployer::new(
        state.clone(),
        deployer_settings(&config, trust, Some((&client, &host))),
    );
    crate::notify::status("polling the coordinator");
    let policy = RetryPolicy::from_config(&config.poll);
    let mut delays = policy.delays();
    let mut direct = DirectReports::default();
    let mut synced: Option<Vec<GroupSyncEntry>> = None;
    while !shutdown.is_cancelled() {
        let req = PollRequest {
            name: info.host_name.clone(),
            tags: config.host.tags.clone(),
            agent_version: info.version.clone(),
            wait_secs: Some(config.poll.wait_secs),
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = client.poll(&host, &req) => r,
        };
        match result {
            Ok(resp) => {
                delays = policy.delays();
                note_contact(&state, None);
                if let Some(groups) = &resp.sync {
                    note_sync(&state, groups, &mut synced);
                }
                if let Some(command) = resp.command {
                    let alive = Alive {
                        client: &client,
                        host: &host,
                        every: heartbeat_every(resp.heartbeat_ms),
                    };
                    let command_id = command.command_id.clone();
                    // The bundle store of the URL that handed the command over: with
                    // replicas, the one in use now, not the one at start.
                    if let Some(fetch) = deployer.settings.fetch.as_mut() {
                        fetch.settings.coordinator = Some(client.coordinator_access(&host));
                    }
                    let ran = run_command(
                        &deployer,
                        &outbox,
                        &running,
                        command,
                        &alive,
                        &mut direct,
                        &shutdown,
                    )
                    .await;
                    // Poll again once the coordinator has this command's outcome: asked
                    // earlier, it may answer with this same command, still in progress
                    // there, and the next one would wait out the pause below. A command
                    // handed out again with nothing left to send (or whose marker the state
                    // directory refused) waits the whole pause, so the loop never spins.
                    let settle = async {
                        if outbox.has_pending(&command_id) {
                            outbox.settled(&command_id).await;
                        } else if !ran {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::timeout(ALREADY_HANDLED_PAUSE, settle) => {}
                    }
                }
            }
            Err(e) => {
                note_contact(&state, Some(&e));
                let delay = policy.next_delay(&mut delays, e.retry_after());
                if e.is_unauthorized() {
                    // Nothing this host can fix by itself: say what and where, loudly.
                    error!(
                        host_id = %host.host_id,
                        "the coordinator refused this host's credentials (revoked, or a wrong \
                         secret in {}); an operator must re-register it; retrying in {delay:?}: {:#}",
                        state.host_credentials_path().display(),
                        anyhow::Error::new(e)
                    );
                } else {
                    warn!(
                        "polling failed, retrying in {delay:?}: {:#}",
                        anyhow::Error::new(e)
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    crate::notify::stopping();
    info!("shutting down: sending queued reports");
    // Give queued reports (the stop of an interrupted deployment) a moment to go out; what
    // is not acknowledged stays in the outbox for the next start.
    tokio::select! {
        _ = wait_outbox_empty(&outbox) => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    sender_stop.cancel();
    let _ = sender.await;
    info!("hoist-agent stopped");
    Ok(())
}

/// Records a successful exchange with the coordinator, or the error of a failed one (keeping
/// the time of the last success), for `hoist-agent status`.
fn note_contact(state: &StateDir, error: Option<&ClientError>) {
    let path = state.contact_path();
    let contact = match error {
        None => Contact {
            schema_version: SCHEMA_VERSION,
            at_ms: state::now_ms(),
            last_error: None,
        },
        Some(e) => Contact {
            schema_version: SCHEMA_VERSION,
            at_ms: state::read_json::<Contact>(&path)
                .ok()
                .flatten()
                .map(|p| p.at_ms)
                .unwrap_or(0),
            last_error: Some(crate::error_chain(e)),
        },
    };
    if let Err(e) = state::write_json(&path, &contact) {
        warn!("recording coordinator contact: {e:#}");
    }
}

/// Keeps what the coordinator says of the host's groups for `status`, written only when it
/// changed since the last write.
fn note_sync(state: &StateDir, groups: &[GroupSync], last: &mut Option<Vec<GroupSyncEntry>>) {
    let groups: Vec<GroupSyncEntry> = groups.iter().map(GroupSyncEntry::from_wire).collect();
    if last.as_ref() == Some(&groups) {
        return;
    }
    let record = SyncRecord {
        schema_version: SCHEMA_VERSION,
        received_ms: state::now_ms(),
        groups: groups.clone(),
    };
    match state::write_json(&state.sync_path(), &record) {
        Ok(()) => *last = Some(groups),
        Err(e) => warn!("recording the host's sync state: {e:#}"),
    }
}

/// Longest the poll loop waits, after a command, for its reports to be acknowledged; the
/// whole wait after being handed a command it did not run with nothing left to send.
const ALREADY_HANDLED_PAUSE: Duration = Duration::from_secs(1);
