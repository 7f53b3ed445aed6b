//! One command handed out by the coordinator: never run twice (a marker per command), run
//! through the [`Deployer`] with a heartbeat beside it, its completion queued; and when the
//! state directory cannot take the marker, reported failed without running.

use std::time::Duration;

use hoist_appspec::{FileExistsBehavior, LifecycleEvent};
use hoist_protocol::agent::{Command, Heartbeat, Report, Revision};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::reports::Reporter;
use super::{note_contact, Running};
use crate::client::{Client, ClientError};
use crate::deployment::{Deployer, DeploymentRequest, Source, Stop};
use crate::outbox::Outbox;
use crate::state::HostCredentials;
use crate::state::{self, CommandSeen, Ending, StateDir, SCHEMA_VERSION};

/// Heartbeat interval when the coordinator does not say (an older coordinator).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// The coordinator's heartbeat interval, never below 100 ms whatever it asks.
pub(super) fn heartbeat_every(ms: Option<u64>) -> Duration {
    ms.map(Duration::from_millis)
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100))
}

/// What the heartbeat of a running command needs.
pub(super) struct Alive<'a> {
    pub client: &'a Client,
    pub host: &'a HostCredentials,
    pub every: Duration,
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
pub(super) struct DirectReports(std::collections::HashMap<String, Option<Report>>);

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
        let body = Ending::failed(None, message).report();
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
pub(super) async fn run_command(
    deployer: &Deployer,
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
    let seen_path = deployer.state.command_seen_path(&command.command_id);
    if seen_path.exists() {
        info!(command_id = %command.command_id, "command already handled here; its reports are in the outbox");
        return false;
    }
    let seen = CommandSeen {
        schema_version: SCHEMA_VERSION,
        deployment_id: command.deployment_id.clone(),
        at_ms: state::now_ms(),
    };
    if let Err(e) = state::write_json(&seen_path, &seen) {
        let message = state::write_failure(deployer.state.root(), &e);
        error!(command_id = %command.command_id, "{message}; reporting the command failed without running it");
        return direct
            .fail(outbox, alive, &command.command_id, message)
            .await;
    }
    forget_old_commands(&deployer.state.commands_dir());
    let abort = CancellationToken::new();
    if let Ok(mut r) = running.lock() {
        *r = Some((command.command_id.clone(), abort.clone()));
    }
    let observer = Reporter {
        outbox: outbox.clone(),
        command_id: command.command_id.clone(),
    };
    let completed = match request_from(&command) {
        Err(message) => Ending::failed(None, message).report(),
        Ok(req) => {
            let stop = Stop {
                abort: abort.clone(),
                shutdown: shutdown.clone(),
            };
            let run = deployer.run(&req, &observer, &stop);
            tokio::pin!(run);
            let result = tokio::select! {
                r = &mut run => r,
                () = heartbeat(alive, &deployer.state, &command.command_id, &abort) => run.await,
            };
            match result {
                Ok(record) => record.ending().report(),
                Err(e) => {
                    error!(deployment_id = %command.deployment_id, "deployment could not run: {e:#}");
                    let message = if state::is_no_space(&e) {
                        state::write_failure(deployer.state.root(), &e)
                    } else {
                        format!("the agent could not run the deployment: {e:#}")
                    };
                    Ending::failed(None, message).report()
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
    // Checked again here: a hook must never see a reserved variable set by a command.
    let problems = hoist_protocol::variables::problems(&command.variables);
    if !problems.is_empty() {
        return Err(format!(
            "invalid deployment variables: {}",
            problems.join("; ")
        ));
    }
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
        revision_description: command.revision.describe(),
        appspec_path: command.appspec_path.clone(),
        events,
        file_exists_behavior,
        ignore_application_stop_failures: command.ignore_application_stop_failures,
        bundle_env,
        variables: command
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signature: command.signature.clone(),
    })
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

    fn command_with(variables: &[(&str, &str)]) -> Command {
        Command {
            command_id: "c-1".into(),
            deployment_id: "d-1".into(),
            application: "shop".into(),
            deployment_group: "staging".into(),
            deployment_group_id: "g-1".into(),
            revision: Revision::Git {
                repository: "https://git.example/shop".into(),
                commit: "a".repeat(40),
            },
            appspec_path: None,
            file_exists_behavior: None,
            events: Vec::new(),
            ignore_application_stop_failures: false,
            variables: variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            signature: None,
        }
    }

    #[test]
    fn a_command_carries_its_variables_and_never_a_reserved_one() {
        let req = request_from(&command_with(&[("DEPLOY_MODE", "destructive")]))
            .expect("valid variables");
        assert_eq!(
            req.variables,
            vec![("DEPLOY_MODE".to_owned(), "destructive".to_owned())]
        );
        for (name, value) in [
            ("DEPLOYMENT_ID", "d-9"),
            ("PATH", "/tmp"),
            ("BUNDLE_KEY", "x"),
        ] {
            let Err(err) = request_from(&command_with(&[(name, value)])) else {
                panic!("a reserved variable is refused");
            };
            assert!(err.contains(name) && err.contains("reserved"), "{err}");
        }
        let Err(err) = request_from(&command_with(&[("lower", "x")])) else {
            panic!("a bad name is refused");
        };
        assert!(err.contains("[A-Z_]"), "{err}");
    }
}
