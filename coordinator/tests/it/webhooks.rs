//! Webhooks against the real `hoist server`: a deployment's events queued with its state
//! changes and delivered, signed, to a real receiver on loopback (which checks every
//! signature); a receiver that is down gets every event once it is back, in order per
//! deployment, while the deployment itself was not held up; a dead receiver is given up
//! without holding up another webhook; `webhook test`; and the admin role.

use std::time::{Duration, Instant};

use hoist_protocol::operator::{DeliveryStatus, WebhookList};
use hoist_tests::receiver::{verify, Receiver};

use crate::support::*;

const SECRET: &str = "a-test-secret-of-32-bytes-long!!";

/// A server whose webhook retries are quick: `initial` doubling up to `max`, given up after
/// `give_up`.
fn quick_server(tmp: &Scratch, initial: &str, max: &str, give_up: &str) -> Server {
    let config = tmp.path().join("coordinator.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n  initial_backoff: {initial}\n  max_backoff: {max}\n  \
             give_up_after: {give_up}\npublic_url: https://hoist.example.com:8443\n"
        ),
    )
    .unwrap();
    Server::start_with(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
        Some(TOKEN),
    )
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list(server: &Server) -> WebhookList {
    serde_json::from_str(server.hoist(&["webhook", "list", "--json"]).await.ok()).unwrap()
}

/// One host registered and a deployment of `shop`/`web` to it run to success; its id.
async fn deploy_once(server: &Server, tmp: &Scratch, reg: &str) -> String {
    let host = SimHost::register(&server.url, reg, "web-1", tags(&[("role", "web")])).await;
    host.poll(0).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let cmd = host.poll(5).await.expect("the command");
    host.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
    id
}

fn states_of(events: &[serde_json::Value], deployment: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "deployment" && e["deployment"] == deployment)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_down_during_a_deployment_gets_every_event_in_order_once_back() {
    let tmp = Scratch::new();
    let server = quick_server(&tmp, "200ms", "400ms", "1h");
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    let receiver = Receiver::start(SECRET).await;
    receiver.set_down(true);
    let out = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &receiver.url,
            "--secret",
            SECRET,
        ])
        .await;
    let webhook = out.ok().to_owned();
    assert!(
        webhook.starts_with("wh-") && !webhook.contains('\n'),
        "{webhook}"
    );

    // The deployment runs to its end while every delivery is refused.
    let id = deploy_once(&server, &tmp, &reg).await;
    assert!(
        receiver.events().is_empty(),
        "nothing was accepted while down"
    );
    until("retried deliveries", async || {
        list(&server).await.webhooks[0]
            .deliveries
            .iter()
            .any(|d| d.attempts >= 2 && d.last_status == Some(503))
    })
    .await;
    let listed = list(&server).await;
    let d = &listed.webhooks[0].deliveries;
    assert!(
        d.iter().all(|d| d.status == DeliveryStatus::Pending),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|d| d.last_error.as_deref().is_some_and(|e| e.contains("503"))),
        "{d:?}"
    );
    let text = server.hoist(&["webhook", "list"]).await;
    assert!(
        !text.ok().contains(SECRET) && !serde_json::to_string(&listed).unwrap().contains(SECRET)
    );
    assert!(text.ok().contains("pending"), "{}", text.stdout);

    receiver.set_down(false);
    until("the deployment's end delivered", async || {
        states_of(&receiver.events(), &id).contains(&"succeeded".to_owned())
    })
    .await;
    until("every delivery delivered", async || {
        list(&server).await.webhooks[0]
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    let events = receiver.events();
    assert_eq!(states_of(&events, &id), vec!["in_progress", "succeeded"]);
    let host: Vec<_> = events.iter().filter(|e| e["type"] == "host").collect();
    assert_eq!(host.len(), 1, "{events:?}");
    assert_eq!(host[0]["host"], "web-1");
    assert_eq!(host[0]["state"], "in_sync");
    let mut ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "each event once: {events:?}");
    let last = events.iter().find(|e| e["state"] == "succeeded").unwrap();
    assert_eq!(last["application"], "shop");
    assert_eq!(last["group"], "web");
    assert_eq!(
        last["link"],
        format!("https://hoist.example.com:8443/deployments/{id}")
    );
    for r in receiver.received() {
        assert_eq!(r.event_id_header, r.body["id"].as_str().unwrap());
        assert_eq!(r.event_type_header, r.body["type"].as_str().unwrap());
    }
    assert!(receiver.refused_while_down() >= 2);
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_receiver_is_given_up_without_holding_up_another_webhook() {
    let tmp = Scratch::new();
    let server = quick_server(&tmp, "100ms", "200ms", "1s");
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let out = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &dead,
            "--events",
            "deployment",
        ])
        .await;
    let mut lines = out.ok().lines();
    let dead_id = lines.next().unwrap().to_owned();
    let generated = lines.next().expect("the generated secret, once").to_owned();
    assert!(generated.len() >= 32, "{generated}");
    let receiver = Receiver::start(SECRET).await;
    server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &receiver.url,
            "--secret",
            SECRET,
            "--events",
            "deployment",
        ])
        .await
        .ok();
    let id = deploy_once(&server, &tmp, &reg).await;
    until("the live receiver's events", async || {
        states_of(&receiver.events(), &id).len() == 2
    })
    .await;
    until("the dead receiver given up", async || {
        let l = list(&server).await;
        let w = l.webhooks.iter().find(|w| w.id == dead_id).unwrap();
        w.deliveries.len() == 2
            && w.deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::GivenUp)
    })
    .await;
    let l = list(&server).await;
    let w = l.webhooks.iter().find(|w| w.id == dead_id).unwrap();
    // The first event was retried until given up; the second waited behind it (in order
    // per deployment), then failed its first try too late to be retried.
    assert!(
        w.deliveries.iter().any(|d| d.attempts >= 2),
        "{:?}",
        w.deliveries
    );
    for d in &w.deliveries {
        assert!(d.attempts >= 1, "{d:?}");
        assert_eq!(d.last_status, None);
        assert!(
            d.last_error
                .as_deref()
                .unwrap()
                .contains("could not connect"),
            "{d:?}"
        );
        assert!(d.ended_ms.is_some());
    }
    assert!(!serde_json::to_string(&l).unwrap().contains(&generated));
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_test_sends_a_signed_test_event_now_and_prints_the_answer() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    let receiver = Receiver::start(SECRET).await;
    let id = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &receiver.url,
            "--secret",
            SECRET,
        ])
        .await
        .ok()
        .to_owned();
    let out = server.hoist(&["webhook", "test", &id]).await;
    assert!(
        out.ok().starts_with("delivered: the receiver answered 204"),
        "{}",
        out.stdout
    );
    let events = receiver.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "test");
    assert_eq!(events[0]["application"], "shop");
    receiver.set_down(true);
    let out = server.hoist(&["webhook", "test", &id]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("not delivered: answered 503"),
        "{}",
        out.stdout
    );
    // A receiver with another secret sees a signature it cannot verify.
    let other = Receiver::start("another-secret-of-the-receiver!!").await;
    let id2 = server
        .hoist(&[
            "webhook", "create", "--app", "shop", "--url", &other.url, "--secret", SECRET,
        ])
        .await
        .ok()
        .to_owned();
    let out = server.hoist(&["webhook", "test", &id2]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("401"), "{}", out.stdout);
    assert_eq!(other.bad_signatures(), 1);
    assert!(other.events().is_empty());
    // Deleted, it is gone.
    server.hoist(&["webhook", "delete", &id2]).await.ok();
    let out = server.hoist(&["webhook", "test", &id2]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no webhook"), "{}", out.stderr);
    assert!(!verify(
        b"k",
        b"body",
        &format!("sha256={}", "0".repeat(64))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_admin_only_and_bad_input_is_refused_by_name() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    for role in ["viewer", "deployer"] {
        let token = server
            .hoist(&["token", "create", "--operator", "--role", role])
            .await
            .ok()
            .to_owned();
        for args in [
            vec!["webhook", "list"],
            vec![
                "webhook",
                "create",
                "--app",
                "shop",
                "--url",
                "http://127.0.0.1:9/x",
            ],
            vec!["webhook", "delete", "wh-1"],
            vec!["webhook", "test", "wh-1"],
        ] {
            let out = hoist_with(&server.url, Some(&token), &args).await;
            assert_eq!(out.code, 1, "{role} {args:?}: {}", out.stdout);
            assert!(
                out.stderr.contains(&format!("role is {role}")),
                "{role} {args:?}: {}",
                out.stderr
            );
        }
    }
    for (args, says) in [
        (
            vec!["--url", "ftp://example.com/x"],
            "url \"ftp://example.com/x\": must be http:// or https://",
        ),
        (
            vec!["--url", "http://127.0.0.1:9/x", "--secret", "short"],
            "secret: must be 16 to 256 bytes",
        ),
    ] {
        let mut all = vec!["webhook", "create", "--app", "shop"];
        all.extend(args);
        let out = server.hoist(&all).await;
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }
    let out = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "nope",
            "--url",
            "http://127.0.0.1:9/x",
        ])
        .await;
    assert!(
        out.stderr.contains("no application \"nope\""),
        "{}",
        out.stderr
    );
    let out = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            "http://127.0.0.1:9/x",
            "--events",
            "deploys",
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("deploys"), "{}", out.stderr);
    assert_eq!(server.hoist(&["webhook", "list"]).await.ok(), "no webhooks");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn two_replicas_send_each_event_once_and_in_order() {
    use hoist_tests::postgres::{database, SharedBundles};
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let config = tmp.path().join("coordinator.yaml");
    std::fs::write(
        &config,
        "webhooks:\n  initial_backoff: 100ms\n  max_backoff: 200ms\n",
    )
    .unwrap();
    let replica = |name: &str| {
        let mut flags = vec![
            "--database",
            db.url.as_str(),
            "--config",
            config.to_str().unwrap(),
        ];
        flags.extend(bundles.flags());
        Server::launch(
            &tmp.path().join(name),
            Launch {
                extra: &flags,
                env: &bundles.env(),
                ..Launch::default()
            },
        )
    };
    let (a, b) = (replica("a"), replica("b"));
    let reg = setup(
        &a,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "OneAtATime"],
    )
    .await;
    let receiver = Receiver::start(SECRET).await;
    receiver.set_down(true);
    b.hoist(&[
        "webhook",
        "create",
        "--app",
        "shop",
        "--url",
        &receiver.url,
        "--secret",
        SECRET,
    ])
    .await
    .ok();
    let mut hosts = Vec::new();
    for n in 0..2 {
        let base = if n == 0 { &a.url } else { &b.url };
        let h = SimHost::register(base, &reg, &format!("web-{n}"), tags(&[("role", "web")])).await;
        h.poll(0).await;
        hosts.push(h);
    }
    let commit = "e".repeat(40);
    let id = a
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--git",
            "https://git.example/shop",
            "--commit",
            &commit,
        ])
        .await
        .ok()
        .to_owned();
    // One at a time: each host gets its command once the previous one is done.
    for _ in 0..2 {
        let mut ran = false;
        for h in &hosts {
            if let Some(cmd) = h.poll(1).await {
                h.run(&cmd, true).await;
                ran = true;
                break;
            }
        }
        assert!(ran, "a host got the next command");
    }
    a.wait_state(&id, "succeeded").await;
    until("tries refused on both sides", async || {
        receiver.refused_while_down() >= 4
    })
    .await;
    receiver.set_down(false);
    until("every delivery delivered", async || {
        let l = list(&b).await;
        let d = &l.webhooks[0].deliveries;
        !d.is_empty() && d.iter().all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    let events = receiver.events();
    let queued = list(&a).await.webhooks[0].deliveries.len();
    let mut ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event sent twice: {events:#?}");
    assert_eq!(events.len(), queued, "{events:#?}");
    assert_eq!(states_of(&events, &id), vec!["in_progress", "succeeded"]);
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_does_not_hold_up_a_deployment() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    // Accepts connections and never answers them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
            let _ = accepted_tx.send(());
        }
    });
    server
        .hoist(&[
            "webhook", "create", "--app", "shop", "--url", &url, "--secret", SECRET,
        ])
        .await
        .ok();
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    host.poll(0).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    // The first event's send is in flight, unanswered, while the deployment goes on.
    accepted
        .recv()
        .await
        .expect("the receiver was connected to");
    let cmd = host.poll(5).await.expect("the command");
    host.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
    let l = list(&server).await;
    let first = l.webhooks[0].deliveries.last().unwrap();
    assert_eq!(first.state, "in_progress");
    // Still being tried (or, on a very slow machine, timed out once and waiting to retry).
    assert_eq!(first.status, DeliveryStatus::Pending, "{first:?}");
    assert!(
        first.attempts == 0
            || first
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
        "{first:?}"
    );
}
