//! Webhooks with the real `hoist server`, real `hoist-agent run` daemons and a real receiver
//! on loopback that checks every signature: a receiver down for a whole deployment gets
//! every event of it once back, in order per deployment, none lost, and the deployment was
//! not held up (it ended, `deploy create --wait` returned, before the receiver accepted
//! anything); a tampered body fails the check; `hoist webhook test` reaches the receiver;
//! two replicas on one PostgreSQL database send each event once, a deployment's in order.
//! Waits poll with a deadline; nothing asserts on timing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hoist_tests::fleet::{Agent, Coordinator};
use hoist_tests::receiver::{verify, Receiver};
use hoist_tests::{wait_for, Scratch};

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "e2e-webhook-secret-0123456789abcdef";

/// A revision whose hooks only append their event to `$OUT/events.log` (no files: the agents
/// share this machine's tree).
fn bundle(dir: &Path) {
    let script = dir.join("scripts/record.sh");
    fs::create_dir_all(script.parent().expect("parent")).expect("mkdir");
    fs::write(
        &script,
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n",
    )
    .expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/record.sh\n",
    )
    .expect("appspec");
}

fn json(c: &Coordinator, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&c.hoist_ok(args)).expect("json")
}

fn wait_hosts(c: &Coordinator, names: &[&str]) {
    wait_for("hosts polling", LIMIT, || {
        let list = json(c, &["hosts", "list", "--json"]);
        names.iter().all(|n| {
            list["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h["name"] == *n && h["online"] == true)
        })
    });
}

fn deliveries(c: &Coordinator) -> Vec<serde_json::Value> {
    json(c, &["webhook", "list", "--json"])["webhooks"][0]["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_a_deployment_gets_all_its_events_in_order_once_back() {
    let s = Scratch::new();
    let config = s.join("coordinator.yaml");
    fs::write(
        &config,
        "webhooks:\n  initial_backoff: 200ms\n  max_backoff: 500ms\n",
    )
    .expect("config");
    let c = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &["--config", config.to_str().expect("utf-8")],
    );
    let token = c.shop_web(&["--config", "OneAtATime"]);
    let receiver = Receiver::start(SECRET).await;
    receiver.set_down(true);
    // The secret comes from a file (the process list shows a command line), and a file that
    // cannot serve is refused by name before anything is sent.
    let secret_file = s.join("webhook-secret");
    let create = |file: &Path| {
        c.hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &receiver.url,
            "--secret-file",
            file.to_str().expect("utf-8"),
        ])
    };
    fs::write(&secret_file, "\n").expect("secret file");
    let empty = create(&secret_file);
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(
        stderr.contains("webhook-secret: the webhook secret is empty"),
        "{stderr}"
    );
    fs::write(&secret_file, format!("{SECRET}\n")).expect("secret file");
    let created = create(&secret_file);
    assert!(created.status.success(), "{created:?}");
    let webhook = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert_eq!(
        webhook.lines().count(),
        1,
        "a secret of the operator's own is not printed: {webhook}"
    );
    assert!(json(&c, &["webhook", "list", "--json"])["webhooks"]
        .as_array()
        .is_some_and(|w| w.len() == 1));
    let _web1 = Agent::start(&s, "web-1", &c, &token, "role: web");
    let _web2 = Agent::start(&s, "web-2", &c, &token, "role: web");
    wait_hosts(&c, &["web-1", "web-2"]);
    bundle(&s.join("v1"));
    let revision = c.push(&s.join("v1"));

    // The deployment runs to its end with every delivery refused.
    let (code, id) = c.deploy(&revision, true);
    assert_eq!(
        code,
        Some(0),
        "the deployment succeeded while the receiver was down"
    );
    assert!(
        receiver.events().is_empty(),
        "nothing accepted before the deployment ended"
    );
    wait_for("a refused try recorded", LIMIT, || {
        deliveries(&c)
            .iter()
            .any(|d| d["attempts"].as_u64() >= Some(1) && d["last_status"] == 503)
    });

    receiver.set_down(false);
    wait_for("every delivery delivered", LIMIT, || {
        let d = deliveries(&c);
        !d.is_empty() && d.iter().all(|d| d["status"] == "delivered")
    });
    let events = receiver.events();
    let queued = deliveries(&c);
    // None lost, none twice: what was queued is what arrived.
    let mut sent: Vec<&str> = queued
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    let mut got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    sent.sort();
    got.sort();
    assert_eq!(got, sent, "{events:#?}");
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "deployment" && e["deployment"] == id.as_str())
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["in_progress", "succeeded"],
        "in order: {events:#?}"
    );
    for host in ["web-1", "web-2"] {
        let theirs: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "host" && e["host"] == host)
            .map(|e| e["state"].as_str().unwrap())
            .collect();
        assert_eq!(theirs, vec!["in_sync"], "{host}: {events:#?}");
    }
    let end = events.iter().find(|e| e["state"] == "succeeded").unwrap();
    assert_eq!(end["application"], "shop");
    assert_eq!(end["group"], "web");
    assert_eq!(end["link"], format!("{}/deployments/{id}", c.url));
    assert!(receiver.refused_while_down() >= 1);
    assert_eq!(receiver.bad_signatures(), 0, "every signature checked out");

    // A body changed on the way fails the receiver's check.
    let r = receiver.received().remove(0);
    assert!(verify(SECRET.as_bytes(), &r.raw, &r.signature));
    let mut tampered = r.raw.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(!verify(SECRET.as_bytes(), &tampered, &r.signature));
    assert!(!verify(b"another secret", &r.raw, &r.signature));

    let out = c.hoist_ok(&["webhook", "test", &webhook]);
    assert!(out.starts_with("delivered"), "{out}");
    let last = receiver.events().pop().unwrap();
    assert_eq!(last["type"], "test");
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgresql"]
async fn two_replicas_deliver_a_deployments_events_once_each_in_order() {
    use hoist_tests::coordinator::Launch;
    use hoist_tests::fleet::AgentOptions;
    use hoist_tests::postgres::{database, SharedBundles};
    let db = database();
    let s = Scratch::new();
    let bundles = SharedBundles::start(&s.join("s3"));
    let config = s.join("coordinator.yaml");
    fs::write(
        &config,
        "webhooks:\n  initial_backoff: 100ms\n  max_backoff: 300ms\n",
    )
    .expect("config");
    let replica = |name: &str| {
        let mut flags = vec![
            "--database",
            db.url.as_str(),
            "--config",
            config.to_str().expect("utf-8"),
        ];
        flags.extend(bundles.flags());
        Coordinator::launch(
            &s.join(name),
            Launch {
                extra: &flags,
                env: &bundles.env(),
                ..Launch::default()
            },
        )
    };
    let (a, b) = (replica("a"), replica("b"));
    let token = a.shop_web(&["--config", "OneAtATime"]);
    let receiver = Receiver::start(SECRET).await;
    receiver.set_down(true);
    b.hoist_ok(&[
        "webhook",
        "create",
        "--app",
        "shop",
        "--url",
        &receiver.url,
        "--secret",
        SECRET,
    ]);
    let _web1 = Agent::start(&s, "web-1", &a, &token, "role: web");
    let b_url = b.url.clone();
    let _web2 = Agent::start_with(
        &s,
        "web-2",
        &b_url,
        &token,
        "role: web",
        AgentOptions::default(),
    );
    wait_hosts(&a, &["web-1", "web-2"]);
    bundle(&s.join("v1"));
    let revision = a.push(&s.join("v1"));
    let (code, id) = a.deploy(&revision, true);
    assert_eq!(
        code,
        Some(0),
        "the deployment succeeded while the receiver was down"
    );
    assert!(receiver.events().is_empty());
    wait_for("refused tries", LIMIT, || {
        receiver.refused_while_down() >= 4
    });
    receiver.set_down(false);
    wait_for("every delivery delivered", LIMIT, || {
        let d = deliveries(&b);
        !d.is_empty() && d.iter().all(|d| d["status"] == "delivered")
    });
    let events = receiver.events();
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event sent twice: {events:#?}");
    assert_eq!(ids.len(), deliveries(&a).len(), "{events:#?}");
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "deployment" && e["deployment"] == id.as_str())
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["in_progress", "succeeded"], "{events:#?}");
    assert_eq!(
        events.iter().filter(|e| e["type"] == "host").count(),
        2,
        "{events:#?}"
    );
    assert_eq!(receiver.bad_signatures(), 0);
}
