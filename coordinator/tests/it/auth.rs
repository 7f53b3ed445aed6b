//! Who may do what, and how bad requests are answered.

use hoist_protocol::agent::ReportBody;
use hoist_protocol::ErrorBody;

use crate::support::*;

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: ErrorBody = resp.json().await.expect("an ErrorBody");
    (status, body.error)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_host_cannot_see_or_report_another_hosts_command() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let b = SimHost::register(&server.url, &reg, "web-b", tags(&[("role", "other")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--revision",
            &rev,
        ])
        .await
        .ok();
    let cmd = a.poll(5).await.unwrap();

    assert!(b.poll(0).await.is_none(), "b sees nothing");
    let (status, msg) = error_of(
        b.report_raw(
            &cmd.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{msg}");
    // b's credentials with a's id: 401.
    let forged = a.with_secret(&b.secret);
    let (status, _) = error_of(forged.poll_raw(0).await).await;
    assert_eq!(status, 401);
    let (status, _) = error_of(
        forged
            .report_raw(
                &cmd.command_id,
                1,
                ReportBody::EventStarted {
                    event: "Install".into(),
                },
            )
            .await,
    )
    .await;
    assert_eq!(status, 401);
    // Nothing was recorded by those attempts.
    let d = server.deployment(&cmd.deployment_id).await;
    assert!(d.hosts[0].events.is_empty());

    // A revoked host is refused.
    server.hoist(&["hosts", "revoke", &b.id]).await.ok();
    let (status, msg) = error_of(b.poll_raw(0).await).await;
    assert_eq!(status, 401);
    assert!(msg.contains("revoked"), "{msg}");

    // A wrong registration token is refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/hosts/register", server.url))
        .bearer_auth("hrt_wrong")
        .json(&serde_json::json!({"name": "x", "agent_version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 401);

    // Operator routes need the operator token; the CLI says so in a sentence.
    let out = hoist_with(&server.url, Some("wrong"), &["app", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("wrong operator token"),
        "{}",
        out.stderr
    );
    let out = hoist_with(&server.url, None, &["app", "list"]).await;
    assert_eq!(out.code, 2, "no token is a usage error: {}", out.stderr);
    // A host secret is not an operator token.
    let resp = a
        .req(reqwest::Method::GET, "/v1/hosts")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicated_event_report_is_recorded_once() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let cmd = a.poll(5).await.unwrap();
    let body = || ReportBody::EventStarted {
        event: "DownloadBundle".into(),
    };
    assert!(a.report(&cmd.command_id, 1, body()).await.recorded);
    let dup = a.report(&cmd.command_id, 1, body()).await;
    assert!(!dup.recorded);
    let d = server.deployment(&id).await;
    assert_eq!(d.hosts[0].events.len(), 1, "{:?}", d.hosts[0].events);
    // A report type from a newer agent is recorded, not interpreted.
    let resp = a
        .req(
            reqwest::Method::POST,
            &format!("/v1/commands/{}/reports", cmd.command_id),
        )
        .json(&serde_json::json!({"seq": 2, "at_ms": 1, "type": "teleported", "extra": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_field_is_a_400_naming_it_and_unknown_fields_are_ignored() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"nmae": "x"}))
        .send()
        .await
        .unwrap();
    let (status, msg) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(msg.contains("missing field `name`"), "{msg}");

    let resp = http
        .post(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "shop", "from_the_future": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[])).await;
    let resp = a
        .req(reqwest::Method::POST, "/v1/hosts/poll")
        .json(&serde_json::json!({"name": "web-a", "tags": {}}))
        .send()
        .await
        .unwrap();
    let (status, msg) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(msg.contains("agent_version"), "{msg}");

    let resp = http
        .post(format!("{}/v1/applications/shop/groups", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "web", "tag_filters": []}))
        .send()
        .await
        .unwrap();
    let (status, msg) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(msg.contains("tag_filters"), "{msg}");

    // Errors reach the operator as sentences.
    let out = server.hoist(&["app", "create", "shop"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("application shop already exists"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains('{'), "{}", out.stderr);
    let out = server.hoist(&["group", "list", "--app", "nope"]).await;
    assert!(
        out.stderr.contains("no application named nope"),
        "{}",
        out.stderr
    );
    // A group that matches no host cannot be deployed to.
    server
        .hoist(&[
            "group",
            "create",
            "empty",
            "--app",
            "shop",
            "--tag",
            "role=none",
        ])
        .await
        .ok();
    let git = "0123456789abcdef0123456789abcdef01234567";
    let out = server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "empty",
            "--git",
            "https://example.invalid/r.git",
            "--commit",
            git,
        ])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("matches no host"), "{}", out.stderr);
    let out = server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "empty",
            "--git",
            "https://example.invalid/r.git",
            "--commit",
            "abc123",
        ])
        .await;
    assert!(
        out.stderr.contains("not a full commit id"),
        "{}",
        out.stderr
    );
    // Usage errors exit 2.
    let out = server.hoist(&["deploy", "create", "--app", "shop"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = server
        .hoist(&[
            "group",
            "create",
            "g",
            "--app",
            "shop",
            "--config",
            "Sometimes",
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
}
