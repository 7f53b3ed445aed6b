//! Event reports: queued, checked against their command, applied to it, and written in
//! batches (group commit) by one writer at a time. Not here: what an ended command does to
//! its deployment (`deployments`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use hoist_protocol::agent::{self, EventStatus, Report, ReportAck, ReportBody};
use hoist_protocol::operator::{CommandState, DeploymentState, HostEvent};
use tokio::sync::oneshot;

use super::leases::expired_here;
use super::lock::Locked;
use super::states::{command_transition, CommandEvent};
use super::sync::after_command;
use super::{error_chain, locked, now_ms, Result, Service, ServiceError};
use crate::bounds;
use crate::store::{CommandRow, DeploymentRow, HostContact, HostRow, HostSyncRow, ReportRow};

#[derive(Default)]
pub(super) struct ReportQueue {
    reports: Vec<QueuedReport>,
    /// A writer ([`Service::write_reports`]) is running and will take what is queued.
    writing: bool,
}

/// An event report waiting for its batch, and where its answer goes.
struct QueuedReport {
    host_id: String,
    host_name: String,
    command_id: String,
    report: Report,
    answer: oneshot::Sender<Result<ReportAck>>,
}

/// Marks the report writer stopped if it unwinds; a writer that returns has already done
/// so itself, under the lock with which it found the queue empty (resetting it again here
/// could clear the flag of a writer started since).
struct WriterRunning<'a>(&'a Mutex<ReportQueue>);

impl Drop for WriterRunning<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            locked(self.0).writing = false;
        }
    }
}

/// A batch of reports being checked and applied before its one write.
#[derive(Default)]
struct Staged {
    /// Commands as the reports staged so far left them.
    commands: HashMap<String, CommandRow>,
    deployments: HashMap<String, DeploymentRow>,
    seqs: HashSet<(String, u64)>,
    rows: Vec<(ReportRow, CommandRow)>,
    /// The batch's reports already recorded, when read at once ([`Service::prefetch`]);
    /// `None`: each is looked up in the store as it is staged.
    recorded: Option<HashMap<(String, u64), ReportRow>>,
}

/// What a queued report gets once its batch is staged.
enum Staging {
    /// Known already (a resend): answered without writing.
    Answered(ReportAck),
    /// Written with the batch as `rows[row]`.
    Written {
        row: usize,
        ended: bool,
        aborted: bool,
    },
}

fn event_status_str(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Succeeded => "succeeded",
        EventStatus::Failed => "failed",
        EventStatus::FailedIgnored => "failed_ignored",
        EventStatus::Skipped => "skipped",
        EventStatus::Unknown => "unknown",
    }
}

fn error_code_str(c: agent::ErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Applies one event report to its command; returns true when it ended the command.
fn apply_report(cmd: &mut CommandRow, body: &ReportBody, now: u64) -> bool {
    cmd.last_report_ms = Some(now);
    match body {
        ReportBody::EventStarted { event } => {
            cmd.current_event = Some(event.clone());
            cmd.events.push(HostEvent {
                event: event.clone(),
                status: "started".into(),
                duration_ms: None,
            });
            false
        }
        ReportBody::EventEnded {
            event,
            status,
            error_code,
            message,
            script,
            exit_code,
            log_tail,
            duration_ms,
        } => {
            let ended = HostEvent {
                event: event.clone(),
                status: event_status_str(*status).into(),
                duration_ms: Some(*duration_ms),
            };
            match cmd
                .events
                .iter_mut()
                .rev()
                .find(|e| e.event == *event && e.status == "started")
            {
                Some(e) => *e = ended,
                None => cmd.events.push(ended),
            }
            if cmd.current_event.as_deref() == Some(event.as_str()) {
                cmd.current_event = None;
            }
            if *status == EventStatus::Failed {
                cmd.failed_event = Some(event.clone());
                cmd.script = script.clone();
                cmd.exit_code = *exit_code;
                cmd.error_code = error_code.map(error_code_str);
                cmd.message = message.clone();
            }
            if log_tail.is_some() {
                cmd.log_tail = log_tail.clone();
            }
            false
        }
        ReportBody::Completed {
            status,
            failed_event,
            message,
        } => {
            cmd.current_event = None;
            // A command that already ended here (host lost, or never handed out) keeps
            // that verdict.
            let event = CommandEvent::Completed {
                status: *status,
                failed_event: failed_event.as_deref(),
                message: message.as_deref(),
            };
            command_transition(cmd, event, now)
        }
        ReportBody::Unknown => false,
    }
}

impl Service {
    // ---- event reports ----

    /// Queues an event report of `host`'s command for writing; idempotent on (command,
    /// seq). The answer comes once the report is durable. Reports queued together are
    /// written in one transaction (group commit) by one writer: when this returns true,
    /// no writer is running and the caller must run [`Service::write_reports`] on a
    /// blocking thread.
    pub fn queue_report(
        &self,
        host: &HostRow,
        command_id: &str,
        report: Report,
    ) -> (oneshot::Receiver<Result<ReportAck>>, bool) {
        let (answer, answered) = oneshot::channel();
        // Refused or capped before it takes a place in the queue.
        let report = match bounds::bound_report(report) {
            Ok(r) => r,
            Err(why) => {
                let _ = answer.send(Err(ServiceError::Invalid(why)));
                return (answered, false);
            }
        };
        let mut queue = locked(&self.queued_reports);
        queue.reports.push(QueuedReport {
            host_id: host.id.clone(),
            host_name: host.name.clone(),
            command_id: command_id.to_owned(),
            report,
            answer,
        });
        let start = !queue.writing;
        queue.writing = true;
        (answered, start)
    }

    /// Writes queued reports, a batch at a time, until none is left. Blocking.
    pub fn write_reports(&self) {
        let _running = WriterRunning(&self.queued_reports);
        loop {
            // Commands just handed to held polls go out before reports are written.
            self.hand_outs.wait_taken(super::HAND_OUT_FIRST);
            let batch = {
                let mut queue = locked(&self.queued_reports);
                if queue.reports.is_empty() {
                    // Stopped under the same lock a new report would see it by.
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.reports)
            };
            match self.lock() {
                Ok(lock) => self.record_reports(&lock, batch),
                Err(e) => {
                    let why = format!("writing the report: {}", error_chain(&e));
                    tracing::error!(error = %why, reports = batch.len(), "taking the decision lock");
                    for q in batch {
                        let _ = q.answer.send(Err(ServiceError::Internal(why.clone())));
                    }
                }
            }
        }
    }

    fn record_reports(&self, lock: &Locked<'_>, batch: Vec<QueuedReport>) {
        let now = now_ms();
        let mut staged = Staged::default();
        if let Err(e) = self.prefetch(&batch, &mut staged) {
            // Each report then reads what it needs itself.
            tracing::warn!(error = %error_chain(&e), "reading a batch of reports' commands");
            staged = Staged::default();
        }
        let steps: Vec<Result<Staging>> = batch
            .iter()
            .map(|q| self.stage_report(q, now, &mut staged))
            .collect();
        for q in &batch {
            let contact = HostContact {
                last_seen_ms: now,
                details: None,
            };
            self.note_contact(&q.host_id, contact);
        }
        // The hosts' standing in their groups changes with the commands that ended, in the
        // reports' own transaction.
        let syncs = match self.ended_syncs(&batch, &steps, &staged, now) {
            Ok(syncs) => syncs,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "reading hosts' sync rows");
                Vec::new()
            }
        };
        // The contacts are written by the timer, merged per host: a host reporting five
        // times a second costs one row update, not five.
        let written = match self.store.insert_reports_with(&staged.rows, &syncs) {
            Ok(flags) => Ok(flags),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), reports = staged.rows.len(),
                    "writing event reports");
                Err(format!("writing the report: {}", error_chain(&e)))
            }
        };
        let mut ended: Vec<&str> = Vec::new();
        if written.is_ok() {
            for (q, step) in batch.iter().zip(&steps) {
                if let Ok(Staging::Written {
                    row, ended: true, ..
                }) = step
                {
                    if let Some((_, cmd)) = staged.rows.get(*row) {
                        tracing::info!(command_id = %cmd.id, deployment_id = %cmd.deployment_id,
                            host = ?q.host_name, state = %cmd.state, "command ended");
                        if !ended.contains(&cmd.deployment_id.as_str()) {
                            ended.push(&cmd.deployment_id);
                        }
                    }
                }
            }
            for id in &ended {
                // The reports are written; a failure here leaves the deployment to be
                // advanced at the next report, sweep or restart.
                if let Err(e) = self.advance(lock, id) {
                    tracing::error!(deployment_id = %id, error = %e, "advancing a deployment");
                }
            }
            if !staged.rows.is_empty() {
                self.changed();
            }
        }
        for (q, step) in batch.into_iter().zip(steps) {
            let answer = match step {
                Err(e) => Err(e),
                Ok(Staging::Answered(ack)) => Ok(ack),
                Ok(Staging::Written { row, aborted, .. }) => match &written {
                    Ok(flags) => Ok(ReportAck {
                        recorded: flags.get(row).copied().unwrap_or(false),
                        aborted,
                    }),
                    Err(why) => Err(ServiceError::Internal(why.clone())),
                },
            };
            // The caller may be gone (its request dropped); nothing to tell then.
            let _ = q.answer.send(answer);
        }
    }

    /// Reads the batch's commands and which of its reports are recorded already, in one
    /// query each: on a database across the network, a batch of a thousand reports costs
    /// two round trips before its write instead of two thousand.
    fn prefetch(&self, batch: &[QueuedReport], staged: &mut Staged) -> Result<()> {
        let mut ids: Vec<&str> = batch.iter().map(|q| q.command_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        for c in self.store.commands_among(&ids)? {
            staged.commands.insert(c.id.clone(), c);
        }
        let keys: Vec<(&str, u64)> = batch
            .iter()
            .map(|q| (q.command_id.as_str(), q.report.seq))
            .collect();
        let recorded = self.store.reports_among(&keys)?;
        staged.recorded = Some(
            recorded
                .into_iter()
                .map(|r| ((r.command_id.clone(), r.seq), r))
                .collect(),
        );
        Ok(())
    }

    /// The sync rows of the hosts whose commands the batch ended, their stored rows read
    /// in one query.
    fn ended_syncs(
        &self,
        batch: &[QueuedReport],
        steps: &[Result<Staging>],
        staged: &Staged,
        now: u64,
    ) -> Result<Vec<HostSyncRow>> {
        let ended: Vec<(&CommandRow, &DeploymentRow)> = steps
            .iter()
            .take(batch.len())
            .filter_map(|step| match step {
                Ok(Staging::Written {
                    row, ended: true, ..
                }) => staged.rows.get(*row).map(|(_, cmd)| cmd),
                _ => None,
            })
            .filter_map(|cmd| Some((cmd, staged.deployments.get(&cmd.deployment_id)?)))
            .collect();
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(&str, &str)> = ended
            .iter()
            .map(|(cmd, d)| (cmd.host_id.as_str(), d.group_id.as_str()))
            .collect();
        let stored: HashMap<(String, String), HostSyncRow> = self
            .store
            .host_syncs_among(&keys)?
            .into_iter()
            .map(|r| ((r.host_id.clone(), r.group_id.clone()), r))
            .collect();
        let mut out: HashMap<(String, String), HostSyncRow> = HashMap::new();
        let base = self.config.catch_up_retry_base();
        for (cmd, d) in ended {
            let key = (cmd.host_id.clone(), d.group_id.clone());
            // A host's second ended command in the batch starts from its first's row; an
            // end that changes nothing leaves the row as it was.
            let prev = out.get(&key).or_else(|| stored.get(&key)).cloned();
            if let Some(next) = after_command(prev, d, cmd, now, base) {
                out.insert(key, next);
            }
        }
        Ok(out.into_values().collect())
    }

    /// Checks one queued report against its command and applies it to the staged copy.
    fn stage_report(&self, q: &QueuedReport, now: u64, staged: &mut Staged) -> Result<Staging> {
        let command_id = q.command_id.as_str();
        let not_found = || ServiceError::NotFound(format!("no command {command_id} for this host"));
        let mut cmd = match staged.commands.get(command_id) {
            Some(c) => c.clone(),
            // Read with the batch: not stored.
            None if staged.recorded.is_some() => return Err(not_found()),
            None => self.store.command(command_id)?.ok_or_else(not_found)?,
        };
        if cmd.host_id != q.host_id {
            return Err(not_found());
        }
        let stopped = match staged.deployments.get(&cmd.deployment_id) {
            Some(d) => d.state == DeploymentState::Stopped,
            None => {
                let d = self
                    .store
                    .deployment(&cmd.deployment_id)?
                    .ok_or_else(not_found)?;
                let stopped = d.state == DeploymentState::Stopped;
                staged.deployments.insert(d.id.clone(), d);
                stopped
            }
        };
        let aborted = |cmd: &CommandRow| {
            cmd.state == CommandState::InProgress && stopped || expired_here(cmd)
        };
        let seq = q.report.seq;
        let key = (command_id.to_owned(), seq);
        let resent = || {
            Ok(Staging::Answered(ReportAck {
                recorded: false,
                aborted: aborted(&cmd),
            }))
        };
        if staged.seqs.contains(&key) {
            return resent();
        }
        let body_json = serde_json::to_string(&q.report).unwrap_or_default();
        // A command that has ended takes no more reports, except an identical resend of
        // one it recorded (its acknowledgement was lost).
        let ended_already = !matches!(cmd.state, CommandState::Pending | CommandState::InProgress);
        let stored = match &staged.recorded {
            Some(recorded) => recorded.get(&key).cloned(),
            None => self.store.report(command_id, seq)?,
        };
        match stored {
            Some(stored) if !ended_already || stored.body_json == body_json => return resent(),
            Some(_) => {
                return Err(ServiceError::Conflict(format!(
                    "command {command_id} has ended ({}); report {seq} differs from the one \
                     recorded under that number",
                    cmd.state
                )))
            }
            None if ended_already => {
                return Err(ServiceError::Conflict(format!(
                    "command {command_id} has ended ({}); it takes no more reports",
                    cmd.state
                )))
            }
            None => {}
        }
        let ended = apply_report(&mut cmd, &q.report.body, now);
        let row = ReportRow {
            command_id: command_id.to_owned(),
            seq,
            at_ms: q.report.at_ms,
            received_ms: now,
            body_json,
        };
        let step = Staging::Written {
            row: staged.rows.len(),
            ended,
            aborted: !ended && aborted(&cmd),
        };
        staged.seqs.insert(key);
        staged.rows.push((row, cmd.clone()));
        staged.commands.insert(command_id.to_owned(), cmd);
        Ok(step)
    }
}
