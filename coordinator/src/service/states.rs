//! The two state machines of the service: a command's (one host's part of a deployment)
//! and a deployment's. Each state changes only in its transition function here, fed with
//! an explicit event, through one exhaustive `match (state, event)`; a pair that is not a
//! transition leaves the row as it was and says so.
//!
//! Deliberately not here: deciding that an event happened (the rollout rules in
//! `deployments`, reports in `reports`, the lease sweep in `leases`), logging it, or
//! writing the rows.

use std::time::Duration;

use hoist_protocol::agent::CommandStatus;
use hoist_protocol::operator::{CommandState, DeploymentState};

use crate::store::{CommandRow, DeploymentRow};

/// Why the coordinator itself failed a command: neither a report nor a heartbeat named it
/// for the lease. Kept in the command's `error_code` (stored and shown to operators) as
/// the strings of [`LeaseErrorCode::as_str`], beside the codes hosts report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseErrorCode {
    /// The host neither reported nor polled: `host_lost`.
    HostLost,
    /// The host still polls but says nothing about the command: `no_report`.
    NoReport,
}

impl LeaseErrorCode {
    const ALL: [LeaseErrorCode; 2] = [LeaseErrorCode::HostLost, LeaseErrorCode::NoReport];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            LeaseErrorCode::HostLost => "host_lost",
            LeaseErrorCode::NoReport => "no_report",
        }
    }

    /// The lease code a stored `error_code` names, if it names one.
    pub(super) fn parse(code: &str) -> Option<LeaseErrorCode> {
        LeaseErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// The error code hosts report for an event their agent's restart cut short.
pub(super) const AGENT_RESTARTED: &str = "agent_restarted";

/// What can happen to a command.
#[derive(Debug, Clone, Copy)]
pub(super) enum CommandEvent<'a> {
    /// The rollout hands the command to its host.
    Started,
    /// The host reported the command over.
    Completed {
        status: CommandStatus,
        failed_event: Option<&'a str>,
        message: Option<&'a str>,
    },
    /// The deployment failed before this host's turn.
    DeploymentFailed,
    /// An operator stopped the deployment before this host's turn.
    DeploymentStopped,
    /// Neither a report nor a heartbeat named the command for `lease`.
    LeaseExpired {
        code: LeaseErrorCode,
        lease: Duration,
    },
    /// Its host, done with its batch, went silent for `lease` while the deployment baked.
    LostWhileBaking { lease: Duration },
}

/// Applies `event` to `cmd` at `now` (ms); returns whether the command's state changed.
pub(super) fn command_transition(cmd: &mut CommandRow, event: CommandEvent<'_>, now: u64) -> bool {
    use CommandEvent as E;
    use CommandState as S;
    let next = match (cmd.state, event) {
        (S::Pending, E::Started) => {
            cmd.started_ms = Some(now);
            S::InProgress
        }
        (
            S::InProgress,
            E::Completed {
                status,
                failed_event,
                message,
            },
        ) => {
            cmd.ended_ms = Some(now);
            if let Some(e) = failed_event {
                cmd.failed_event = Some(e.to_owned());
            }
            if let Some(m) = message {
                cmd.message = Some(m.to_owned());
            }
            match status {
                CommandStatus::Succeeded => S::Succeeded,
                CommandStatus::Stopped => S::Stopped,
                // The failing event's report named the agent's restart: the event was cut
                // short, not failed by its script.
                CommandStatus::Failed | CommandStatus::Unknown
                    if cmd.error_code.as_deref() == Some(AGENT_RESTARTED) =>
                {
                    S::Interrupted
                }
                CommandStatus::Failed | CommandStatus::Unknown => S::Failed,
            }
        }
        (S::Pending, E::DeploymentFailed) => {
            cmd.message = Some("not started: the deployment failed".into());
            S::Skipped
        }
        (S::Pending, E::DeploymentStopped) => {
            cmd.message = Some("not started: the deployment was stopped".into());
            S::Skipped
        }
        (S::InProgress, E::LeaseExpired { code, lease }) => {
            let lease = humantime::format_duration(lease);
            cmd.ended_ms = Some(now);
            cmd.error_code = Some(code.as_str().into());
            cmd.message = Some(match code {
                LeaseErrorCode::NoReport => format!(
                    "no report or heartbeat for this command for {lease} although the host \
                     still polls"
                ),
                LeaseErrorCode::HostLost => format!(
                    "host lost mid-command: no report or poll for {lease}; it may or may not \
                     have run"
                ),
            });
            match code {
                // The host still polls and says nothing of it: it is not running it.
                LeaseErrorCode::NoReport => S::Failed,
                LeaseErrorCode::HostLost => S::Unknown,
            }
        }
        (S::Succeeded, E::LostWhileBaking { lease }) => {
            cmd.error_code = Some(LeaseErrorCode::HostLost.as_str().into());
            cmd.message = Some(format!(
                "host lost while the deployment baked: no poll for {}",
                humantime::format_duration(lease)
            ));
            S::Failed
        }
        // Not handed out: nothing of it runs on a host, so nothing there can end or expire.
        (S::Pending, E::Completed { .. } | E::LeaseExpired { .. } | E::LostWhileBaking { .. }) => {
            return false
        }
        // A command with its host runs on: a stop reaches it through the host ("aborted").
        (
            S::InProgress,
            E::Started | E::DeploymentFailed | E::DeploymentStopped | E::LostWhileBaking { .. },
        ) => return false,
        // Ended (host lost, skipped, or reported): the first verdict stays, but for a success
        // whose host is lost during the bake that follows it.
        (
            S::Succeeded,
            E::Started
            | E::Completed { .. }
            | E::DeploymentFailed
            | E::DeploymentStopped
            | E::LeaseExpired { .. },
        ) => return false,
        (S::Failed | S::Stopped | S::Skipped | S::Interrupted | S::Unknown, _) => return false,
    };
    cmd.state = next;
    true
}

/// What can happen to a deployment.
#[derive(Debug, Clone)]
pub(super) enum DeploymentEvent {
    /// The rollout rules found every host done and enough of them healthy.
    Succeeded,
    /// The rollout rules found it failed, for this reason.
    Failed(String),
    /// An operator stopped it.
    Stopped,
    /// An operator's deployment of the same group replaces this catch-up.
    Superseded { by: String },
    /// A batch succeeded: the next one waits until `until` (ms).
    BakeStarted { until: u64 },
    /// The bake is over: the next batch may start.
    BakeEnded,
}

/// Applies `event` to `d` at `now` (ms); returns whether the deployment's state changed.
pub(super) fn deployment_transition(
    d: &mut DeploymentRow,
    event: DeploymentEvent,
    now: u64,
) -> bool {
    use DeploymentEvent as E;
    use DeploymentState as S;
    let next = match (d.state, event) {
        (S::InProgress, E::BakeStarted { until }) => {
            if d.bake_until_ms.is_some() {
                return false;
            }
            d.bake_until_ms = Some(until);
            return true;
        }
        (S::InProgress, E::BakeEnded) => return d.bake_until_ms.take().is_some(),
        (_, E::BakeStarted { .. } | E::BakeEnded) => return false,
        (S::Pending | S::InProgress | S::Unknown, E::Superseded { by }) => {
            d.message = Some(format!("superseded by an operator's deployment {by}"));
            d.bake_until_ms = None;
            S::Stopped
        }
        (S::InProgress, E::Succeeded) => S::Succeeded,
        (S::InProgress, E::Failed(why)) => {
            d.message = Some(why);
            S::Failed
        }
        (S::Pending | S::InProgress | S::Unknown, E::Stopped) => {
            d.message = Some("stopped by an operator".into());
            d.bake_until_ms = None;
            S::Stopped
        }
        // The rollout rules decide only for a deployment in progress.
        (S::Pending | S::Unknown, E::Succeeded | E::Failed(_)) => return false,
        // Ended: the first verdict stays.
        (S::Succeeded | S::Failed | S::Stopped, _) => return false,
    };
    if next.is_terminal() {
        d.bake_until_ms = None;
    }
    d.state = next;
    d.ended_ms = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_error_codes_keep_their_stored_strings() {
        assert_eq!(LeaseErrorCode::HostLost.as_str(), "host_lost");
        assert_eq!(LeaseErrorCode::NoReport.as_str(), "no_report");
        for code in LeaseErrorCode::ALL {
            assert_eq!(LeaseErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(LeaseErrorCode::parse("script_failed"), None);
    }

    fn command(state: CommandState) -> CommandRow {
        CommandRow {
            id: "c-1".into(),
            deployment_id: "d-1".into(),
            host_id: "h-1".into(),
            host_name: "web-1".into(),
            position: 0,
            state,
            current_event: None,
            failed_event: None,
            script: None,
            exit_code: None,
            error_code: None,
            message: None,
            log_tail: None,
            events: Vec::new(),
            started_ms: None,
            ended_ms: None,
            last_report_ms: None,
        }
    }

    fn deployment(state: DeploymentState) -> DeploymentRow {
        DeploymentRow {
            id: "d-1".into(),
            application: "shop".into(),
            group_id: "g-1".into(),
            group_name: "web".into(),
            revision_id: None,
            revision: hoist_protocol::agent::Revision::Git {
                repository: "https://git.example/shop".into(),
                commit: "a".repeat(40),
            },
            signature: None,
            state,
            creator: hoist_protocol::operator::Creator::User,
            rollback_of: None,
            rolled_back_by: None,
            message: None,
            rollout: hoist_protocol::operator::RolloutConfig::AllAtOnce,
            file_exists_behavior: None,
            ignore_application_stop_failures: false,
            events: Vec::new(),
            appspec_path: None,
            created_ms: 1,
            ended_ms: None,
            bake_secs: 0,
            bake_until_ms: None,
            variables: Default::default(),
            release_id: None,
        }
    }

    #[test]
    fn each_command_event_moves_only_the_states_it_names() {
        use CommandState as S;
        let lease = Duration::from_secs(600);
        let completed = |status| CommandEvent::Completed {
            status,
            failed_event: Some("ApplicationStart"),
            message: Some("script exited with code 3"),
        };
        let events = [
            ("started", CommandEvent::Started),
            ("succeeded", completed(CommandStatus::Succeeded)),
            ("failed", completed(CommandStatus::Failed)),
            ("stopped", completed(CommandStatus::Stopped)),
            ("unknown status", completed(CommandStatus::Unknown)),
            ("deployment failed", CommandEvent::DeploymentFailed),
            ("deployment stopped", CommandEvent::DeploymentStopped),
            (
                "host lost",
                CommandEvent::LeaseExpired {
                    code: LeaseErrorCode::HostLost,
                    lease,
                },
            ),
            (
                "no report",
                CommandEvent::LeaseExpired {
                    code: LeaseErrorCode::NoReport,
                    lease,
                },
            ),
            ("lost while baking", CommandEvent::LostWhileBaking { lease }),
        ];
        // (state, event name) -> next state; every pair not listed leaves the command alone.
        let moves = [
            (S::Pending, "started", S::InProgress),
            (S::InProgress, "succeeded", S::Succeeded),
            (S::InProgress, "failed", S::Failed),
            (S::InProgress, "stopped", S::Stopped),
            (S::InProgress, "unknown status", S::Failed),
            (S::Pending, "deployment failed", S::Skipped),
            (S::Pending, "deployment stopped", S::Skipped),
            (S::InProgress, "host lost", S::Unknown),
            (S::InProgress, "no report", S::Failed),
            (S::Succeeded, "lost while baking", S::Failed),
        ];
        let states = [
            S::Pending,
            S::InProgress,
            S::Succeeded,
            S::Failed,
            S::Stopped,
            S::Skipped,
            S::Interrupted,
            S::Unknown,
        ];
        for state in states {
            for (name, event) in events {
                let mut cmd = command(state);
                let changed = command_transition(&mut cmd, event, 7);
                let want = moves
                    .iter()
                    .find(|(s, n, _)| *s == state && *n == name)
                    .map(|(_, _, next)| *next);
                match want {
                    Some(next) => {
                        assert!(changed, "{state} on {name}");
                        assert_eq!(cmd.state, next, "{state} on {name}");
                    }
                    None => assert_eq!(
                        (changed, cmd),
                        (false, command(state)),
                        "{state} on {name} must change nothing"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_command_failed_by_its_lease_says_why_with_its_code() {
        let lease = Duration::from_secs(600);
        let mut lost = command(CommandState::InProgress);
        let code = LeaseErrorCode::HostLost;
        assert!(command_transition(
            &mut lost,
            CommandEvent::LeaseExpired { code, lease },
            9
        ));
        assert_eq!(lost.state, CommandState::Unknown);
        assert_eq!(lost.error_code.as_deref(), Some("host_lost"));
        assert_eq!(
            lost.message.as_deref(),
            Some("host lost mid-command: no report or poll for 10m; it may or may not have run")
        );
        assert_eq!(lost.ended_ms, Some(9));
        let mut silent = command(CommandState::InProgress);
        let code = LeaseErrorCode::NoReport;
        assert!(command_transition(
            &mut silent,
            CommandEvent::LeaseExpired { code, lease },
            9
        ));
        assert_eq!(silent.error_code.as_deref(), Some("no_report"));
        assert_eq!(
            silent.message.as_deref(),
            Some("no report or heartbeat for this command for 10m although the host still polls")
        );
    }

    #[test]
    fn a_failure_whose_event_the_agent_restart_cut_short_is_interrupted() {
        for (code, want) in [
            (Some(AGENT_RESTARTED), CommandState::Interrupted),
            (Some("script_failed"), CommandState::Failed),
            (None, CommandState::Failed),
        ] {
            let mut cmd = command(CommandState::InProgress);
            cmd.error_code = code.map(str::to_owned);
            let event = CommandEvent::Completed {
                status: CommandStatus::Failed,
                failed_event: Some("ApplicationStart"),
                message: Some("agent restarted during ApplicationStart"),
            };
            assert!(command_transition(&mut cmd, event, 5));
            assert_eq!(cmd.state, want, "{code:?}");
        }
    }

    #[test]
    fn a_bake_starts_once_ends_once_and_a_stop_or_supersede_clears_it() {
        let mut d = deployment(DeploymentState::InProgress);
        assert!(deployment_transition(
            &mut d,
            DeploymentEvent::BakeStarted { until: 50 },
            7
        ));
        assert_eq!(
            (d.state, d.bake_until_ms),
            (DeploymentState::InProgress, Some(50))
        );
        assert!(!deployment_transition(
            &mut d,
            DeploymentEvent::BakeStarted { until: 90 },
            8
        ));
        assert_eq!(d.bake_until_ms, Some(50), "a bake does not restart");
        assert_eq!(d.ended_ms, None, "a bake is no end");
        assert!(deployment_transition(
            &mut d,
            DeploymentEvent::BakeEnded,
            50
        ));
        assert!(!deployment_transition(
            &mut d,
            DeploymentEvent::BakeEnded,
            51
        ));
        assert!(deployment_transition(
            &mut d,
            DeploymentEvent::BakeStarted { until: 90 },
            60
        ));
        assert!(deployment_transition(&mut d, DeploymentEvent::Stopped, 61));
        assert_eq!((d.state, d.bake_until_ms), (DeploymentState::Stopped, None));
        assert!(!deployment_transition(
            &mut d,
            DeploymentEvent::BakeStarted { until: 99 },
            62
        ));

        let mut catch_up = deployment(DeploymentState::InProgress);
        let by = "d-2".to_owned();
        assert!(deployment_transition(
            &mut catch_up,
            DeploymentEvent::Superseded { by },
            9
        ));
        assert_eq!(catch_up.state, DeploymentState::Stopped);
        assert_eq!(
            catch_up.message.as_deref(),
            Some("superseded by an operator's deployment d-2")
        );
    }

    #[test]
    fn a_completion_keeps_earlier_details_it_does_not_name() {
        let mut cmd = command(CommandState::InProgress);
        cmd.message = Some("script scripts/start.sh exited with code 3".into());
        let event = CommandEvent::Completed {
            status: CommandStatus::Failed,
            failed_event: Some("ApplicationStart"),
            message: None,
        };
        assert!(command_transition(&mut cmd, event, 5));
        assert_eq!(cmd.state, CommandState::Failed);
        assert_eq!(cmd.failed_event.as_deref(), Some("ApplicationStart"));
        assert_eq!(
            cmd.message.as_deref(),
            Some("script scripts/start.sh exited with code 3")
        );
        assert_eq!(cmd.ended_ms, Some(5));
    }

    #[test]
    fn each_deployment_event_moves_only_the_states_it_names() {
        use DeploymentState as S;
        let events = [
            ("succeeded", DeploymentEvent::Succeeded),
            (
                "failed",
                DeploymentEvent::Failed("2 of 3 hosts failed".into()),
            ),
            ("stopped", DeploymentEvent::Stopped),
        ];
        let moves = [
            (S::InProgress, "succeeded", S::Succeeded, None),
            (
                S::InProgress,
                "failed",
                S::Failed,
                Some("2 of 3 hosts failed"),
            ),
            (
                S::InProgress,
                "stopped",
                S::Stopped,
                Some("stopped by an operator"),
            ),
            (
                S::Pending,
                "stopped",
                S::Stopped,
                Some("stopped by an operator"),
            ),
            (
                S::Unknown,
                "stopped",
                S::Stopped,
                Some("stopped by an operator"),
            ),
        ];
        let states = [
            S::Pending,
            S::InProgress,
            S::Succeeded,
            S::Failed,
            S::Stopped,
            S::Unknown,
        ];
        for state in states {
            for (name, event) in &events {
                let mut d = deployment(state);
                let changed = deployment_transition(&mut d, event.clone(), 7);
                match moves.iter().find(|(s, n, ..)| *s == state && n == name) {
                    Some((_, _, next, message)) => {
                        assert!(changed, "{state} on {name}");
                        assert_eq!(d.state, *next, "{state} on {name}");
                        assert_eq!(d.message.as_deref(), *message, "{state} on {name}");
                        assert_eq!(d.ended_ms, Some(7), "{state} on {name}");
                    }
                    None => assert_eq!(
                        (changed, d),
                        (false, deployment(state)),
                        "{state} on {name} must change nothing"
                    ),
                }
            }
        }
    }
}
