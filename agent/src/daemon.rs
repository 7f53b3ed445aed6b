//! `hoist-agent run`: the daemon. It registers once, then long-polls the coordinator for
//! commands, runs each through the [`Engine`], and sends the event reports queued in the
//! [`Outbox`] from a separate task, so reporting never waits for a hook and a hook never
//! waits for the network.
//!
//! Why it stops is an enum ([`Stopped`]); SIGTERM stops polling at once, lets a running
//! script finish up to the stop grace period, reports, flushes the outbox briefly and exits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hoist_appspec::{FileExistsBehavior, LifecycleEvent};
use hoist_protocol::agent::{
    Command, CommandStatus, Heartbeat, PollRequest, RegisterRequest, Report, ReportBody, Revision,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::deployment::{
    engine_settings, DeploymentRequest, Engine, EventResult, Observer, Source, Stop,
};
use crate::outbox::Outbox;
use crate::retry::RetryPolicy;
use crate::state::{
    self, AgentInfo, Contact, HostCredentials, HostLock, RecordStatus, StateDir, SCHEMA_VERSION,
};

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
}

/// The command running now, so the report sender can abort it.
type Running = Arc<Mutex<Option<(String, CancellationToken)>>>;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Stopped> {
    let coordinator = config.coordinator.clone().context(
        "the config has no coordinator section; `hoist-agent run` needs coordinator.url",
    )?;
    let state = StateDir::open(&config.state_dir)?;
    let _lock = HostLock::acquire(&state, "hoist-agent run")?;
    let info = AgentInfo {
        schema_version: SCHEMA_VERSION,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_ms: state::now_ms(),
        coordinator_url: coordinator.url.clone(),
        host_name: config.host_name(),
        tags: config.host.tags.clone(),
    };
    // For `status` only: a full state directory must not keep the agent from starting (it
    // then refuses to register, or reports its commands failed, saying why).
    if let Err(e) = state::write_json(&state.root().join("agent.json"), &info) {
        warn!("{}", state::write_failure(state.root(), &e));
    }
    let client = Client::new(&config)?;
    let outbox = Outbox::open(&state)?;
    state
        .migrate()
        .context("moving per-group state to the layout keyed by group id")?;
    crate::recovery::recover(&state, Some(&outbox), config.hooks.kill_grace()).await?;
    info!(
        coordinator = %coordinator.url,
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
        return Ok(Stopped::Signal);
    };
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

    let engine = Engine::new(
        state.clone(),
        engine_settings(&config, Some((&client, &host))),
    );
    crate::notify::status("polling the coordinator");
    let policy = RetryPolicy::from_config(&config.poll);
    let mut delays = policy.delays();
    let mut direct = DirectReports::default();
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
                if let Some(command) = resp.command {
                    let alive = Alive {
                        client: &client,
                        host: &host,
                        every: heartbeat_every(resp.heartbeat_ms),
                    };
                    let command_id = command.command_id.clone();
                    let ran = run_command(
                        &engine,
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
                        state.root().join("host.json").display(),
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
    Ok(Stopped::Signal)
}

/// Records a successful exchange with the coordinator, or the error of a failed one (keeping
/// the time of the last success), for `hoist-agent status`.
fn note_contact(state: &StateDir, error: Option<&ClientError>) {
    let path = state.root().join("contact.json");
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

/// Loads the host's credentials, registering first when there are none. `None` on shutdown.
async fn register(
    config: &Config,
    state: &StateDir,
    client: &Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<HostCredentials>> {
    let path = state.root().join("host.json");
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

/// Marker of a command this host has started, so a command handed out again (the agent
/// restarted before its reports arrived) is never run twice.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    schema_version: u32,
    deployment_id: String,
    at_ms: u64,
}

/// Longest the poll loop waits, after a command, for its reports to be acknowledged; the
/// whole wait after being handed a command it did not run with nothing left to send.
const ALREADY_HANDLED_PAUSE: Duration = Duration::from_secs(1);

/// Heartbeat interval when the coordinator does not say (an older coordinator).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// The coordinator's heartbeat interval, never below 100 ms whatever it asks.
fn heartbeat_every(ms: Option<u64>) -> Duration {
    ms.map(Duration::from_millis)
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100))
}

/// What the heartbeat of a running command needs.
struct Alive<'a> {
    client: &'a Client,
    host: &'a HostCredentials,
    every: Duration,
}

/// Tells the coordinator every `alive.every` that this host still works on `command_id`,
/// until dropped; an "aborted" answer cancels `abort`. Without it a silent hook longer than
/// the coordinator's host lease would get the host declared lost.
async fn heartbeat(
    alive: &Alive<'_>,
    state: &StateDir,
    command_id: &str,
    abort: &CancellationToken,
) {
    let req = Heartbeat {
        command_id: Some(command_id.to_string()),
    };
    loop {
        tokio::time::sleep(alive.every).await;
        match alive.client.heartbeat(alive.host, &req).await {
            Ok(ack) => {
                note_contact(state, None);
                if ack.aborted && !abort.is_cancelled() {
                    warn!(command_id, "the coordinator stopped this deployment; stopping after the current script");
                    abort.cancel();
                }
            }
            Err(ClientError::Status { status: 404, .. }) => {
                info!("the coordinator takes no heartbeats (an older version); not sending them");
                return;
            }
            Err(e) => {
                note_contact(state, Some(&e));
                warn!(command_id, "heartbeat failed: {:#}", anyhow::Error::new(e));
            }
        }
    }
}

/// Completion reports of commands the state directory could not take (full disk), by command
/// id. `Some` was sent directly, past the outbox, and is sent again, unchanged, when the
/// command is handed out again; `None` went to the outbox. Either way such a command is
/// never run: without its marker, nothing would stop it running again and again.
#[derive(Default)]
struct DirectReports(std::collections::HashMap<String, Option<Report>>);

/// At most this many commands are remembered in [`DirectReports`].
const DIRECT_REPORTS_KEPT: usize = 1000;

impl DirectReports {
    /// Reports `command_id` failed with `message` without local state: through the outbox
    /// if it can still be written, else directly. True once the coordinator has it (or the
    /// outbox does).
    async fn fail(
        &mut self,
        outbox: &Outbox,
        alive: &Alive<'_>,
        command_id: &str,
        message: String,
    ) -> bool {
        let body = ReportBody::Completed {
            status: CommandStatus::Failed,
            failed_event: None,
            message: Some(message),
        };
        if self.0.len() >= DIRECT_REPORTS_KEPT {
            self.0.clear();
        }
        match outbox.push(command_id, body.clone()) {
            Ok(_) => {
                self.0.insert(command_id.to_string(), None);
                true
            }
            Err(e) => {
                warn!(
                    command_id,
                    "the outbox cannot take the report ({e:#}); sending it directly"
                );
                let report = Report {
                    seq: outbox.next_seq(command_id),
                    at_ms: state::now_ms(),
                    body,
                };
                self.0.insert(command_id.to_string(), Some(report));
                self.resend(alive, command_id).await
            }
        }
    }

    /// Sends the direct report of `command_id` (again); true when the coordinator took it
    /// or there is none (the report went to the outbox).
    async fn resend(&self, alive: &Alive<'_>, command_id: &str) -> bool {
        let Some(Some(report)) = self.0.get(command_id) else {
            return true;
        };
        match alive.client.report(alive.host, command_id, report).await {
            Ok(_) => true,
            Err(e) => {
                warn!(
                    command_id,
                    "sending the failure report failed; it is sent again when the command is \
                     handed out again: {:#}",
                    anyhow::Error::new(e)
                );
                false
            }
        }
    }
}

/// Runs one command; false when nothing ran (handled here already, or its marker could not
/// be written and the coordinator was not told).
async fn run_command(
    engine: &Engine,
    outbox: &Outbox,
    running: &Running,
    command: Command,
    alive: &Alive<'_>,
    direct: &mut DirectReports,
    shutdown: &CancellationToken,
) -> bool {
    if direct.0.contains_key(&command.command_id) {
        info!(command_id = %command.command_id, "command already reported failed: the state directory could not record it");
        // Not run, so the loop pauses before the next poll whatever the answer.
        direct.resend(alive, &command.command_id).await;
        return false;
    }
    let seen_path = engine
        .state
        .root()
        .join("commands")
        .join(format!("{}.json", state::encode_name(&command.command_id)));
    if seen_path.exists() {
        info!(command_id = %command.command_id, "command already handled here; its reports are in the outbox");
        return false;
    }
    let seen = Seen {
        schema_version: SCHEMA_VERSION,
        deployment_id: command.deployment_id.clone(),
        at_ms: state::now_ms(),
    };
    if let Err(e) = state::write_json(&seen_path, &seen) {
        let message = state::write_failure(engine.state.root(), &e);
        error!(command_id = %command.command_id, "{message}; reporting the command failed without running it");
        return direct
            .fail(outbox, alive, &command.command_id, message)
            .await;
    }
    if let Some(dir) = seen_path.parent() {
        forget_old_commands(dir);
    }
    let abort = CancellationToken::new();
    if let Ok(mut r) = running.lock() {
        *r = Some((command.command_id.clone(), abort.clone()));
    }
    let observer = Reporter {
        outbox: outbox.clone(),
        command_id: command.command_id.clone(),
    };
    let completed = match request_from(&command) {
        Err(message) => ReportBody::Completed {
            status: CommandStatus::Failed,
            failed_event: None,
            message: Some(message),
        },
        Ok(req) => {
            let stop = Stop {
                abort: abort.clone(),
                shutdown: shutdown.clone(),
            };
            let run = engine.run(&req, &observer, &stop);
            tokio::pin!(run);
            let result = tokio::select! {
                r = &mut run => r,
                () = heartbeat(alive, &engine.state, &command.command_id, &abort) => run.await,
            };
            match result {
                Ok(record) => ReportBody::Completed {
                    status: match record.status {
                        RecordStatus::Succeeded => CommandStatus::Succeeded,
                        RecordStatus::Stopped => CommandStatus::Stopped,
                        RecordStatus::Failed | RecordStatus::InProgress => CommandStatus::Failed,
                    },
                    failed_event: record.failed_event,
                    message: record.error,
                },
                Err(e) => {
                    error!(deployment_id = %command.deployment_id, "deployment could not run: {e:#}");
                    let message = if state::is_no_space(&e) {
                        state::write_failure(engine.state.root(), &e)
                    } else {
                        format!("the agent could not run the deployment: {e:#}")
                    };
                    ReportBody::Completed {
                        status: CommandStatus::Failed,
                        failed_event: None,
                        message: Some(message),
                    }
                }
            }
        }
    };
    if let Err(e) = outbox.push(&command.command_id, completed.clone()) {
        error!(
            "queueing the completion of {}: {e:#}; sending it directly",
            command.command_id
        );
        let report = Report {
            seq: outbox.next_seq(&command.command_id),
            at_ms: state::now_ms(),
            body: completed,
        };
        direct.0.insert(command.command_id.clone(), Some(report));
        direct.resend(alive, &command.command_id).await;
    }
    if let Ok(mut r) = running.lock() {
        *r = None;
    }
    true
}

/// How long a handled command is remembered; the coordinator never hands one out again
/// after its completion was acknowledged, which takes seconds, not weeks.
const SEEN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Removes markers of commands handled longer than [`SEEN_FOR`] ago.
fn forget_old_commands(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > SEEN_FOR);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Turns a command into a deployment request, or says why it cannot run.
fn request_from(command: &Command) -> Result<DeploymentRequest, String> {
    if let Revision::Unknown { kind } = &command.revision {
        return Err(format!(
            "unsupported revision kind {kind:?}: this agent (version {}) cannot fetch it",
            env!("CARGO_PKG_VERSION")
        ));
    }
    let events = command
        .events
        .iter()
        .map(|e| e.parse::<LifecycleEvent>())
        .collect::<Result<Vec<_>, _>>()?;
    let events = if events.is_empty() {
        LifecycleEvent::ALL.to_vec()
    } else {
        events
    };
    let file_exists_behavior = command
        .file_exists_behavior
        .as_deref()
        .map(str::parse::<FileExistsBehavior>)
        .transpose()
        .map_err(|e| format!("file_exists_behavior {e}"))?;
    let mut bundle_env = Vec::new();
    match &command.revision {
        Revision::S3 {
            bucket,
            key,
            version_id,
            etag,
            ..
        } => {
            bundle_env.push(("BUNDLE_BUCKET".to_string(), bucket.clone()));
            bundle_env.push(("BUNDLE_KEY".to_string(), key.clone()));
            if let Some(v) = version_id {
                bundle_env.push(("BUNDLE_VERSION".to_string(), v.clone()));
            }
            if let Some(e) = etag {
                bundle_env.push(("BUNDLE_ETAG".to_string(), e.clone()));
            }
        }
        Revision::Git { commit, .. } => {
            bundle_env.push(("BUNDLE_COMMIT".to_string(), commit.clone()));
        }
        Revision::Coordinator { .. } | Revision::Url { .. } | Revision::Unknown { .. } => {}
    }
    Ok(DeploymentRequest {
        deployment_id: command.deployment_id.clone(),
        command_id: Some(command.command_id.clone()),
        application: command.application.clone(),
        group: command.deployment_group.clone(),
        group_id: command.deployment_group_id.clone(),
        source: Source::Remote(command.revision.clone()),
        revision: command.revision.describe(),
        appspec_path: command.appspec_path.clone(),
        events,
        file_exists_behavior,
        ignore_application_stop_failures: command.ignore_application_stop_failures,
        bundle_env,
    })
}

/// Turns engine progress into queued reports.
struct Reporter {
    outbox: Outbox,
    command_id: String,
}

impl Observer for Reporter {
    fn event_started(&self, event: LifecycleEvent) {
        let body = ReportBody::EventStarted {
            event: event.to_string(),
        };
        if let Err(e) = self.outbox.push(&self.command_id, body) {
            error!("queueing a report for {}: {e:#}", self.command_id);
        }
    }

    fn event_ended(&self, r: &EventResult) {
        let body = ReportBody::EventEnded {
            event: r.event.to_string(),
            status: r.status,
            error_code: r.error_code,
            message: r.message.clone(),
            script: r.script.clone(),
            exit_code: r.exit_code,
            log_tail: r.log_tail.clone(),
            duration_ms: r.duration.as_millis() as u64,
        };
        if let Err(e) = self.outbox.push(&self.command_id, body) {
            error!("queueing a report for {}: {e:#}", self.command_id);
        }
    }
}

/// Sends queued reports in order until `stop`; an "aborted" answer cancels the running
/// command's abort token.
async fn send_reports(
    client: Client,
    host: HostCredentials,
    outbox: Outbox,
    state: StateDir,
    running: Running,
    poll: crate::config::PollConfig,
    stop: CancellationToken,
) {
    let policy = RetryPolicy::from_config(&poll);
    let mut delays = policy.delays();
    loop {
        let pending = match outbox.pending() {
            Ok(p) => p,
            Err(e) => {
                error!("reading the report outbox: {e:#}");
                Vec::new()
            }
        };
        let mut failed = None;
        for p in &pending {
            match client.report(&host, &p.command_id, &p.report).await {
                Ok(ack) => {
                    delays = policy.delays();
                    if ack.aborted {
                        if let Ok(r) = running.lock() {
                            if let Some((id, token)) = r.as_ref() {
                                if *id == p.command_id && !token.is_cancelled() {
                                    warn!(command_id = %id, "the coordinator stopped this deployment; stopping after the current script");
                                    token.cancel();
                                }
                            }
                        }
                    }
                    if let Err(e) = outbox.ack(p) {
                        error!("removing an acknowledged report: {e:#}");
                    }
                }
                Err(e) if e.is_unauthorized() => {
                    // The host's credentials, not the report, are refused: keep every report
                    // until an operator fixes them (a restored host.json, say).
                    note_contact(&state, Some(&e));
                    failed = Some(delays.next_delay());
                    error!(
                        "the coordinator refused this host's credentials; reports kept, retrying in {:?}: {:#}",
                        failed.unwrap_or_default(),
                        anyhow::Error::new(e)
                    );
                    break;
                }
                Err(e) if !e.is_retryable() => {
                    // The coordinator will never take this report (unknown command, bad
                    // request): keep it aside instead of blocking every later report.
                    error!(
                        command_id = %p.command_id,
                        seq = p.report.seq,
                        "report refused, moved aside: {:#}",
                        anyhow::Error::new(e)
                    );
                    if let Err(e) = outbox.set_aside(p) {
                        error!("{e:#}");
                    }
                }
                Err(e) => {
                    note_contact(&state, Some(&e));
                    failed = Some(policy.next_delay(&mut delays, e.retry_after()));
                    warn!(
                        "sending reports failed, retrying in {:?}: {:#}",
                        failed.unwrap_or_default(),
                        anyhow::Error::new(e)
                    );
                    break;
                }
            }
        }
        let wait = async {
            match failed {
                Some(delay) => tokio::time::sleep(delay).await,
                None if pending.is_empty() => outbox.wait().await,
                None => {}
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait => {}
        }
    }
}

async fn wait_outbox_empty(outbox: &Outbox) {
    loop {
        if outbox.pending().map(|p| p.is_empty()).unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_follows_the_coordinator_within_bounds() {
        for (asked, expected) in [
            (None, DEFAULT_HEARTBEAT),
            (Some(500), Duration::from_millis(500)),
            (Some(150_000), Duration::from_secs(150)),
            (Some(0), Duration::from_millis(100)),
            (Some(10), Duration::from_millis(100)),
        ] {
            assert_eq!(heartbeat_every(asked), expected, "{asked:?}");
        }
    }
}
