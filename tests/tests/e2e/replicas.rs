//! Two `hoist server` replicas on one PostgreSQL database and three real agents listing
//! both in `coordinator.urls`: a deployment created through one replica is picked up by
//! the agents long-polling the other; that replica killed with SIGKILL mid-deployment, the
//! agents move to the survivor and the deployment completes with every event report
//! recorded once; both replicas restarted, nothing of the deployment is lost. Revisions
//! come from a Git server on loopback (`git daemon`), not from one replica's bundle store.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hoist_tests::coordinator::Launch;
use hoist_tests::fleet::{Agent, AgentOptions, Coordinator};
use hoist_tests::postgres::{database, SharedBundles, TestDatabase};
use hoist_tests::servers::{bare_repo, GitDaemon};
use hoist_tests::{wait_for, Scratch};
use nix::sys::signal::Signal;

const ALL_EVENTS: [&str; 11] = [
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

const APPSPEC: &str = "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: record.sh\n  AfterInstall:\n    - location: slow.sh\n  ApplicationStart:\n    - location: record.sh\n  ValidateService:\n    - location: record.sh\n  BeforeAllowTraffic:\n    - location: record.sh\n";
const RECORD: &str = "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n";
/// The window for the kill: every host sits in AfterInstall for a few seconds.
const SLOW: &str = "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\nsleep 4\n";

/// What an agent logs when it moves to its next coordinator URL.
const SWITCHED: &str = "switching to the next URL";

/// A replica on `db` keeping pushed bundles in `bundles`, as replicas must.
fn replica(dir: &Path, listen: &str, db: &TestDatabase, bundles: &SharedBundles) -> Coordinator {
    let mut flags = vec!["--database", db.url.as_str()];
    flags.extend(bundles.flags());
    Coordinator::launch(
        dir,
        Launch {
            listen,
            extra: &flags,
            env: &bundles.env(),
            ..Launch::default()
        },
    )
}

fn deployment(c: &Coordinator, id: &str) -> serde_json::Value {
    let mut d: serde_json::Value =
        serde_json::from_str(&c.hoist_ok(&["deploy", "status", id, "--json"])).expect("json");
    // The change counter is the answering replica's own.
    d.as_object_mut().expect("an object").remove("change_seq");
    d
}

fn name_of(a: &Agent) -> &str {
    a.dir.file_name().and_then(|n| n.to_str()).expect("name")
}

#[test]
#[ignore = "needs postgresql"]
fn a_replica_killed_mid_deployment_leaves_it_to_the_other_and_a_restart_loses_nothing() {
    let db = database();
    let s = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let git_root = s.join("git");
    fs::create_dir_all(&git_root).expect("mkdir");
    let commits = bare_repo(
        &git_root,
        "shop.git",
        &[&[
            ("appspec.yml", APPSPEC),
            ("record.sh", RECORD),
            ("slow.sh", SLOW),
        ]],
    );
    let git = rt.block_on(GitDaemon::start(&git_root));

    let (dir_a, dir_b) = (s.join("replica-a"), s.join("replica-b"));
    let bundles = SharedBundles::start(&s.join("s3"));
    let mut a = replica(&dir_a, "127.0.0.1:0", &db, &bundles);
    let mut b = replica(&dir_b, "127.0.0.1:0", &db, &bundles);
    let token = a.shop_web(&["--config", "AllAtOnce"]);
    // The agents' first URL is replica B: they long-poll B, and move to A when B fails.
    let a_url = a.url.clone();
    let more = [a_url.as_str()];
    let agents: Vec<Agent> = (1..=3)
        .map(|n| {
            Agent::start_with(
                &s,
                &format!("web-{n}"),
                &b,
                &token,
                "role: web",
                AgentOptions {
                    more_urls: &more,
                    ..AgentOptions::default()
                },
            )
        })
        .collect();
    wait_for("three hosts registered", Duration::from_secs(30), || {
        let text = a.hoist_ok(&["hosts", "list", "--json"]);
        (1..=3).all(|n| text.contains(&format!("\"web-{n}\"")))
    });
    // Idle polls held by B.
    std::thread::sleep(Duration::from_secs(1));

    // Created through A, picked up by the agents waiting on B.
    let created = Instant::now();
    let id = a.hoist_ok(&[
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--git",
        &git.url("shop.git"),
        "--commit",
        &commits[0],
    ]);
    wait_for(
        "every host in BeforeInstall",
        Duration::from_secs(30),
        || {
            agents
                .iter()
                .all(|h| h.events().contains(&"BeforeInstall".to_string()))
        },
    );
    eprintln!(
        "created through A, running on hosts polling B after {:?} (Git fetch included)",
        created.elapsed()
    );
    for h in &agents {
        let log = h.log();
        assert!(
            !log.contains(SWITCHED),
            "{} left B while it was up: {log}",
            name_of(h)
        );
    }

    wait_for(
        "every host in AfterInstall",
        Duration::from_secs(30),
        || {
            agents
                .iter()
                .all(|h| h.events().contains(&"AfterInstall".to_string()))
        },
    );
    b.stop_with(Signal::SIGKILL);
    eprintln!("replica B killed with SIGKILL mid-deployment");

    let t0 = Instant::now();
    let d = loop {
        let d = deployment(&a, &id);
        if d["state"] != "in_progress" && d["state"] != "pending" {
            break d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "deployment still running on A: {d}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(d["state"], "succeeded", "{d}");
    let hosts = d["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3, "{d}");
    for h in &agents {
        let name = name_of(h);
        let row = hosts
            .iter()
            .find(|r| r["host_name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {d}"));
        let events = row["events"].as_array().expect("events");
        let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        assert_eq!(
            names, ALL_EVENTS,
            "{name}: each event once, in order: {row}"
        );
        // The hooks the coordinator saw succeed are exactly those the host ran.
        let ran: Vec<&str> = events
            .iter()
            .filter(|e| e["status"] == "succeeded")
            .filter_map(|e| e["event"].as_str())
            .filter(|e| *e != "DownloadBundle" && *e != "Install")
            .collect();
        assert_eq!(ran, h.events(), "{name}");
        let log = h.log();
        assert!(
            log.lines()
                .any(|l| l.contains(SWITCHED) && l.contains(&a_url)),
            "{name} never moved to replica A: {log}"
        );
    }
    // Every report each host numbered is recorded, once: per command, seq 1..=n, n rows.
    let counts = db.psql(&format!(
        "SELECT r.command_id, count(*), min(r.seq), max(r.seq) FROM reports r \
         JOIN commands c ON c.id = r.command_id WHERE c.deployment_id = '{id}' \
         GROUP BY r.command_id ORDER BY r.command_id"
    ));
    let rows: Vec<Vec<&str>> = counts.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{counts}");
    for r in &rows {
        assert_eq!(
            (r[1], r[2]),
            (r[3], "1"),
            "reports of command {}: {counts}",
            r[0]
        );
    }

    // Both replicas restarted on their addresses: the deployment is as it was.
    let before = deployment(&a, &id);
    let (addr_a, addr_b) = (a.authority(), b.authority());
    a.stop_with(Signal::SIGTERM);
    drop(a);
    drop(b);
    let a = replica(&dir_a, &addr_a, &db, &bundles);
    let b = replica(&dir_b, &addr_b, &db, &bundles);
    assert_eq!(deployment(&b, &id), before, "through B after the restart");
    assert_eq!(deployment(&a, &id), before, "through A after the restart");
    let listed = b.hoist_ok(&["deploy", "list", "--app", "shop"]);
    assert!(listed.contains(&id), "{listed}");
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM reports r JOIN commands c ON c.id = r.command_id \
             WHERE c.deployment_id = '{id}'"
        ))
        .trim(),
        rows.iter()
            .map(|r| r[1].parse::<u64>().expect("a count"))
            .sum::<u64>()
            .to_string()
    );
}
