//! The store suite's cases of pipelines, releases and deployment variables: each takes a
//! fresh, empty store of any backend. Not here: the rules of promotion (`service::pipelines`).

use std::collections::BTreeMap;

use hoist_protocol::operator::{PipelineSource, ReleaseState, SourceStatus, StageState};

use super::cases::{app, deployment_row, group_row, revision};
use crate::store::{Changes, PipelineRow, PipelineStageRow, ReleaseRow, ReleaseStageRow, Store};

fn stage(group: &str, manual: bool, mode: &str) -> PipelineStageRow {
    PipelineStageRow {
        group: group.into(),
        manual_approval: manual,
        variables: BTreeMap::from([("DEPLOY_MODE".into(), mode.into())]),
    }
}

fn pipeline(name: &str, application: &str) -> PipelineRow {
    PipelineRow {
        name: name.into(),
        application: application.into(),
        source: Some(PipelineSource::Git {
            url: "http://127.0.0.1:1/shop.git".into(),
            branch: "main".into(),
            poll_secs: 30,
        }),
        stages: vec![
            stage("staging", false, "destructive"),
            stage("production", true, "normal"),
        ],
        created_ms: 10,
        updated_ms: 10,
        source_status: SourceStatus::default(),
    }
}

fn release(id: &str, p: &PipelineRow, created_ms: u64) -> ReleaseRow {
    ReleaseRow {
        id: id.into(),
        pipeline: p.name.clone(),
        application: p.application.clone(),
        revision_id: format!("rev-{id}"),
        revision: revision(),
        state: ReleaseState::InProgress,
        creator: "operator".into(),
        source_ref: None,
        message: None,
        created_ms,
        ended_ms: None,
        stages: p.stages.iter().map(ReleaseStageRow::new).collect(),
    }
}

pub(super) fn pipelines_are_replaced_by_name_listed_and_deleted(s: &dyn Store) {
    app(s, "shop");
    app(s, "web");
    let p = pipeline("shop-release", "shop");
    s.save_pipeline(&p).unwrap();
    s.save_pipeline(&pipeline("web-release", "web")).unwrap();
    assert_eq!(s.pipeline("shop-release").unwrap(), Some(p.clone()));

    // Applied again: the stages are replaced, the creation time stays.
    let mut again = p.clone();
    again.source = None;
    again.stages = vec![stage("canary", false, "normal")];
    again.created_ms = 99;
    again.updated_ms = 20;
    s.save_pipeline(&again).unwrap();
    let stored = s.pipeline("shop-release").unwrap().unwrap();
    assert_eq!(stored.source, None);
    assert_eq!(stored.stages, again.stages);
    assert_eq!((stored.created_ms, stored.updated_ms), (10, 20));

    let names = |app: Option<&str>| -> Vec<String> {
        s.pipelines(app)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(names(None), ["shop-release", "web-release"]);
    assert_eq!(names(Some("web")), ["web-release"]);
    assert_eq!(
        s.pipelines(Some("web")).unwrap()[0].stages.len(),
        2,
        "a listed pipeline carries its stages"
    );

    // A deleted pipeline's releases stay, for the record.
    s.insert_release(&release("rel-1", &again, 30), None)
        .unwrap();
    assert!(s.delete_pipeline("shop-release").unwrap());
    assert!(!s.delete_pipeline("shop-release").unwrap());
    assert_eq!(s.pipeline("shop-release").unwrap(), None);
    assert_eq!(names(None), ["web-release"]);
    assert!(s.release("rel-1").unwrap().is_some());
}

pub(super) fn a_source_release_and_the_source_standing_are_written_together(s: &dyn Store) {
    app(s, "shop");
    let p = pipeline("shop-release", "shop");
    s.save_pipeline(&p).unwrap();
    let looked = SourceStatus {
        last: None,
        error: Some("connection refused".into()),
        checked_ms: Some(40),
        failures: 2,
        next_ms: 160,
    };
    s.save_source_status(&p.name, &looked).unwrap();
    assert_eq!(s.pipeline(&p.name).unwrap().unwrap().source_status, looked);

    let found = SourceStatus {
        last: Some("c0ffee".into()),
        error: None,
        checked_ms: Some(50),
        failures: 0,
        next_ms: 80,
    };
    let mut r = release("rel-1", &p, 50);
    r.creator = "git".into();
    r.source_ref = Some("c0ffee".into());
    s.insert_release(&r, Some(&found)).unwrap();
    assert_eq!(s.pipeline(&p.name).unwrap().unwrap().source_status, found);
    assert_eq!(s.release("rel-1").unwrap(), Some(r.clone()));

    // A release that cannot be inserted leaves the source where it stood: the next look
    // tries the same commit again, and no commit is skipped.
    let later = SourceStatus {
        last: Some("decade".into()),
        checked_ms: Some(60),
        ..found.clone()
    };
    let mut dup = release("rel-1", &p, 60);
    dup.source_ref = Some("decade".into());
    assert!(s.insert_release(&dup, Some(&later)).is_err());
    assert_eq!(s.pipeline(&p.name).unwrap().unwrap().source_status, found);
    assert_eq!(s.release("rel-1").unwrap(), Some(r));
}

pub(super) fn releases_are_saved_with_their_stages_and_listed_in_order(s: &dyn Store) {
    app(s, "shop");
    app(s, "web");
    let p = pipeline("shop-release", "shop");
    let w = pipeline("web-release", "web");
    s.save_pipeline(&p).unwrap();
    s.save_pipeline(&w).unwrap();
    // Two in the same millisecond: insertion order decides between them.
    for (id, pl, at) in [("rel-a", &p, 100), ("rel-b", &p, 100), ("rel-c", &w, 90)] {
        s.insert_release(&release(id, pl, at), None).unwrap();
    }
    let ids = |rs: Vec<ReleaseRow>| -> Vec<String> { rs.into_iter().map(|r| r.id).collect() };
    assert_eq!(
        ids(s.releases(None, 10).unwrap()),
        ["rel-b", "rel-a", "rel-c"]
    );
    assert_eq!(ids(s.releases(Some("shop-release"), 1).unwrap()), ["rel-b"]);
    assert_eq!(
        ids(s.active_releases().unwrap()),
        ["rel-c", "rel-a", "rel-b"]
    );

    // rel-a's staging succeeded and production waits; rel-c ended.
    let mut a = s.release("rel-a").unwrap().unwrap();
    a.state = ReleaseState::AwaitingApproval;
    a.stages[0].state = StageState::Succeeded;
    a.stages[0].deployment_id = Some("d-1".into());
    a.stages[0].started_ms = Some(110);
    a.stages[0].ended_ms = Some(120);
    a.stages[1].state = StageState::AwaitingApproval;
    a.stages[1].approved_by = Some("alice".into());
    a.stages[1].approved_ms = Some(130);
    a.stages[1].comment = Some("ship it".into());
    s.save_release(&a).unwrap();
    assert_eq!(s.release("rel-a").unwrap(), Some(a.clone()));
    let mut c = s.release("rel-c").unwrap().unwrap();
    c.state = ReleaseState::Failed;
    c.message = Some("staging failed".into());
    c.ended_ms = Some(140);
    c.stages[0].state = StageState::Failed;
    c.stages[1].state = StageState::Skipped;
    s.save_release(&c).unwrap();
    assert_eq!(s.release("rel-c").unwrap(), Some(c));
    let active = s.active_releases().unwrap();
    assert_eq!(ids(active.clone()), ["rel-a", "rel-b"]);
    assert_eq!(active[0], a, "an active release carries its stages");
    assert_eq!(s.release("rel-none").unwrap(), None);
}

pub(super) fn a_deployment_keeps_its_variables_and_release(s: &dyn Store) {
    app(s, "shop");
    let g = group_row("g-1", "shop", "staging");
    s.insert_group(&g).unwrap();
    let mut d = deployment_row("d-1", &g, 1000);
    d.variables = BTreeMap::from([
        ("DEPLOY_MODE".into(), "destructive".into()),
        ("REGION".into(), "eu-1".into()),
    ]);
    d.release_id = Some("rel-1".into());
    s.insert_deployment(&d, &[]).unwrap();
    assert_eq!(s.deployment("d-1").unwrap(), Some(d.clone()));

    d.release_id = Some("rel-2".into());
    s.save_changes(&Changes {
        deployment: &d,
        commands: &[],
        new_commands: &[],
        syncs: &[],
        sets_target: true,
    })
    .unwrap();
    let stored = s.deployment("d-1").unwrap().unwrap();
    assert_eq!(stored.release_id.as_deref(), Some("rel-2"));
    assert_eq!(stored.variables, d.variables);
    assert_eq!(
        s.group_by_id("g-1").unwrap().unwrap().target_deployment_id,
        Some("d-1".into())
    );
}

pub(super) fn a_release_state_change_is_an_event_of_its_application(s: &dyn Store) {
    use hoist_protocol::operator::EventKind;
    app(s, "shop");
    let p = pipeline("shop-release", "shop");
    s.save_pipeline(&p).unwrap();
    s.insert_webhook(&super::webhook_cases::webhook(
        "wh-1",
        "shop",
        &[EventKind::Release],
    ))
    .unwrap();
    let mut r = release("rel-a", &p, 100);
    s.insert_release(&r, None).unwrap();
    s.save_release(&r).unwrap();
    r.stages[0].state = StageState::Succeeded;
    r.stages[0].deployment_id = Some("d-1".into());
    r.stages[1].state = StageState::AwaitingApproval;
    r.state = ReleaseState::AwaitingApproval;
    s.save_release(&r).unwrap();
    let mut events: Vec<_> = s
        .recent_deliveries("wh-1", 10)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    events.reverse();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.state.as_str(), e.group.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("in_progress", Some("staging")),
            ("awaiting_approval", Some("production"))
        ]
    );
    assert_eq!(events[1].page, "/releases/rel-a");
    assert_eq!(events[1].release_id.as_deref(), Some("rel-a"));
    assert_eq!(events[1].kind, EventKind::Release);
    assert!(
        events[1]
            .summary
            .contains("stage production: awaiting_approval"),
        "{}",
        events[1].summary
    );
}
