//! The one transition function of a release stage's state, and the one of a release's, each
//! fed an explicit event; `drive` decides which event happens, these decide what it does.
//!
//! Deliberately not here: reading or writing the store, or starting deployments.

use hoist_protocol::operator::{DeploymentState, ReleaseState, StageState};

use crate::store::{ReleaseRow, ReleaseStageRow};

/// What can happen to a release stage.
#[derive(Debug, Clone)]
pub(super) enum StageEvent<'a> {
    /// The release reached this stage, which waits for an operator's approval.
    ReachedGate,
    /// An operator approved the stage waiting at its gate.
    Approved {
        by: &'a str,
        comment: Option<&'a str>,
    },
    /// An operator rejected it at its gate.
    Rejected {
        by: &'a str,
        comment: Option<&'a str>,
    },
    /// A newer release reached the gate this stage waits at.
    Superseded { by: &'a str },
    /// Its deployment is about to be started (it exists once the start commits).
    Starting { deployment_id: &'a str },
    /// Its group is busy with another deployment: it waits for that one's end.
    Waiting { why: String },
    /// Its deployment could not be started.
    StartFailed { why: String },
    /// Its deployment ended.
    DeploymentEnded {
        state: DeploymentState,
        message: Option<&'a str>,
    },
    /// The release ended before this stage's turn.
    ReleaseEnded,
}

/// Applies `event` to `stage` at `now` (ms); returns whether it changed.
pub(super) fn stage_transition(
    stage: &mut ReleaseStageRow,
    event: StageEvent<'_>,
    now: u64,
) -> bool {
    use StageEvent as E;
    use StageState as S;
    let next = match (stage.state, event) {
        (S::Pending, E::ReachedGate) => {
            if !stage.manual_approval || stage.approved_by.is_some() {
                return false;
            }
            stage.message = Some("waiting for approval".into());
            S::AwaitingApproval
        }
        (S::AwaitingApproval, E::Approved { by, comment }) => {
            stage.approved_by = Some(by.to_owned());
            stage.approved_ms = Some(now);
            stage.comment = comment.map(str::to_owned);
            stage.message = None;
            S::Pending
        }
        (S::AwaitingApproval, E::Rejected { by, comment }) => {
            stage.rejected_by = Some(by.to_owned());
            stage.rejected_ms = Some(now);
            stage.comment = comment.map(str::to_owned);
            stage.message = Some(format!("rejected by {by}"));
            stage.ended_ms = Some(now);
            S::Skipped
        }
        (S::AwaitingApproval, E::Superseded { by }) => {
            stage.message = Some(format!("superseded by release {by}"));
            stage.ended_ms = Some(now);
            S::Skipped
        }
        (S::Pending, E::Starting { deployment_id }) => {
            // A gated stage starts only once approved.
            if stage.manual_approval && stage.approved_by.is_none() {
                return false;
            }
            stage.deployment_id = Some(deployment_id.to_owned());
            stage.started_ms = Some(now);
            stage.message = None;
            S::Deploying
        }
        (S::Deploying, E::Waiting { why }) | (S::Pending, E::Waiting { why }) => {
            if stage.state == S::Pending && stage.message.as_deref() == Some(why.as_str()) {
                return false;
            }
            stage.deployment_id = None;
            stage.started_ms = None;
            stage.message = Some(why);
            S::Pending
        }
        (S::Deploying | S::Pending, E::StartFailed { why }) => {
            if stage.state == S::Pending && stage.manual_approval && stage.approved_by.is_none() {
                return false;
            }
            stage.message = Some(why);
            stage.ended_ms = Some(now);
            S::Failed
        }
        (S::Deploying, E::DeploymentEnded { state, message }) => {
            let next = match state {
                DeploymentState::Succeeded => S::Succeeded,
                DeploymentState::Failed | DeploymentState::Stopped => S::Failed,
                DeploymentState::Pending
                | DeploymentState::InProgress
                | DeploymentState::Unknown => return false,
            };
            stage.message = match next {
                S::Failed => Some(format!(
                    "deployment {} {state}{}",
                    stage.deployment_id.as_deref().unwrap_or("?"),
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                )),
                _ => None,
            };
            stage.ended_ms = Some(now);
            next
        }
        (S::Pending | S::AwaitingApproval, E::ReleaseEnded) => {
            stage.message = Some("not reached: the release ended before this stage".into());
            S::Skipped
        }
        // Everything else leaves the stage as it is: a deploying stage ends only with its
        // deployment, an ended one keeps its verdict.
        (
            S::Pending
            | S::AwaitingApproval
            | S::Deploying
            | S::Succeeded
            | S::Failed
            | S::Skipped
            | S::Unknown,
            _,
        ) => return false,
    };
    stage.state = next;
    true
}

/// What can happen to a release as a whole.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReleaseEvent<'a> {
    /// A stage waits at its gate.
    AtGate,
    /// Its gate was approved: it moves on.
    Approved,
    /// Every stage succeeded.
    Succeeded,
    /// A stage failed.
    Failed {
        group: &'a str,
    },
    Rejected {
        by: &'a str,
    },
    Superseded {
        by: &'a str,
    },
}

/// Applies `event` to `release` (its state, message and end, and the stages not reached
/// when it ends) at `now`; returns whether the release's state changed.
pub(super) fn release_transition(
    release: &mut ReleaseRow,
    event: ReleaseEvent<'_>,
    now: u64,
) -> bool {
    use ReleaseEvent as E;
    use ReleaseState as S;
    let (next, message) = match (release.state, event) {
        (S::InProgress, E::AtGate) => (S::AwaitingApproval, None),
        (S::AwaitingApproval, E::Approved) => (S::InProgress, None),
        (S::InProgress, E::Succeeded) => (S::Succeeded, None),
        (S::InProgress, E::Failed { group }) => (
            S::Failed,
            Some(format!("stage {group} failed; later stages did not run")),
        ),
        (S::AwaitingApproval, E::Rejected { by }) => {
            (S::Rejected, Some(format!("rejected by {by}")))
        }
        (S::AwaitingApproval, E::Superseded { by }) => {
            (S::Superseded, Some(format!("superseded by release {by}")))
        }
        (
            S::InProgress
            | S::AwaitingApproval
            | S::Succeeded
            | S::Failed
            | S::Rejected
            | S::Superseded
            | S::Unknown,
            _,
        ) => return false,
    };
    release.state = next;
    if message.is_some() {
        release.message = message;
    }
    if next.is_terminal() {
        release.ended_ms = Some(now);
        for st in &mut release.stages {
            stage_transition(st, StageEvent::ReleaseEnded, now);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PipelineStageRow;

    fn stage(state: StageState, manual: bool) -> ReleaseStageRow {
        let mut s = ReleaseStageRow::new(&PipelineStageRow {
            group: "production".into(),
            manual_approval: manual,
            variables: Default::default(),
        });
        s.state = state;
        s
    }

    #[test]
    fn a_gated_stage_waits_then_starts_only_once_approved() {
        let mut s = stage(StageState::Pending, true);
        assert!(!stage_transition(
            &mut s,
            StageEvent::Starting {
                deployment_id: "d-1"
            },
            1
        ));
        assert!(stage_transition(&mut s, StageEvent::ReachedGate, 1));
        assert_eq!(s.state, StageState::AwaitingApproval);
        assert!(!stage_transition(&mut s, StageEvent::ReachedGate, 2));
        let approved = StageEvent::Approved {
            by: "ana",
            comment: Some("ship it"),
        };
        assert!(stage_transition(&mut s, approved, 3));
        assert_eq!(
            (
                s.state,
                s.approved_by.as_deref(),
                s.approved_ms,
                s.comment.as_deref()
            ),
            (StageState::Pending, Some("ana"), Some(3), Some("ship it"))
        );
        assert!(
            !stage_transition(&mut s, StageEvent::ReachedGate, 4),
            "approved once"
        );
        assert!(stage_transition(
            &mut s,
            StageEvent::Starting {
                deployment_id: "d-1"
            },
            5
        ));
        assert_eq!(
            (s.state, s.deployment_id.as_deref()),
            (StageState::Deploying, Some("d-1"))
        );
        // Busy group: back to pending, waiting.
        let why = "waiting for deployment d-0 of group production".to_owned();
        assert!(stage_transition(
            &mut s,
            StageEvent::Waiting { why: why.clone() },
            6
        ));
        assert_eq!(
            (s.state, s.deployment_id.as_deref()),
            (StageState::Pending, None)
        );
        assert!(
            !stage_transition(&mut s, StageEvent::Waiting { why }, 7),
            "same wait"
        );
        assert!(stage_transition(
            &mut s,
            StageEvent::Starting {
                deployment_id: "d-2"
            },
            8
        ));
        let ended = StageEvent::DeploymentEnded {
            state: DeploymentState::Failed,
            message: Some("1 of 2 hosts failed"),
        };
        assert!(stage_transition(&mut s, ended, 9));
        assert_eq!(s.state, StageState::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some("deployment d-2 failed: 1 of 2 hosts failed")
        );
        let again = StageEvent::DeploymentEnded {
            state: DeploymentState::Succeeded,
            message: None,
        };
        assert!(
            !stage_transition(&mut s, again, 10),
            "the first verdict stays"
        );
    }

    #[test]
    fn rejection_and_superseding_end_only_a_stage_at_its_gate() {
        for event in [
            StageEvent::Rejected {
                by: "bo",
                comment: None,
            },
            StageEvent::Superseded { by: "rel-2" },
        ] {
            let mut pending = stage(StageState::Pending, true);
            assert!(!stage_transition(&mut pending, event.clone(), 1));
            let mut deploying = stage(StageState::Deploying, true);
            assert!(!stage_transition(&mut deploying, event.clone(), 1));
            let mut waiting = stage(StageState::AwaitingApproval, true);
            assert!(stage_transition(&mut waiting, event, 1));
            assert_eq!(waiting.state, StageState::Skipped);
        }
    }

    #[test]
    fn a_release_ends_once_and_skips_the_stages_it_did_not_reach() {
        let mut r = ReleaseRow {
            id: "rel-1".into(),
            pipeline: "p".into(),
            application: "shop".into(),
            revision_id: "r-1".into(),
            revision: hoist_protocol::agent::Revision::Git {
                repository: "https://git.example/shop".into(),
                commit: "a".repeat(40),
            },
            state: ReleaseState::InProgress,
            creator: "operator".into(),
            source_ref: None,
            message: None,
            created_ms: 1,
            ended_ms: None,
            stages: vec![
                stage(StageState::Failed, false),
                stage(StageState::Pending, true),
            ],
        };
        assert!(!release_transition(&mut r, ReleaseEvent::Approved, 2));
        assert!(release_transition(
            &mut r,
            ReleaseEvent::Failed { group: "staging" },
            3
        ));
        assert_eq!((r.state, r.ended_ms), (ReleaseState::Failed, Some(3)));
        assert_eq!(r.stages[1].state, StageState::Skipped);
        assert_eq!(r.stages[0].state, StageState::Failed);
        assert!(!release_transition(&mut r, ReleaseEvent::Succeeded, 4));
        r.state = ReleaseState::AwaitingApproval;
        assert!(!release_transition(
            &mut r,
            ReleaseEvent::Failed { group: "x" },
            5
        ));
        assert!(release_transition(
            &mut r,
            ReleaseEvent::Superseded { by: "rel-2" },
            5
        ));
        assert_eq!(r.message.as_deref(), Some("superseded by release rel-2"));
    }
}
