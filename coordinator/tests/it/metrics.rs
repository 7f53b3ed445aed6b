//! `GET /metrics` against the real server: read with any operator token (a viewer's) and
//! refused without one unless `--metrics-public`; parsed with the Prometheus project's
//! OpenMetrics parser (which refuses malformed text); the fleet's figures and the request series change as a deployment runs.

use hoist_tests::prometheus::{need_prometheus_parser, parse, value, Sample};
use hoist_tests::reports::started;

use crate::support::{bundle_dir, hoist_with, setup, tags, Scratch, Server, SimHost, TOKEN};

async fn scrape(server: &Server, token: Option<&str>) -> Vec<Sample> {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    parse(&need_prometheus_parser(), &text).unwrap()
}

#[tokio::test]
#[ignore = "needs prometheus_client"]
async fn metrics_parse_and_change_as_a_deployment_runs() {
    need_prometheus_parser();
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no token, no metrics");
    let viewer = hoist_with(
        &server.url,
        Some(TOKEN),
        &["token", "create", "--operator", "--role", "viewer"],
    )
    .await
    .ok()
    .to_owned();

    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let before = scrape(&server, Some(&viewer)).await;
    assert_eq!(value(&before, "hoist_hosts", &[("state", "online")]), 1.0);
    assert_eq!(value(&before, "hoist_hosts", &[("state", "revoked")]), 0.0);
    assert_eq!(
        value(&before, "hoist_deployments", &[("state", "in_progress")]),
        0.0
    );
    assert_eq!(
        value(&before, "hoist_host_sync", &[("state", "never_deployed")]),
        1.0
    );
    assert_eq!(value(&before, "hoist_releases_awaiting_approval", &[]), 0.0);
    let replica = before
        .iter()
        .find(|x| x.name == "hoist_replica_info")
        .and_then(|x| x.labels.get("replica_id"))
        .expect("a replica id")
        .to_owned();
    assert!(
        replica.starts_with("rp-") && server.log().contains(&format!("replica {replica}")),
        "the replica's own id, as its log names it: {replica}\n{}",
        server.log()
    );

    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &revision).await;
    let cmd = host.poll(5).await.expect("a command");
    host.report(&cmd.command_id, 1, started("Install")).await;
    let during = scrape(&server, Some(&viewer)).await;
    assert_eq!(
        value(&during, "hoist_deployments", &[("state", "in_progress")]),
        1.0
    );
    assert_eq!(
        value(&during, "hoist_commands", &[("state", "in_progress")]),
        1.0
    );
    assert!(value(&during, "hoist_report_write_seconds_count", &[]) >= 1.0);

    // The rest of the run (report 1 again, recorded once, then 2 to 5).
    host.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
    let after = scrape(&server, Some(&viewer)).await;
    assert_eq!(
        value(&after, "hoist_deployments", &[("state", "in_progress")]),
        0.0
    );
    assert_eq!(
        value(&after, "hoist_deployments", &[("state", "succeeded")]),
        1.0
    );
    assert_eq!(
        value(&after, "hoist_commands", &[("state", "in_progress")]),
        0.0
    );
    assert_eq!(
        value(&after, "hoist_host_sync", &[("state", "in_sync")]),
        1.0
    );
    assert_eq!(
        value(&after, "hoist_host_sync", &[("state", "never_deployed")]),
        0.0
    );
    assert!(
        value(&after, "hoist_report_write_seconds_count", &[])
            > value(&during, "hoist_report_write_seconds_count", &[])
    );
    assert!(value(&after, "hoist_poll_hold_seconds_count", &[]) >= 2.0);
    // Requests by route pattern, never the raw path.
    let reports = value(
        &after,
        "hoist_http_requests_total",
        &[
            ("route", "/v1/commands/{id}/reports"),
            ("method", "POST"),
            ("status", "200"),
        ],
    );
    assert!(reports >= 5.0, "{reports}");
    assert!(
        !after.iter().any(|x| x
            .labels
            .get("route")
            .is_some_and(|r| r.contains(&cmd.command_id))),
        "a raw path became a label"
    );
    assert_eq!(
        value(&after, "hoist_replica_info", &[]),
        1.0,
        "the same process, the same replica id"
    );
    assert!(after
        .iter()
        .any(|x| x.labels.get("replica_id") == Some(&replica)));
}

#[tokio::test]
#[ignore = "needs prometheus_client"]
async fn metrics_public_answers_without_a_token() {
    need_prometheus_parser();
    let s = Scratch::new();
    let server = Server::start_with(&s.join("data"), &["--metrics-public"], Some(TOKEN));
    let m = scrape(&server, None).await;
    assert_eq!(value(&m, "hoist_hosts", &[("state", "online")]), 0.0);
    // The rest of the API still needs a token.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/hosts", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
