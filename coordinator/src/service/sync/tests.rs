use std::time::Duration;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{CommandState, Creator, DeploymentState, RolloutConfig, SyncState};

use super::{after_command, due, retry_delay, sync_state, MAX_CATCH_UP_RETRIES};
use crate::store::{CommandRow, DeploymentRow, HostSyncRow};

fn revision(c: char) -> Revision {
    Revision::Git {
        repository: "https://git.example/shop".into(),
        commit: c.to_string().repeat(40),
    }
}

fn deployment(id: &str, rev: char, creator: Creator) -> DeploymentRow {
    DeploymentRow {
        id: id.into(),
        application: "shop".into(),
        group_id: "g-1".into(),
        group_name: "web".into(),
        revision_id: Some(format!("r-{rev}")),
        revision: revision(rev),
        signature: None,
        state: DeploymentState::InProgress,
        creator,
        rollback_of: None,
        rolled_back_by: None,
        message: None,
        rollout: RolloutConfig::AllAtOnce,
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

fn ended(id: &str, state: CommandState) -> CommandRow {
    CommandRow {
        id: id.into(),
        deployment_id: "d".into(),
        host_id: "h-1".into(),
        host_name: "web-1".into(),
        position: 0,
        state,
        current_event: None,
        failed_event: Some("Install".into()),
        script: None,
        exit_code: None,
        error_code: Some("install_failed".into()),
        message: Some("disk full".into()),
        log_tail: None,
        events: Vec::new(),
        started_ms: Some(1),
        ended_ms: Some(2),
        last_report_ms: None,
    }
}

const BASE: Duration = Duration::from_secs(60);

#[test]
fn retry_delays_grow_by_doubling() {
    let s = Duration::from_secs;
    for (attempts, want) in [(1, s(60)), (2, s(120)), (3, s(240)), (4, s(480))] {
        assert_eq!(
            retry_delay(BASE, attempts),
            want,
            "after {attempts} failures"
        );
    }
    // Never overflows, whatever the count.
    assert!(retry_delay(BASE, u32::MAX) >= s(60));
}

#[test]
fn a_failing_catch_up_is_tried_four_times_in_all_then_held() {
    let catch_up = deployment("d-c", 'b', Creator::CatchUp);
    let target = deployment("d-t", 'b', Creator::User);
    let mut row: Option<HostSyncRow> = None;
    let mut now = 1_000;
    let mut tries = 0;
    while due(row.as_ref(), &target, now, false) {
        tries += 1;
        assert!(tries <= 10, "no end to the retries");
        let mut pending = row
            .clone()
            .unwrap_or_else(|| HostSyncRow::new("h-1", "g-1", now));
        pending.pending_command_id = Some(format!("c-{tries}"));
        // While its command may run, it is not due again.
        assert!(!due(Some(&pending), &target, now, true));
        assert_eq!(
            sync_state(Some(&pending), Some(&target), true),
            SyncState::CatchingUp
        );
        let c = ended(&format!("c-{tries}"), CommandState::Failed);
        let next = after_command(Some(pending), &catch_up, &c, now, BASE).expect("a change");
        assert_eq!(next.pending_command_id, None);
        if tries <= MAX_CATCH_UP_RETRIES {
            // Not due before its delay, due after it.
            let wait = 60_000 << (tries - 1);
            assert_eq!(next.next_attempt_ms, now + wait, "after try {tries}");
            assert!(!due(Some(&next), &target, now + wait - 1, false));
            now += wait;
        }
        row = Some(next);
    }
    assert_eq!(tries, 4, "one try and three retries");
    let row = row.expect("a row");
    assert!(row.hold);
    assert_eq!(
        sync_state(Some(&row), Some(&target), true),
        SyncState::OutOfSync
    );
    assert_eq!(row.failed_event.as_deref(), Some("Install"));
    assert_eq!(row.error.as_deref(), Some("install_failed: disk full"));
    assert!(!due(Some(&row), &target, u64::MAX, false));
}

#[test]
fn an_operator_deployment_that_ends_badly_holds_the_host_and_a_success_frees_it() {
    let user = deployment("d-u", 'b', Creator::User);
    for state in [
        CommandState::Failed,
        CommandState::Interrupted,
        CommandState::Unknown,
        CommandState::Stopped,
    ] {
        let row = after_command(None, &user, &ended("c-1", state), 5, BASE).expect("a change");
        assert!(row.hold, "{state}");
        assert_eq!(row.failed_state, Some(state));
        assert_eq!(
            row.attempts, 0,
            "{state} in an operator's deployment is no catch-up try"
        );
        assert_eq!(
            sync_state(Some(&row), Some(&user), true),
            SyncState::OutOfSync
        );
        let ok = after_command(
            Some(row),
            &user,
            &ended("c-2", CommandState::Succeeded),
            6,
            BASE,
        )
        .expect("a change");
        assert!(!ok.hold);
        assert_eq!(ok.revision, Some(revision('b')));
        assert_eq!(ok.failed_state, None);
        assert_eq!(sync_state(Some(&ok), Some(&user), true), SyncState::InSync);
    }
}

#[test]
fn commands_that_never_ran_or_were_superseded_change_nothing() {
    let user = deployment("d-u", 'b', Creator::User);
    let catch_up = deployment("d-c", 'b', Creator::CatchUp);
    assert_eq!(
        after_command(None, &user, &ended("c", CommandState::Skipped), 5, BASE),
        None
    );
    let stopped = after_command(None, &catch_up, &ended("c", CommandState::Stopped), 5, BASE)
        .expect("the pending command is cleared");
    assert_eq!((stopped.attempts, stopped.hold), (0, false));
}

#[test]
fn sync_states_follow_the_target() {
    let target = deployment("d-t", 'b', Creator::User);
    let mut old = HostSyncRow::new("h-1", "g-1", 1);
    old.revision = Some(revision('a'));
    old.revision_id = Some("r-a".into());
    let mut current = old.clone();
    current.revision = Some(revision('b'));
    current.revision_id = Some("r-b".into());
    let fresh = HostSyncRow::new("h-1", "g-1", 1);
    // (row, target, catch-up on) -> state
    let cases = [
        (None, Some(&target), true, SyncState::NeverDeployed),
        (None, None, true, SyncState::NeverDeployed),
        (Some(&fresh), None, true, SyncState::NeverDeployed),
        (Some(&old), None, true, SyncState::InSync),
        (Some(&current), Some(&target), true, SyncState::InSync),
        (Some(&current), Some(&target), false, SyncState::InSync),
        (Some(&old), Some(&target), true, SyncState::CatchingUp),
        (Some(&fresh), Some(&target), true, SyncState::CatchingUp),
        (Some(&old), Some(&target), false, SyncState::OutOfSync),
        (Some(&fresh), Some(&target), false, SyncState::NeverDeployed),
    ];
    for (i, (row, target, on, want)) in cases.into_iter().enumerate() {
        assert_eq!(sync_state(row, target, on), want, "case {i}");
    }
    // Due: a new host, one on an old revision; never one on the target.
    assert!(due(None, &target, 1, false));
    assert!(due(Some(&old), &target, 1, false));
    assert!(!due(Some(&current), &target, 1, false));
}
