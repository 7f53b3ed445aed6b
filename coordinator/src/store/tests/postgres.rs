//! What PostgreSQL makes new beside the shared suite: migrations on a server several
//! coordinators share (a newer database refused untouched), and two connections recording
//! the same report at once.

use std::sync::{Arc, Barrier};

use super::cases::{deployed, report_row};
use super::{on_postgres, pg_store, runtime};
use crate::store::postgres::{DatabaseUrl, SCHEMA_VERSION};
use crate::store::{CommandRow, PgStore, Store, StoreError};
use hoist_protocol::operator::CommandState;

#[test]
#[ignore = "needs postgresql"]
fn migrations_are_recorded_once_and_reopening_keeps_data() {
    let (s, db) = on_postgres();
    deployed(&*s, 1);
    drop(s);
    let again = pg_store(&db.url);
    assert_eq!(again.commands("d-1").unwrap().len(), 1);
    assert_eq!(
        db.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version"),
        format!(
            "{}\n",
            (1..=SCHEMA_VERSION)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    );
}

#[test]
#[ignore = "needs postgresql"]
fn a_newer_database_is_refused_untouched() {
    let (s, db) = on_postgres();
    deployed(&*s, 1);
    drop(s);
    db.psql("INSERT INTO schema_version (version) VALUES (99)");
    let before = db.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'public'",
    );
    let err = PgStore::open(
        &DatabaseUrl::parse(&db.url).unwrap(),
        runtime().handle().clone(),
    )
    .err()
    .expect("a refusal");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, supported } if supported == SCHEMA_VERSION),
        "{err}"
    );
    let after = db.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'public'",
    );
    assert_eq!(before, after);
    assert_eq!(db.psql("SELECT count(*) FROM commands"), "1\n");
    assert_eq!(db.psql("SELECT max(version) FROM schema_version"), "99\n");
}

#[test]
#[ignore = "needs postgresql"]
fn two_connections_recording_one_report_at_once_record_it_once() {
    let (s, db) = on_postgres();
    let (_g, _d, commands) = deployed(&*s, 1);
    let mut c = commands[0].clone();
    c.state = CommandState::InProgress;
    // Each round, two stores (two pools: two replicas) record (c-0, seq) together.
    let stores: Vec<Arc<dyn Store>> =
        vec![Arc::new(pg_store(&db.url)), Arc::new(pg_store(&db.url))];
    for seq in 1..=20u64 {
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let mut c: CommandRow = c.clone();
                c.message = Some(format!("replica {n}"));
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .insert_reports(&[(report_row("c-0", seq), c)])
                        .unwrap()
                })
            })
            .collect();
        let recorded: Vec<bool> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            recorded.iter().filter(|r| **r).count(),
            1,
            "seq {seq}: {recorded:?}"
        );
    }
    assert_eq!(s.reports("c-0").unwrap().len(), 20);
    assert_eq!(db.psql("SELECT count(*) FROM reports"), "20\n");
}

#[test]
#[ignore = "needs postgresql"]
fn a_decision_lock_keeps_another_store_waiting_until_dropped() {
    let (a, db) = on_postgres();
    let b: Arc<dyn Store> = Arc::new(pg_store(&db.url));
    let held = a.lock_decisions().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let lock = b.lock_decisions().unwrap();
            tx.send(()).unwrap();
            drop(lock);
        })
    };
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the other store took the lock while it was held"
    );
    drop(held);
    rx.recv().unwrap();
    waiter.join().unwrap();
    // Released by both: taken again at once, and no connection holds it.
    drop(a.lock_decisions().unwrap());
    assert_eq!(
        db.psql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        "0\n"
    );
}

#[test]
#[ignore = "needs postgresql"]
fn replicas_starting_together_on_a_new_database_migrate_it_once() {
    let db = hoist_tests::postgres::database();
    let barrier = Arc::new(Barrier::new(4));
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(
                    &DatabaseUrl::parse(&url).unwrap(),
                    runtime().handle().clone(),
                )
                .map(|_| ())
            })
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    assert_eq!(
        db.psql("SELECT count(*), count(DISTINCT version) FROM schema_version"),
        format!("{SCHEMA_VERSION}|{SCHEMA_VERSION}\n")
    );
}

#[test]
#[ignore = "needs postgresql"]
fn a_delivery_is_claimed_by_one_of_two_connections() {
    let (s, db) = on_postgres();
    for n in 0..4 {
        s.insert_webhook(&super::webhook_cases::webhook(
            &format!("wh-{n}"),
            "web",
            &[hoist_protocol::operator::EventKind::Deployment],
        ))
        .unwrap();
    }
    deployed(&*s, 1);
    let now = crate::store::webhooks::written_now();
    let barrier = Arc::new(Barrier::new(2));
    let claims: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = pg_store(&url);
                barrier.wait();
                let mut seqs = Vec::new();
                for _ in 0..4 {
                    for c in store.claim_deliveries(now, now + 60_000, &[], 1).unwrap() {
                        seqs.push(c.delivery.seq);
                    }
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<i64> = claims.into_iter().flat_map(|c| c.join().unwrap()).collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a delivery was claimed twice");
    assert_eq!(n, 4, "every delivery was claimed once");
}
