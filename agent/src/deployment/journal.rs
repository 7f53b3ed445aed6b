//! The bookkeeping around every event of one deployment: the in-flight marker, the hook
//! log's notes, `result.json`, and the observer's calls. It decides nothing about what an
//! event does; it turns what an event produced into its record and says when that ends the
//! deployment.
//!
//! One durable write per event: the marker at the event's start, carrying the deployment's
//! record so far, which is all recovery needs after a crash of the host (one line appended to
//! `in-flight.log` and one `fdatasync`; see `state::in_flight`). What a restarted
//! agent can rebuild from it or only needs in the same boot is written without a sync:
//! `result.json` between events (rebuilt from the marker by `recovery`), and the running
//! script and its process group (no process group outlives a reboot). `result.json` is made
//! durable once, when the deployment ends.

use std::sync::Arc;
use std::time::Instant;

use hoist_appspec::LifecycleEvent;
use hoist_protocol::agent::EventStatus;
use tracing::{info, warn};

use super::records::{status_word, EventResult, Halt, Step};
use super::{DeploymentRequest, Observer, Stop};
use crate::hooks::{HookLog, LogFields};
use crate::state::{
    self, DeploymentDir, DeploymentRecord, Ending, InFlight, RecordStatus, StateDir, SCHEMA_VERSION,
};

pub(super) struct Journal<'a> {
    pub req: &'a DeploymentRequest,
    pub stop: &'a Stop,
    pub deployment: DeploymentDir,
    pub log: Arc<HookLog>,
    state: &'a StateDir,
    observer: &'a dyn Observer,
    in_flight: InFlight,
    /// Whether an event's marker was written yet.
    marked: bool,
    record: DeploymentRecord,
}

impl<'a> Journal<'a> {
    /// Creates the deployment's directory and log and writes its first record.
    pub fn start(
        state: &'a StateDir,
        req: &'a DeploymentRequest,
        observer: &'a dyn Observer,
        stop: &'a Stop,
    ) -> anyhow::Result<Journal<'a>> {
        // Per-group state is keyed by the group's id: two applications may each have a
        // group of the same name on this host.
        let group = state.prepare_group(
            &req.group_id,
            &req.application,
            &req.group,
            req.command_id.is_some(),
        )?;
        let deployment = group.deployment(&req.deployment_id);
        state::create_dir(deployment.path(), 0o755)?;
        state::create_private_dir(&deployment.logs_dir())?;
        let log_path = deployment.hook_log_path();
        let log = Arc::new(HookLog::open(&log_path).map_err(|e| {
            anyhow::Error::new(e).context(format!("opening hook log {}", log_path.display()))
        })?);
        log.set_fields(LogFields {
            deployment_id: req.deployment_id.clone(),
            application: req.application.clone(),
            deployment_group: req.group.clone(),
            lifecycle_event: String::new(),
        });
        let started_at_ms = state::now_ms();
        let record = DeploymentRecord {
            schema_version: SCHEMA_VERSION,
            deployment_id: req.deployment_id.clone(),
            command_id: req.command_id.clone(),
            application: req.application.clone(),
            group: req.group.clone(),
            revision_description: req.revision_description.clone(),
            started_at_ms,
            ended_at_ms: None,
            status: RecordStatus::InProgress,
            events: Vec::new(),
            failed_event: None,
            error: None,
            log_path,
            log_tail: None,
        };
        state::write_json_unsynced(&deployment.record_path(), &record)?;
        info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, revision = %req.revision_description, "deployment started");
        log.note(&format!(
            "deployment {} of {} to group {} started: {}",
            req.deployment_id, req.application, req.group, req.revision_description
        ));
        let in_flight = InFlight {
            schema_version: SCHEMA_VERSION,
            deployment_id: req.deployment_id.clone(),
            command_id: req.command_id.clone(),
            application: req.application.clone(),
            group: req.group.clone(),
            group_id: Some(req.group_id.clone()),
            agent_pid: std::process::id(),
            started_at_ms,
            event: String::new(),
            event_started_at_ms: started_at_ms,
            script: None,
            pgid: None,
            boot_id: None,
            pgid_start_time: None,
            record: None,
        };
        Ok(Journal {
            req,
            stop,
            deployment,
            log,
            state,
            observer,
            in_flight,
            marked: false,
            record,
        })
    }

    /// Starts `event`: marker, observer, log. `None` when the deployment was asked to stop
    /// before it (see [`Journal::stopped_before`]).
    pub fn begin(&mut self, event: LifecycleEvent) -> anyhow::Result<Option<Instant>> {
        if self.stop.requested() {
            return Ok(None);
        }
        self.in_flight.event = event.to_string();
        self.in_flight.event_started_at_ms = state::now_ms();
        self.in_flight.script = None;
        self.in_flight.pgid = None;
        self.in_flight.boot_id = None;
        self.in_flight.pgid_start_time = None;
        self.in_flight.record = Some(self.record.clone());
        // The deployment's first event starts the marker's log afresh.
        self.state.begin_in_flight(&self.in_flight, !self.marked)?;
        self.marked = true;
        self.log.set_event(event.as_str());
        self.observer.event_started(event);
        let req = self.req;
        info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, "lifecycle event started");
        self.log.note(&format!("{event} started"));
        Ok(Some(Instant::now()))
    }

    /// How the deployment ends when it was asked to stop before `event` began.
    pub fn stopped_before(&self, event: LifecycleEvent) -> Ending {
        let message = format!("deployment stopped before {event}");
        self.log.note(&message);
        Ending {
            status: RecordStatus::Stopped,
            failed_event: None,
            error: Some(message),
        }
    }

    /// Marks script `location` of `event` as running (its process group is not known yet).
    pub fn script_started(&mut self, event: LifecycleEvent, location: &str) -> anyhow::Result<()> {
        self.in_flight.script = Some(location.to_string());
        self.state.record_running_script(&self.in_flight)?;
        self.observer.script_started(event, location);
        Ok(())
    }

    /// Records the process group of the running script in the marker's script part, with
    /// what identifies it, so recovery after a crash can tell this group from a later one of
    /// the same id.
    pub fn pgid_recorder(&self) -> impl Fn(i32) + Send + Sync + 'static {
        let state = self.state.clone();
        let snapshot = InFlight {
            record: None,
            ..self.in_flight.clone()
        };
        move |pgid: i32| {
            let mut marker = snapshot.clone();
            marker.pgid = Some(pgid);
            // The script leads its own group: its identity lets recovery tell this group
            // from a later one that got the same id.
            marker.boot_id = crate::hooks::identity::boot_id();
            marker.pgid_start_time = crate::hooks::identity::process_start_time(pgid);
            if let Err(e) = state.record_running_script(&marker) {
                warn!("recording the process group of a running script: {e:#}");
            }
        }
    }

    /// Ends `event` begun at `started` with `step`; the deployment's ending when the step
    /// ends it. A failed hook of the previous revision is ignored (`failed_ignored`) when
    /// the deployment says so; a stop never is.
    pub fn end(
        &mut self,
        event: LifecycleEvent,
        step: Step,
        started: Instant,
    ) -> anyhow::Result<Option<Ending>> {
        let ignore = event.uses_previous_revision() && self.req.ignore_application_stop_failures;
        let status = match step {
            Step::Halted(Halt::Failed(_)) if ignore => EventStatus::FailedIgnored,
            Step::Halted(halt) => return self.halted(event, halt, started).map(Some),
            Step::Succeeded => EventStatus::Succeeded,
            Step::Skipped(_) => EventStatus::Skipped,
        };
        self.record_event(event, status, &step, started)?;
        Ok(None)
    }

    /// Ends `event` begun at `started` as succeeded.
    pub fn succeeded(&mut self, event: LifecycleEvent, started: Instant) -> anyhow::Result<()> {
        self.record_event(event, EventStatus::Succeeded, &Step::Succeeded, started)
    }

    /// Ends `event` begun at `started` as failed, and with it the deployment.
    pub fn halted(
        &mut self,
        event: LifecycleEvent,
        halt: Halt,
        started: Instant,
    ) -> anyhow::Result<Ending> {
        let (status, error) = match &halt {
            Halt::Failed(problem) => (RecordStatus::Failed, problem.message.clone()),
            Halt::Stopped(problem) => (RecordStatus::Stopped, problem.message.clone()),
        };
        self.record_event(event, EventStatus::Failed, &Step::Halted(halt), started)?;
        Ok(Ending {
            status,
            failed_event: Some(event.to_string()),
            error: Some(error),
        })
    }

    fn record_event(
        &mut self,
        event: LifecycleEvent,
        status: EventStatus,
        step: &Step,
        started: Instant,
    ) -> anyhow::Result<()> {
        let tail = self.log.take_tail();
        let result = EventResult::new(
            event,
            status,
            step,
            started.elapsed(),
            (!tail.is_empty()).then_some(tail),
        );
        self.log.note(&format!(
            "{event} {}{}",
            status_word(status),
            result
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
        let req = self.req;
        match status {
            EventStatus::Failed => {
                warn!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, error = ?result.message, "lifecycle event failed")
            }
            _ => {
                info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, status = status_word(status), "lifecycle event ended")
            }
        }
        self.observer.event_ended(&result);
        self.record.events.push(result.record());
        if result.log_tail.is_some() {
            self.record.log_tail = result.log_tail;
        }
        // Unsynced: the next event's marker carries it durably, and so does the final write.
        state::write_json_unsynced(&self.deployment.record_path(), &self.record)
    }

    /// Writes the deployment's final record and clears the in-flight marker.
    pub fn finish(mut self, ending: Ending) -> anyhow::Result<DeploymentRecord> {
        self.record.end(ending, state::now_ms());
        state::write_json(&self.deployment.record_path(), &self.record)?;
        self.state.clear_in_flight()?;
        let status = self.record.status.as_str();
        self.log.note(&format!("deployment {status}"));
        let req = self.req;
        info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, status, "deployment ended");
        Ok(self.record)
    }
}
