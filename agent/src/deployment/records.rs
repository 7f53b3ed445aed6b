//! What one event produced ([`Step`]) and how it ended ([`EventResult`]), and the one
//! conversion of that result to its record in `result.json` ([`EventResult::record`]); the
//! report is made from the record ([`crate::state::EventRecord::report`]), so what the host
//! keeps and what the coordinator is told cannot differ.

use std::time::Duration;

use hoist_appspec::LifecycleEvent;
use hoist_protocol::agent::{ErrorCode, EventStatus, ReportBody};

use crate::hooks::{HookOutcome, ScriptExit};
use crate::state::EventRecord;

/// What an event produced, before timing and tail are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Succeeded,
    /// Nothing to do, and why.
    Skipped(String),
    Halted(Halt),
}

/// An event that did not succeed, and whether the deployment fails or was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Halt {
    /// The deployment fails (unless the failure of a previous revision's hook is ignored).
    Failed(Problem),
    /// An abort or the agent's shutdown stopped it: the deployment ends stopped.
    Stopped(Problem),
}

/// What went wrong in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub code: ErrorCode,
    pub message: String,
    /// The script that failed, when one did.
    pub script: Option<String>,
    pub exit_code: Option<i32>,
}

impl Problem {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            script: None,
            exit_code: None,
        }
    }

    fn of_script(code: ErrorCode, location: &str, message: String) -> Problem {
        Problem {
            script: Some(location.to_string()),
            ..Problem::new(code, message)
        }
    }
}

impl Halt {
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> Halt {
        Halt::Failed(Problem::new(code, message))
    }

    pub fn stopped(message: impl Into<String>) -> Halt {
        Halt::Stopped(Problem::new(ErrorCode::Aborted, message))
    }
}

impl Step {
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> Step {
        Step::Halted(Halt::failed(code, message))
    }

    /// The step of script `location` that ended as `outcome`.
    pub fn of_script(location: &str, outcome: HookOutcome) -> Step {
        let failed =
            |code, message| Step::Halted(Halt::Failed(Problem::of_script(code, location, message)));
        match outcome {
            HookOutcome::Succeeded => Step::Succeeded,
            HookOutcome::Failed(ScriptExit::Code(code)) => Step::Halted(Halt::Failed(Problem {
                exit_code: Some(code),
                ..Problem::of_script(
                    ErrorCode::ScriptFailed,
                    location,
                    format!("script {location} exited with code {code}"),
                )
            })),
            HookOutcome::Failed(ScriptExit::Signal(signal)) => failed(
                ErrorCode::ScriptFailed,
                format!("script {location} was killed by signal {signal}"),
            ),
            HookOutcome::TimedOut { after } => failed(
                ErrorCode::ScriptTimedOut,
                format!("script {location} timed out after {} s", after.as_secs()),
            ),
            HookOutcome::Missing => failed(
                ErrorCode::ScriptMissing,
                format!("script {location} does not exist in the bundle"),
            ),
            HookOutcome::NotExecutable { reason } => failed(
                ErrorCode::ScriptNotExecutable,
                format!("script {location} cannot be run: {reason}"),
            ),
            HookOutcome::RunAsFailed { reason } => failed(
                ErrorCode::RunAsFailed,
                format!("script {location}: runas failed: {reason}"),
            ),
            HookOutcome::Interrupted => Step::Halted(Halt::Stopped(Problem::of_script(
                ErrorCode::Aborted,
                location,
                format!("script {location} was stopped because the agent is shutting down"),
            ))),
            HookOutcome::SpawnFailed { reason } => failed(
                ErrorCode::Unknown,
                format!("script {location} could not be started: {reason}"),
            ),
        }
    }
}

/// How one event ended, as told to the observer and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventResult {
    pub event: LifecycleEvent,
    pub status: EventStatus,
    pub duration: Duration,
    pub error_code: Option<ErrorCode>,
    pub message: Option<String>,
    pub script: Option<String>,
    pub exit_code: Option<i32>,
    /// The last lines of this event's script output.
    pub log_tail: Option<String>,
}

impl EventResult {
    /// The result of `event` that ended with `status` after `duration`, as `step` says.
    pub(super) fn new(
        event: LifecycleEvent,
        status: EventStatus,
        step: &Step,
        duration: Duration,
        log_tail: Option<String>,
    ) -> EventResult {
        let mut result = EventResult {
            event,
            status,
            duration,
            error_code: None,
            message: None,
            script: None,
            exit_code: None,
            log_tail,
        };
        match step {
            Step::Succeeded => {}
            Step::Skipped(why) => result.message = Some(why.clone()),
            Step::Halted(Halt::Failed(p) | Halt::Stopped(p)) => {
                result.error_code = Some(p.code);
                result.message = Some(p.message.clone());
                result.script = p.script.clone();
                result.exit_code = p.exit_code;
            }
        }
        result
    }

    /// The event's record in `result.json`.
    pub fn record(&self) -> EventRecord {
        EventRecord {
            event: self.event.to_string(),
            status: self.status,
            duration_ms: self.duration.as_millis() as u64,
            error_code: self.error_code,
            message: self.message.clone(),
            script: self.script.clone(),
            exit_code: self.exit_code,
        }
    }

    /// The `EventEnded` report of the event: its record and the tail of its output.
    pub fn report(&self) -> ReportBody {
        self.record().report(self.log_tail.clone())
    }
}

pub(super) fn status_word(status: EventStatus) -> &'static str {
    match status {
        EventStatus::Succeeded => "succeeded",
        EventStatus::Failed => "failed",
        EventStatus::FailedIgnored => "failed (ignored)",
        EventStatus::Skipped => "skipped",
        EventStatus::Unknown => "unknown",
    }
}
