//! Report bodies as an agent sends them, for the simulated hosts of the coordinator's tests
//! and of the capacity benchmark: one builder per shape, so both send what the agent sends.
//!
//! Bodies only: the `seq` and `at_ms` around them, and sending them, stay with the caller.

use hoist_protocol::agent::{CommandStatus, EventStatus, ReportBody};

/// An event has started.
pub fn started(event: &str) -> ReportBody {
    ReportBody::EventStarted {
        event: event.into(),
    }
}

/// An event that ended well, as an agent reports it (its duration is not meaningful).
pub fn succeeded(event: &str) -> ReportBody {
    ReportBody::EventEnded {
        event: event.into(),
        status: EventStatus::Succeeded,
        error_code: None,
        message: None,
        script: None,
        exit_code: None,
        log_tail: None,
        duration_ms: 5,
    }
}

/// The command is over and every event succeeded.
pub fn completed_ok() -> ReportBody {
    ReportBody::Completed {
        status: CommandStatus::Succeeded,
        failed_event: None,
        message: None,
    }
}
