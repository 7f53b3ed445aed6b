//! The store suite's cases of webhooks and their outbox: events written with the state
//! change that causes them, claims in order per subject, ends, prunes and deletions.

use hoist_protocol::operator::{DeliveryStatus, DeploymentState, EventKind};
use hoist_protocol::secret::Secret;

use super::cases::{deployed, host_row};
use crate::store::{Changes, DeliveryOutcome, HostSyncRow, Store, WebhookRow};

pub(in crate::store::tests) fn webhook(id: &str, app: &str, events: &[EventKind]) -> WebhookRow {
    WebhookRow {
        id: id.into(),
        application: app.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        events: events.to_vec(),
        secret: Secret::new(format!("secret-of-{id}")),
        created_ms: 5,
    }
}

fn states(s: &dyn Store, webhook: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = s
        .recent_deliveries(webhook, 100)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.kind.to_string(), e.state))
        .collect();
    v.reverse();
    v
}

fn outcome(seq: i64, status: DeliveryStatus, next: u64) -> DeliveryOutcome {
    DeliveryOutcome {
        seq,
        status,
        attempts: 1,
        last_status: Some(503),
        last_error: Some("503 Service Unavailable".into()),
        next_attempt_ms: next,
        ended_ms: (status != DeliveryStatus::Pending).then_some(50),
    }
}

pub(in crate::store::tests) fn a_state_change_queues_one_event_per_subscribed_webhook(
    s: &dyn Store,
) {
    super::cases::app(s, "other");
    s.insert_webhook(&webhook(
        "wh-1",
        "web",
        &[EventKind::Deployment, EventKind::Host],
    ))
    .unwrap();
    s.insert_webhook(&webhook("wh-2", "web", &[EventKind::Release]))
        .unwrap();
    s.insert_webhook(&webhook("wh-3", "other", &[EventKind::Deployment]))
        .unwrap();
    s.insert_host(&host_row("h-0", "web-0")).unwrap();
    let (_, mut d, mut commands) = deployed(s, 1);
    // A new deployment is an event; saving it unchanged is none.
    assert_eq!(
        states(s, "wh-1"),
        vec![("deployment".into(), "in_progress".into())]
    );
    s.save_deployment(&d, &[]).unwrap();
    assert_eq!(states(s, "wh-1").len(), 1);
    d.state = DeploymentState::Succeeded;
    d.message = Some("all hosts succeeded".into());
    commands[0].state = hoist_protocol::operator::CommandState::Succeeded;
    let mut sync = HostSyncRow::new("h-0", "g-1", 10);
    sync.revision_id = Some("r-1".into());
    sync.revision = Some(super::cases::revision());
    sync.deployment_id = Some("d-1".into());
    s.save_changes(&Changes {
        deployment: &d,
        commands: &commands,
        new_commands: &[],
        syncs: std::slice::from_ref(&sync),
        sets_target: true,
    })
    .unwrap();
    assert_eq!(
        states(s, "wh-1"),
        vec![
            ("deployment".into(), "in_progress".into()),
            ("deployment".into(), "succeeded".into()),
            ("host".into(), "in_sync".into()),
        ]
    );
    let (delivery, event) = s.recent_deliveries("wh-1", 1).unwrap().remove(0);
    assert_eq!(event.host.as_deref(), Some("web-0"));
    assert_eq!(event.group.as_deref(), Some("prod"));
    assert_eq!(event.page, "/hosts");
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts, 0);
    let (_, succeeded) = s.recent_deliveries("wh-1", 2).unwrap().remove(1);
    assert_eq!(succeeded.page, "/deployments/d-1");
    assert!(
        succeeded.summary.contains("all hosts succeeded"),
        "{}",
        succeeded.summary
    );
    // The same row again changes no standing.
    s.save_host_syncs(std::slice::from_ref(&sync)).unwrap();
    assert_eq!(states(s, "wh-1").len(), 3);
    sync.hold = true;
    s.save_host_syncs(std::slice::from_ref(&sync)).unwrap();
    assert_eq!(states(s, "wh-1").last().unwrap().1, "out_of_sync");
    // Not subscribed, or another application's: nothing.
    assert!(states(s, "wh-2").is_empty());
    assert!(states(s, "wh-3").is_empty());
    let w = s.webhook("wh-1").unwrap().unwrap();
    assert_eq!(w.secret.expose(), "secret-of-wh-1");
    assert_eq!(w.events, vec![EventKind::Deployment, EventKind::Host]);
    assert_eq!(s.webhooks().unwrap().len(), 3);
}

pub(in crate::store::tests) fn deliveries_are_claimed_once_in_order_per_subject(s: &dyn Store) {
    s.insert_webhook(&webhook("wh-1", "web", &[EventKind::Deployment]))
        .unwrap();
    s.insert_webhook(&webhook("wh-2", "web", &[EventKind::Deployment]))
        .unwrap();
    let (_, mut d, _) = deployed(s, 1);
    for state in [DeploymentState::Stopped, DeploymentState::Succeeded] {
        d.state = state;
        s.save_deployment(&d, &[]).unwrap();
    }
    let now = super::super::webhooks::written_now();
    // The first event of each webhook's subject only; a webhook skipped gets nothing.
    let first = s
        .claim_deliveries(now, now + 1000, &["wh-2".into()], 8)
        .unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].webhook.id, "wh-1");
    assert_eq!(first[0].event.state, "in_progress");
    assert_eq!(first[0].webhook.secret.expose(), "secret-of-wh-1");
    // Claimed: nobody else gets it while its lease runs, and the next waits for it.
    let second = s.claim_deliveries(now, now + 1000, &[], 8).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].webhook.id, "wh-2");
    assert!(s
        .claim_deliveries(now, now + 1000, &[], 8)
        .unwrap()
        .is_empty());
    // A failed try waits for its time, and holds the later events of its subject back.
    s.finish_delivery(&outcome(
        first[0].delivery.seq,
        DeliveryStatus::Pending,
        now + 500,
    ))
    .unwrap();
    let skip = ["wh-2".to_owned()];
    assert!(s
        .claim_deliveries(now, now + 1000, &skip, 8)
        .unwrap()
        .is_empty());
    let again = s.claim_deliveries(now + 500, now + 2000, &skip, 8).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.seq, first[0].delivery.seq);
    assert_eq!(again[0].delivery.attempts, 1);
    assert_eq!(again[0].delivery.last_status, Some(503));
    // Given up, it lets the next one go.
    s.finish_delivery(&outcome(again[0].delivery.seq, DeliveryStatus::GivenUp, 0))
        .unwrap();
    let next = s.claim_deliveries(now + 500, now + 2000, &skip, 8).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.state, "stopped");
    let mut delivered = outcome(next[0].delivery.seq, DeliveryStatus::Delivered, 0);
    delivered.last_status = Some(200);
    delivered.last_error = None;
    s.finish_delivery(&delivered).unwrap();
    let last = s.claim_deliveries(now + 500, now + 2000, &skip, 8).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].event.state, "succeeded");
    let listed: Vec<_> = s
        .recent_deliveries("wh-1", 10)
        .unwrap()
        .into_iter()
        .map(|(d, _)| d.status)
        .collect();
    assert_eq!(
        listed,
        vec![
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::GivenUp
        ]
    );
}

pub(in crate::store::tests) fn ended_deliveries_are_pruned_and_a_deleted_webhook_takes_its_own(
    s: &dyn Store,
) {
    s.insert_webhook(&webhook("wh-1", "web", &[EventKind::Deployment]))
        .unwrap();
    s.insert_webhook(&webhook("wh-2", "web", &[EventKind::Deployment]))
        .unwrap();
    deployed(s, 1);
    let (d, _) = s.recent_deliveries("wh-1", 1).unwrap().remove(0);
    s.finish_delivery(&outcome(d.seq, DeliveryStatus::Delivered, 0))
        .unwrap();
    // Ended at 50: kept by a prune of what ended before 50, gone with one before 51.
    assert_eq!(s.prune_deliveries(50).unwrap(), 0);
    assert_eq!(s.prune_deliveries(51).unwrap(), 1);
    assert!(s.recent_deliveries("wh-1", 10).unwrap().is_empty());
    // Pending deliveries are never pruned.
    assert_eq!(s.recent_deliveries("wh-2", 10).unwrap().len(), 1);
    assert!(s.delete_webhook("wh-2").unwrap());
    assert!(!s.delete_webhook("wh-2").unwrap());
    assert!(s.webhook("wh-2").unwrap().is_none());
    assert!(s.recent_deliveries("wh-2", 10).unwrap().is_empty());
    let now = super::super::webhooks::written_now();
    assert!(s.claim_deliveries(now, now + 1, &[], 8).unwrap().is_empty());
}
