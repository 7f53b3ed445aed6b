//! What a starting agent (or local deploy) does about a deployment that was in flight when
//! the previous process died: kill the orphaned hook's process group, record the interrupted
//! event as failed ("agent restarted during <event>"), and queue the reports that tell the
//! coordinator, so no deployment is left hanging.
//!
//! Runs only while holding the host lock, so the process that wrote `in-flight.json` is gone.

use std::time::{Duration, Instant};

use hoist_protocol::agent::{CommandStatus, ErrorCode, EventStatus, ReportBody};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::outbox::Outbox;
use crate::state::{self, DeploymentRecord, EventRecord, InFlight, RecordStatus, StateDir};

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub deployment_id: String,
    pub command_id: Option<String>,
    pub event: String,
    pub killed_pgid: Option<i32>,
}

/// Recovers an interrupted deployment, if any. Reports go to `outbox` when the deployment
/// came from a coordinator (`command_id` set) and an outbox is given.
pub async fn recover(
    state: &StateDir,
    outbox: Option<&Outbox>,
    kill_grace: Duration,
) -> anyhow::Result<Option<Recovered>> {
    let Some(in_flight) = state::read_json::<InFlight>(&state.in_flight_path())? else {
        return Ok(None);
    };
    warn!(
        deployment_id = %in_flight.deployment_id,
        lifecycle_event = %in_flight.event,
        "found a deployment interrupted by an agent restart"
    );
    let killed_pgid = match in_flight.pgid {
        Some(pgid) if pgid > 1 => {
            kill_group(pgid, kill_grace).await;
            Some(pgid)
        }
        _ => None,
    };
    let message = format!("agent restarted during {}", in_flight.event);

    let record_path = state
        .deployment_dir(&in_flight.group, &in_flight.deployment_id)
        .join("result.json");
    if let Some(mut record) = state::read_json::<DeploymentRecord>(&record_path)? {
        if record.status == RecordStatus::InProgress {
            record.events.push(EventRecord {
                event: in_flight.event.clone(),
                status: EventStatus::Failed,
                duration_ms: state::now_ms().saturating_sub(in_flight.event_started_at_ms),
                error_code: Some(ErrorCode::AgentRestarted),
                message: Some(message.clone()),
                script: in_flight.script.clone(),
                exit_code: None,
            });
            record.status = RecordStatus::Failed;
            record.failed_event = Some(in_flight.event.clone());
            record.error = Some(message.clone());
            record.ended_at_ms = Some(state::now_ms());
            state::write_json(&record_path, &record)?;
        }
    }
    if let (Some(command_id), Some(outbox)) = (&in_flight.command_id, outbox) {
        outbox.push(
            command_id,
            ReportBody::EventEnded {
                event: in_flight.event.clone(),
                status: EventStatus::Failed,
                error_code: Some(ErrorCode::AgentRestarted),
                message: Some(message.clone()),
                script: in_flight.script.clone(),
                exit_code: None,
                log_tail: None,
                duration_ms: state::now_ms().saturating_sub(in_flight.event_started_at_ms),
            },
        )?;
        outbox.push(
            command_id,
            ReportBody::Completed {
                status: CommandStatus::Failed,
                failed_event: Some(in_flight.event.clone()),
                message: Some(message.clone()),
            },
        )?;
    }
    state::remove_file(&state.in_flight_path())?;
    info!(deployment_id = %in_flight.deployment_id, "{message}; reported as failed");
    Ok(Some(Recovered {
        deployment_id: in_flight.deployment_id,
        command_id: in_flight.command_id,
        event: in_flight.event,
        killed_pgid,
    }))
}

/// SIGTERM to the group, then SIGKILL if anything is left after `grace`.
async fn kill_group(pgid: i32, grace: Duration) {
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return; // Nothing left of it.
    }
    info!(pgid, "stopping the orphaned hook's process group");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if killpg(group, None).is_err() {
            return;
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
}
