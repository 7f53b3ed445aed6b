//! The cases of the store suite: each takes a fresh, empty store of any backend.
//! Pipelines' and releases' cases are in `pipeline_cases`.

use std::collections::BTreeMap;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{CommandState, Creator, DeploymentState, HostEvent, RolloutConfig};

use crate::store::{
    AppRow, Changes, CommandLease, CommandRow, DeploymentRow, GroupRow, HostContact, HostDetails,
    HostRow, HostSyncRow, RegistrationTokenRow, ReplicaRow, ReportRow, RevisionRow, Store,
    StoreError,
};

pub(super) use super::batch_cases::{
    a_batch_reads_its_commands_and_recorded_reports_at_once,
    a_fleets_rows_are_written_together_in_order, hosts_commands_in_progress_are_read_at_once,
    hosts_sync_rows_are_read_at_once,
};
pub(super) use super::operator_cases::{
    figures_count_deployments_and_the_commands_of_active_ones,
    operator_tokens_keep_their_role_and_name_and_revocation_sticks,
    sessions_are_found_deleted_and_expired_ones_dropped_on_insert,
};
pub(super) use super::pipeline_cases::{
    a_deployment_keeps_its_variables_and_release,
    a_release_state_change_is_an_event_of_its_application,
    a_source_release_and_the_source_standing_are_written_together,
    pipelines_are_replaced_by_name_listed_and_deleted,
    releases_are_saved_with_their_stages_and_listed_in_order,
};
pub(super) use super::webhook_cases::{
    a_state_change_queues_one_event_per_subscribed_webhook,
    deliveries_are_claimed_once_in_order_per_subject,
    ended_deliveries_are_pruned_and_a_deleted_webhook_takes_its_own,
};

pub(super) fn app(s: &dyn Store, name: &str) {
    s.insert_application(&AppRow {
        name: name.into(),
        created_ms: 1,
    })
    .unwrap();
}

pub(super) fn group_row(id: &str, application: &str, name: &str) -> GroupRow {
    GroupRow {
        id: id.into(),
        application: application.into(),
        name: name.into(),
        tag_filters: vec![BTreeMap::from([("role".into(), "web".into())])],
        rollout: RolloutConfig::OneAtATime,
        auto_rollback: false,
        created_ms: 2,
        catch_up: true,
        bake_secs: 0,
        target_deployment_id: None,
    }
}

pub(super) fn host_row(id: &str, name: &str) -> HostRow {
    HostRow {
        id: id.into(),
        name: name.into(),
        tags: BTreeMap::from([("role".into(), "web".into())]),
        agent_version: "0.1.0".into(),
        secret_sha256: format!("sha-{id}"),
        first_seen_ms: 10,
        last_seen_ms: 20,
        revoked: false,
        requested_name: None,
        requested_tags: None,
    }
}

pub(super) fn revision() -> Revision {
    Revision::Coordinator {
        sha256: "ab".repeat(32),
        size: 123,
    }
}

pub(super) fn deployment_row(id: &str, group: &GroupRow, created_ms: u64) -> DeploymentRow {
    DeploymentRow {
        id: id.into(),
        application: group.application.clone(),
        group_id: group.id.clone(),
        group_name: group.name.clone(),
        revision_id: Some("r-1".into()),
        revision: revision(),
        signature: None,
        state: DeploymentState::InProgress,
        creator: Creator::User,
        rollback_of: None,
        rolled_back_by: None,
        message: None,
        rollout: RolloutConfig::MinHealthyHosts { count: 2 },
        file_exists_behavior: Some("OVERWRITE".into()),
        ignore_application_stop_failures: true,
        events: vec!["Install".into(), "ApplicationStart".into()],
        appspec_path: None,
        created_ms,
        ended_ms: None,
        bake_secs: 30,
        bake_until_ms: None,
        variables: BTreeMap::new(),
        release_id: None,
    }
}

pub(super) fn command_row(id: &str, deployment: &str, host: &str, position: u32) -> CommandRow {
    CommandRow {
        id: id.into(),
        deployment_id: deployment.into(),
        host_id: host.into(),
        host_name: format!("name-{host}"),
        position,
        state: CommandState::Pending,
        current_event: None,
        failed_event: None,
        script: None,
        exit_code: None,
        error_code: None,
        message: None,
        log_tail: None,
        events: vec![],
        started_ms: None,
        ended_ms: None,
        last_report_ms: None,
    }
}

pub(super) fn report_row(command: &str, seq: u64) -> ReportRow {
    ReportRow {
        command_id: command.into(),
        seq,
        at_ms: 100 + seq,
        received_ms: 200 + seq,
        body_json: format!("{{\"seq\":{seq}}}"),
    }
}

/// An application, a group, and a deployment with `hosts` pending commands `c-0`, `c-1`, ...
/// on hosts `h-0`, `h-1`, ...
pub(super) fn deployed(s: &dyn Store, hosts: u32) -> (GroupRow, DeploymentRow, Vec<CommandRow>) {
    app(s, "web");
    let g = group_row("g-1", "web", "prod");
    s.insert_group(&g).unwrap();
    let d = deployment_row("d-1", &g, 1000);
    let commands: Vec<_> = (0..hosts)
        .map(|n| command_row(&format!("c-{n}"), "d-1", &format!("h-{n}"), n))
        .collect();
    s.insert_deployment(&d, &commands).unwrap();
    (g, d, commands)
}

pub(super) fn applications_are_unique_and_listed_by_name(s: &dyn Store) {
    app(s, "web");
    app(s, "api");
    let err = s
        .insert_application(&AppRow {
            name: "web".into(),
            created_ms: 9,
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m == "application web"),
        "{err}"
    );
    let names: Vec<_> = s
        .applications()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(s.application("web").unwrap().map(|a| a.created_ms), Some(1));
    assert_eq!(s.application("nope").unwrap(), None);
}

pub(super) fn groups_are_unique_per_application_and_keep_their_options(s: &dyn Store) {
    app(s, "web");
    app(s, "api");
    let mut g = group_row("g-1", "web", "prod");
    s.insert_group(&g).unwrap();
    s.insert_group(&group_row("g-2", "api", "prod")).unwrap();
    s.insert_group(&group_row("g-3", "web", "canary")).unwrap();
    let err = s
        .insert_group(&group_row("g-4", "web", "prod"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(s.group("web", "prod").unwrap().as_ref(), Some(&g));
    assert_eq!(s.group_by_id("g-1").unwrap().as_ref(), Some(&g));
    let names: Vec<_> = s
        .groups("web")
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["canary", "prod"]);
    let ids: Vec<_> = s.all_groups().unwrap().into_iter().map(|g| g.id).collect();
    assert_eq!(ids, ["g-2", "g-3", "g-1"]);
    g.rollout = RolloutConfig::MinHealthyPercent { percent: 75 };
    g.auto_rollback = true;
    g.catch_up = false;
    g.bake_secs = 90;
    s.update_group(&g).unwrap();
    assert_eq!(s.group_by_id("g-1").unwrap().as_ref(), Some(&g));
    let r = RevisionRow {
        id: "r-1".into(),
        application: "web".into(),
        revision: revision(),
        signature: None,
        created_ms: 3,
    };
    s.insert_revision(&r).unwrap();
    assert_eq!(s.revision("r-1").unwrap(), Some(r));
    assert_eq!(s.revision("r-2").unwrap(), None);
}

pub(super) fn registration_counts_a_use_and_revocation_sticks(s: &dyn Store) {
    let t = RegistrationTokenRow {
        id: "t-1".into(),
        token_sha256: "feed".into(),
        created_ms: 5,
        expires_ms: Some(99_000),
        max_uses: Some(3),
        uses: 0,
        revoked: false,
        allowed_tags: BTreeMap::from([("role".into(), vec!["web".into(), "db".into()])]),
    };
    s.insert_registration_token(&t).unwrap();
    assert_eq!(s.registration_token("feed").unwrap().as_ref(), Some(&t));
    s.register_host(&host_row("h-1", "web-1"), "t-1").unwrap();
    s.register_host(&host_row("h-2", "web-2"), "t-1").unwrap();
    assert_eq!(
        s.registration_token("feed").unwrap().map(|t| t.uses),
        Some(2)
    );
    let revoked = s
        .revoke_registration_token("t-1")
        .unwrap()
        .expect("the token");
    assert!(revoked.revoked && revoked.uses == 2);
    assert_eq!(s.revoke_registration_token("t-none").unwrap(), None);
    assert_eq!(s.registration_tokens().unwrap(), vec![revoked]);
    assert_eq!(
        s.active_host_named("web-2").unwrap().map(|h| h.id),
        Some("h-2".into())
    );
    let mut h = s.host("h-2").unwrap().unwrap();
    h.revoked = true;
    s.update_host(&h).unwrap();
    assert_eq!(s.active_host_named("web-2").unwrap(), None);
}

pub(super) fn hosts_never_move_their_last_contact_back(s: &dyn Store) {
    s.insert_host(&host_row("h-2", "b")).unwrap();
    s.insert_host(&host_row("h-1", "a")).unwrap();
    let ids: Vec<_> = s.hosts().unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(ids, ["h-1", "h-2"]);
    s.write_contacts(&[
        (
            "h-1".into(),
            HostContact {
                last_seen_ms: 500,
                details: None,
            },
        ),
        (
            "h-2".into(),
            HostContact {
                last_seen_ms: 5,
                details: None,
            },
        ),
    ])
    .unwrap();
    assert_eq!(s.host("h-1").unwrap().map(|h| h.last_seen_ms), Some(500));
    assert_eq!(s.host("h-2").unwrap().map(|h| h.last_seen_ms), Some(20));
    let mut h = host_row("h-1", "a2");
    h.last_seen_ms = 100;
    h.tags = BTreeMap::from([("role".into(), "db".into())]);
    s.update_host(&h).unwrap();
    let stored = s.host("h-1").unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.last_seen_ms), ("a2", 500));
    assert_eq!(stored.tags, h.tags);
    assert_eq!(s.host("h-9").unwrap(), None);
}

pub(super) fn a_poll_request_equal_to_what_is_set_is_cleared(s: &dyn Store) {
    s.insert_host(&host_row("h-1", "web-1")).unwrap();
    let details = |name: &str, role: &str| HostContact {
        last_seen_ms: 50,
        details: Some(HostDetails {
            name: name.into(),
            tags: BTreeMap::from([("role".into(), role.into())]),
            agent_version: "0.2.0".into(),
        }),
    };
    s.write_contacts(&[("h-1".into(), details("web-renamed", "db"))])
        .unwrap();
    let h = s.host("h-1").unwrap().unwrap();
    assert_eq!(h.name, "web-1", "a poll only requests a name");
    assert_eq!(h.requested_name.as_deref(), Some("web-renamed"));
    assert_eq!(
        h.requested_tags,
        Some(BTreeMap::from([("role".into(), "db".into())]))
    );
    assert_eq!((h.agent_version.as_str(), h.last_seen_ms), ("0.2.0", 50));
    s.write_contacts(&[("h-1".into(), details("web-1", "web"))])
        .unwrap();
    let h = s.host("h-1").unwrap().unwrap();
    assert_eq!((h.requested_name, h.requested_tags), (None, None));

    // One write mixing both kinds of contact, and a host since removed (nothing to update).
    s.insert_host(&host_row("h-2", "web-2")).unwrap();
    let seen = |ms| HostContact {
        last_seen_ms: ms,
        details: None,
    };
    s.write_contacts(&[
        ("h-2".into(), seen(70)),
        ("h-gone".into(), seen(70)),
        ("h-1".into(), details("web-other", "web")),
    ])
    .unwrap();
    let (h1, h2) = (
        s.host("h-1").unwrap().unwrap(),
        s.host("h-2").unwrap().unwrap(),
    );
    assert_eq!(h1.requested_name.as_deref(), Some("web-other"));
    assert_eq!(h1.requested_tags, None);
    assert_eq!((h2.last_seen_ms, h2.requested_name), (70, None));
    assert_eq!(s.host("h-gone").unwrap(), None);
}

pub(super) fn deployments_list_newest_first_and_filter_by_application(s: &dyn Store) {
    app(s, "web");
    app(s, "api");
    let g = group_row("g-1", "web", "prod");
    let other = group_row("g-2", "api", "prod");
    s.insert_group(&g).unwrap();
    s.insert_group(&other).unwrap();
    // Two in the same millisecond: the later insert lists first.
    for (id, group, at) in [
        ("d-1", &g, 10),
        ("d-2", &g, 20),
        ("d-3", &g, 20),
        ("d-4", &other, 5),
    ] {
        s.insert_deployment(&deployment_row(id, group, at), &[])
            .unwrap();
    }
    let ids = |v: Vec<DeploymentRow>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.deployments(None, 10).unwrap()),
        ["d-3", "d-2", "d-1", "d-4"]
    );
    assert_eq!(ids(s.deployments(Some("web"), 2).unwrap()), ["d-3", "d-2"]);
    assert_eq!(ids(s.deployments(Some("api"), 10).unwrap()), ["d-4"]);
    let mut d = s.deployment("d-2").unwrap().expect("d-2");
    assert_eq!(d, deployment_row("d-2", &g, 20));
    d.state = DeploymentState::Succeeded;
    d.ended_ms = Some(30);
    s.save_deployment(&d, &[]).unwrap();
    assert_eq!(ids(s.active_deployments().unwrap()), ["d-4", "d-1", "d-3"]);
    assert_eq!(
        s.last_successful_deployment("g-1").unwrap().map(|d| d.id),
        Some("d-2".into())
    );
    assert_eq!(s.last_successful_deployment("g-2").unwrap(), None);
}

pub(super) fn a_decision_writes_its_rows_together(s: &dyn Store) {
    let (g, mut d, mut commands) = deployed(s, 2);
    assert_eq!(s.command_total("d-1").unwrap(), 2);
    commands[0].state = CommandState::Succeeded;
    commands[0].events = vec![HostEvent {
        event: "Install".into(),
        status: "succeeded".into(),
        duration_ms: Some(12),
    }];
    commands[0].exit_code = Some(-3);
    commands[0].ended_ms = Some(2000);
    let added = command_row("c-9", "d-1", "h-9", 9);
    d.state = DeploymentState::Succeeded;
    d.rollback_of = Some("d-0".into());
    d.message = Some("done".into());
    d.ended_ms = Some(2001);
    d.bake_until_ms = Some(3000);
    let mut sync = HostSyncRow::new("h-0", &g.id, 2000);
    sync.revision = Some(revision());
    sync.deployment_id = Some("d-1".into());
    s.save_changes(&Changes {
        deployment: &d,
        commands: &commands[..1],
        new_commands: std::slice::from_ref(&added),
        syncs: &[sync.clone()],
        sets_target: true,
    })
    .unwrap();
    assert_eq!(s.deployment("d-1").unwrap().as_ref(), Some(&d));
    assert_eq!(
        s.commands("d-1").unwrap(),
        vec![commands[0].clone(), commands[1].clone(), added]
    );
    assert_eq!(s.host_sync("h-0", "g-1").unwrap(), Some(sync));
    assert_eq!(
        s.group_by_id("g-1")
            .unwrap()
            .and_then(|g| g.target_deployment_id),
        Some("d-1".into())
    );
    let succeeded = s.succeeded_commands_of_host("h-0").unwrap();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(
        (succeeded[0].0.id.as_str(), succeeded[0].1.id.as_str()),
        ("d-1", "c-0")
    );
    // A failing write leaves nothing of its decision behind.
    let dup = command_row("c-1", "d-1", "h-1", 1);
    d.message = Some("never".into());
    assert!(s
        .save_changes(&Changes {
            deployment: &d,
            commands: &[],
            new_commands: &[dup],
            syncs: &[],
            sets_target: false,
        })
        .is_err());
    assert_eq!(
        s.deployment("d-1").unwrap().and_then(|d| d.message),
        Some("done".into())
    );
}

pub(super) fn commands_are_read_by_state_in_rollout_order(s: &dyn Store) {
    let (_g, d, mut commands) = deployed(s, 5);
    for (n, at) in [(3usize, 40u64), (1, 50)] {
        commands[n].state = CommandState::InProgress;
        commands[n].started_ms = Some(at);
    }
    commands[4].host_id = "h-3".into();
    s.save_deployment(&d, &commands).unwrap();
    let ids = |v: Vec<CommandRow>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(s.pending_commands("d-1", 2).unwrap()), ["c-0", "c-2"]);
    assert_eq!(
        ids(s.pending_commands("d-1", 10).unwrap()),
        ["c-0", "c-2", "c-4"]
    );
    let mut counts = s.command_counts("d-1").unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        [(CommandState::InProgress, 2), (CommandState::Pending, 3)]
    );
    let mut busy = ids(s.in_progress_commands().unwrap());
    busy.sort();
    assert_eq!(busy, ["c-1", "c-3"]);
    assert_eq!(
        s.in_progress_command_for_host("h-3").unwrap().map(|c| c.id),
        Some("c-3".into())
    );
    assert_eq!(s.in_progress_command_for_host("h-0").unwrap(), None);
    assert_eq!(
        s.command("c-1").unwrap().and_then(|c| c.started_ms),
        Some(50)
    );
    assert_eq!(s.command("c-x").unwrap(), None);
}

pub(super) fn a_report_is_recorded_once_per_command_and_seq(s: &dyn Store) {
    let (g, _d, commands) = deployed(s, 2);
    let mut c0 = commands[0].clone();
    c0.state = CommandState::InProgress;
    c0.last_report_ms = Some(101);
    let mut c0_later = c0.clone();
    c0_later.current_event = Some("Install".into());
    c0_later.last_report_ms = Some(102);
    let sync = HostSyncRow::new("h-0", &g.id, 7);
    let recorded = s
        .insert_reports_with(
            &[
                (report_row("c-0", 1), c0.clone()),
                (report_row("c-0", 2), c0_later.clone()),
            ],
            std::slice::from_ref(&sync),
        )
        .unwrap();
    assert_eq!(recorded, [true, true]);
    assert_eq!(s.command("c-0").unwrap(), Some(c0_later.clone()));
    assert_eq!(s.host_sync("h-0", "g-1").unwrap(), Some(sync));
    // Seq 2 again (a resent report) changes nothing; seq 3 is new.
    let mut stale = c0.clone();
    stale.message = Some("must not be written".into());
    let recorded = s
        .insert_reports(&[
            (report_row("c-0", 2), stale),
            (report_row("c-0", 3), c0_later.clone()),
        ])
        .unwrap();
    assert_eq!(recorded, [false, true]);
    assert_eq!(s.command("c-0").unwrap().and_then(|c| c.message), None);
    assert!(s.report_exists("c-0", 2).unwrap());
    assert!(!s.report_exists("c-0", 4).unwrap());
    assert_eq!(s.report("c-0", 3).unwrap(), Some(report_row("c-0", 3)));
    assert_eq!(s.report("c-1", 1).unwrap(), None);
    let seqs: Vec<_> = s
        .reports("c-0")
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

pub(super) fn sync_rows_are_replaced(s: &dyn Store) {
    let mut a = HostSyncRow::new("h-1", "g-1", 1);
    let b = HostSyncRow::new("h-1", "g-2", 1);
    let c = HostSyncRow::new("h-2", "g-1", 1);
    s.save_host_syncs(&[a.clone(), b.clone(), c.clone()])
        .unwrap();
    a.hold = true;
    a.attempts = 3;
    a.next_attempt_ms = 77;
    a.pending_command_id = Some("c-5".into());
    a.failed_state = Some(CommandState::Interrupted);
    a.failed_event = Some("Install".into());
    a.error = Some("agent_restarted".into());
    a.revision_id = Some("r-1".into());
    a.revision = Some(revision());
    a.updated_ms = 9;
    s.save_host_syncs(std::slice::from_ref(&a)).unwrap();
    assert_eq!(s.host_sync("h-1", "g-1").unwrap(), Some(a.clone()));
    let mut mine = s.host_syncs_of("h-1").unwrap();
    mine.sort_by(|x, y| x.group_id.cmp(&y.group_id));
    assert_eq!(mine, vec![a, b]);
    assert_eq!(s.host_syncs().unwrap().len(), 3);
    assert_eq!(s.host_sync("h-2", "g-9").unwrap(), None);
}

pub(super) fn leases_merge_and_are_forgotten_when_their_command_ends(s: &dyn Store) {
    let (_g, d, mut commands) = deployed(s, 3);
    for c in &mut commands {
        c.state = CommandState::InProgress;
    }
    s.save_deployment(&d, &commands).unwrap();
    let lease = |delivered_ms, beat_ms| CommandLease {
        delivered_ms,
        beat_ms,
    };
    s.write_leases(&[
        ("c-0".into(), lease(100, 100)),
        ("c-1".into(), lease(50, 60)),
    ])
    .unwrap();
    // A later note (another coordinator's, say): the first hand-out stays, the newest
    // heartbeat wins; an older heartbeat never moves it back.
    s.write_leases(&[
        ("c-0".into(), lease(150, 400)),
        ("c-1".into(), lease(45, 55)),
        // The same command twice in one write: both notes count.
        ("c-1".into(), lease(40, 58)),
    ])
    .unwrap();
    let mut leases = s.command_leases().unwrap();
    leases.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        leases,
        vec![
            ("c-0".into(), lease(100, 400)),
            ("c-1".into(), lease(40, 60))
        ]
    );
    commands[1].state = CommandState::Succeeded;
    s.save_deployment(&d, &commands[1..2]).unwrap();
    let ids: Vec<_> = s
        .command_leases()
        .unwrap()
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(ids, ["c-0"], "an ended command's lease is not read");
    assert_eq!(s.drop_ended_leases().unwrap(), 1);
    assert_eq!(s.drop_ended_leases().unwrap(), 0);
    assert_eq!(s.command_leases().unwrap().len(), 1);
}

pub(super) fn replicas_are_listed_while_they_beat_and_forgotten_when_removed(s: &dyn Store) {
    let replica = |id: &str, started_ms, beat_ms| ReplicaRow {
        id: id.into(),
        host: "coord-1".into(),
        pid: 4242,
        listen: "127.0.0.1:8443".into(),
        started_ms,
        beat_ms,
    };
    s.write_replica(&replica("rp-b", 20, 20)).unwrap();
    s.write_replica(&replica("rp-a", 10, 10)).unwrap();
    s.write_replica(&replica("rp-old", 1, 1)).unwrap();
    // A heartbeat replaces the row.
    s.write_replica(&replica("rp-a", 10, 500)).unwrap();
    assert_eq!(
        s.replicas(15).unwrap(),
        vec![replica("rp-a", 10, 500), replica("rp-b", 20, 20)]
    );
    s.remove_replica("rp-b", 5).unwrap();
    assert_eq!(s.replicas(0).unwrap(), vec![replica("rp-a", 10, 500)]);
}

/// A signed manifest is kept beside the revision (in its JSON), for the revision and for a
/// deployment, and the revision reads back the same as an unsigned one.
pub(super) fn a_revision_and_its_deployment_keep_their_signature(s: &dyn Store) {
    use hoist_protocol::signature::SignedManifest;
    app(s, "web");
    let signed = SignedManifest {
        manifest: "{\"format\":\"hoist-manifest/1\"}".into(),
        signature: "untrusted comment: c\nsig\ntrusted comment: t\nglobal\n".into(),
    };
    let r = RevisionRow {
        id: "r-1".into(),
        application: "web".into(),
        revision: revision(),
        signature: Some(signed.clone()),
        created_ms: 3,
    };
    s.insert_revision(&r).unwrap();
    assert_eq!(s.revision("r-1").unwrap(), Some(r));
    let g = group_row("g-1", "web", "prod");
    s.insert_group(&g).unwrap();
    let mut d = deployment_row("d-1", &g, 10);
    d.signature = Some(signed.clone());
    s.insert_deployment(&d, &[]).unwrap();
    let stored = s.deployment("d-1").unwrap().unwrap();
    assert_eq!(stored.signature, Some(signed));
    assert_eq!(stored.revision, revision());
    d.state = DeploymentState::Succeeded;
    s.save_deployment(&d, &[]).unwrap();
    assert_eq!(s.deployment("d-1").unwrap(), Some(d));
}
