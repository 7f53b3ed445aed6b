//! Reports: a deployment's progress queued in the outbox as it happens ([`Reporter`]), and
//! the task that sends what is queued, in order, until each is acknowledged.

use std::time::Duration;

use hoist_appspec::LifecycleEvent;
use hoist_protocol::agent::ReportBody;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{note_contact, Running};
use crate::client::Client;
use crate::deployment::{EventResult, Observer};
use crate::outbox::Outbox;
use crate::state::HostCredentials;
use crate::state::StateDir;

/// Turns a deployment's progress into queued reports.
pub(super) struct Reporter {
    pub outbox: Outbox,
    pub command_id: String,
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
        let body = r.report();
        if let Err(e) = self.outbox.push(&self.command_id, body) {
            error!("queueing a report for {}: {e:#}", self.command_id);
        }
    }
}

/// Sends queued reports in order until `stop`; an "aborted" answer cancels the running
/// command's abort token.
pub(super) async fn send_reports(
    client: Client,
    host: HostCredentials,
    outbox: Outbox,
    state: StateDir,
    running: Running,
    poll: crate::config::PollConfig,
    stop: CancellationToken,
) {
    let policy = crate::retry::RetryPolicy::from_config(&poll);
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

pub(super) async fn wait_outbox_empty(outbox: &Outbox) {
    loop {
        if outbox.pending().map(|p| p.is_empty()).unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
