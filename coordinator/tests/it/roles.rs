//! Operator roles against the real server and CLI: a viewer reads and is refused every
//! change (403, nothing changed), a deployer deploys and approves under its token's name
//! but cannot create tokens, a revoked token is refused, and no secret is ever listed.

use std::time::{Duration, Instant};

use hoist_protocol::operator::{Release, ReleaseState};
use hoist_protocol::ErrorBody;

use crate::support::{bundle_dir, hoist_with, setup, tags, Scratch, Server, SimHost, TOKEN};

/// `hoist token create --operator --role ROLE [--name NAME]` with the admin token: the new
/// token (stdout) and its id (stderr).
async fn operator_token(server: &Server, role: &str, name: Option<&str>) -> (String, String) {
    let mut args = vec!["token", "create", "--operator", "--role", role];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    let out = server.hoist(&args).await;
    let token = out.ok().to_owned();
    let id = out
        .stderr
        .split_whitespace()
        .find(|w| w.starts_with("op-"))
        .expect("the token's id on stderr")
        .to_owned();
    (token, id)
}

/// What an admin sees of everything an operator can change.
async fn snapshot(server: &Server) -> Vec<String> {
    let mut all = Vec::new();
    for args in [
        &["app", "list", "--json"][..],
        &["group", "list", "--app", "shop", "--json"],
        &["deploy", "list", "--json"],
        &["hosts", "list", "--json"],
        &["token", "list", "--json"],
        &["pipeline", "list", "--json"],
        &["release", "list", "--json"],
    ] {
        all.push(server.hoist(args).await.ok().to_owned());
    }
    all
}

#[tokio::test]
async fn a_viewer_reads_everything_and_is_refused_every_change_with_nothing_changed() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let deployment = server.deploy("shop", "web", &revision).await;
    let (viewer, _) = operator_token(&server, "viewer", Some("vic")).await;

    // Reading works, through the CLI as through the API.
    for args in [
        &["app", "list"][..],
        &["deploy", "list"],
        &["deploy", "status", &deployment],
        &["hosts", "list"],
        &["token", "list"],
    ] {
        hoist_with(&server.url, Some(&viewer), args).await.ok();
    }
    let before = snapshot(&server).await;

    let http = reqwest::Client::new();
    let changes: &[(&str, String, serde_json::Value)] = &[
        (
            "POST",
            "/v1/applications".into(),
            serde_json::json!({"name": "evil"}),
        ),
        (
            "POST",
            "/v1/applications/shop/groups".into(),
            serde_json::json!({"name": "evil"}),
        ),
        (
            "PATCH",
            "/v1/applications/shop/groups/web".into(),
            serde_json::json!({"bake_secs": 9}),
        ),
        (
            "POST",
            "/v1/applications/shop/revisions".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            "/v1/registration-tokens".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            "/v1/registration-tokens/t-1/revoke".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            "/v1/operator-tokens".into(),
            serde_json::json!({"role": "admin"}),
        ),
        (
            "POST",
            "/v1/operator-tokens/op-1/revoke".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            format!("/v1/hosts/{}/revoke", host.id),
            serde_json::json!({}),
        ),
        (
            "POST",
            format!("/v1/hosts/{}/tags", host.id),
            serde_json::json!({"set": {"x": "y"}}),
        ),
        (
            "POST",
            format!("/v1/hosts/{}/retry", host.id),
            serde_json::json!({}),
        ),
        ("POST", "/v1/deployments".into(), serde_json::json!({})),
        (
            "POST",
            format!("/v1/deployments/{deployment}/stop"),
            serde_json::json!({}),
        ),
        ("POST", "/v1/pipelines".into(), serde_json::json!({})),
        ("DELETE", "/v1/pipelines/p".into(), serde_json::json!({})),
        (
            "POST",
            "/v1/pipelines/p/releases".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            "/v1/releases/r-1/approve".into(),
            serde_json::json!({}),
        ),
        (
            "POST",
            "/v1/releases/r-1/reject".into(),
            serde_json::json!({}),
        ),
        ("PUT", "/v1/bundles".into(), serde_json::json!({})),
    ];
    for (method, path, body) in changes {
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .bearer_auth(&viewer)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(status, 403, "{method} {path}: {}", err.error);
        assert!(
            err.error.contains("role is viewer"),
            "{method} {path}: {}",
            err.error
        );
    }
    // The CLI gets the same answer, as a sentence, exit 1.
    let out = hoist_with(&server.url, Some(&viewer), &["deploy", "stop", &deployment]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("role is viewer; POST /v1/deployments/{id}/stop needs deployer"),
        "{}",
        out.stderr
    );
    let out = hoist_with(&server.url, Some(&viewer), &["app", "create", "evil"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("needs admin"), "{}", out.stderr);

    assert_eq!(snapshot(&server).await, before, "a viewer changed nothing");
}

/// Waits until release `id` is in `state`, up to 10 s.
async fn wait_release(server: &Server, id: &str, state: ReleaseState) -> Release {
    let start = Instant::now();
    loop {
        let out = server.hoist(&["release", "status", id, "--json"]).await;
        let r: Release = serde_json::from_str(out.ok()).unwrap();
        if r.state == state {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "release {id} is {}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deployer_deploys_and_approves_under_its_name_but_cannot_create_tokens() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let reg = setup(&server, "shop", "staging", &["--tag", "env=staging"]).await;
    server
        .hoist(&[
            "group",
            "create",
            "production",
            "--app",
            "shop",
            "--tag",
            "env=prod",
        ])
        .await
        .ok();
    let staging = SimHost::register(&server.url, &reg, "stg-1", tags(&[("env", "staging")])).await;
    let _prod = SimHost::register(&server.url, &reg, "prod-1", tags(&[("env", "prod")])).await;
    let file = s.join("pipeline.yml");
    std::fs::write(
        &file,
        "pipeline: shop-release\napplication: shop\nstages:\n  - group: staging\n  - group: production\n    approval: manual\n",
    )
    .unwrap();
    server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();
    let (deployer, _) = operator_token(&server, "deployer", Some("dana")).await;
    let as_deployer =
        |args: &'static [&'static str]| hoist_with(&server.url, Some(&deployer), args);

    for args in [
        &["token", "create"][..],
        &["token", "create", "--operator", "--role", "viewer"],
        &["app", "create", "other"],
    ] {
        let out = as_deployer(args).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("role is deployer"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("needs admin"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(
        !server
            .hoist(&["token", "list"])
            .await
            .ok()
            .contains("viewer"),
        "no token was made"
    );

    // Pushing and releasing are a deployer's.
    let dir = bundle_dir(&s.join("b"), "v1");
    let out = hoist_with(
        &server.url,
        Some(&deployer),
        &["push", dir.to_str().unwrap(), "--app", "shop"],
    )
    .await;
    let revision = out.ok().to_owned();
    let out = hoist_with(
        &server.url,
        Some(&deployer),
        &[
            "release",
            "create",
            "--pipeline",
            "shop-release",
            "--revision",
            &revision,
        ],
    )
    .await;
    let id = out.ok().to_owned();
    let start = Instant::now();
    let cmd = loop {
        if let Some(c) = staging.poll(1).await {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no staging command"
        );
    };
    staging.run(&cmd, true).await;
    wait_release(&server, &id, ReleaseState::AwaitingApproval).await;
    // The token's name is what is recorded, whatever --by says.
    hoist_with(
        &server.url,
        Some(&deployer),
        &["release", "approve", &id, "--by", "someone-else"],
    )
    .await
    .ok();
    let out = server.hoist(&["release", "status", &id, "--json"]).await;
    let r: Release = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(r.stages[1].approved_by.as_deref(), Some("dana"));
}

#[tokio::test]
async fn a_revoked_operator_token_is_refused_and_no_secret_is_listed() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let (admin, id) = operator_token(&server, "admin", Some("ops")).await;
    assert!(admin.starts_with("hot_"), "{admin}");
    hoist_with(&server.url, Some(&admin), &["app", "create", "shop"])
        .await
        .ok();

    let listed = server.hoist(&["token", "list"]).await.ok().to_owned();
    assert!(
        listed.contains(&id) && listed.contains("admin") && listed.contains("ops"),
        "{listed}"
    );
    let json = server
        .hoist(&["token", "list", "--json"])
        .await
        .ok()
        .to_owned();
    assert!(json.contains("\"operator_tokens\""), "{json}");
    for text in [&listed, &json] {
        assert!(!text.contains(&admin[4..]), "a secret was listed: {text}");
    }

    server.hoist(&["token", "revoke", &id]).await.ok();
    let out = hoist_with(&server.url, Some(&admin), &["app", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("operator token {id} was revoked")),
        "{}",
        out.stderr
    );
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/applications", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(server
        .hoist(&["token", "list"])
        .await
        .ok()
        .contains("revoked"));
    // The configured token is admin and stays so.
    hoist_with(
        &server.url,
        Some(TOKEN),
        &["token", "create", "--operator", "--role", "viewer"],
    )
    .await
    .ok();

    // Bad input is refused, naming it.
    let out = server
        .hoist(&["token", "create", "--operator", "--role", "owner"])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown role \"owner\""),
        "{}",
        out.stderr
    );
    let out = server.hoist(&["token", "create", "--operator"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("needs --role"), "{}", out.stderr);
    let out = server.hoist(&["token", "create", "--role", "viewer"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("need --operator"), "{}", out.stderr);
    let http = reqwest::Client::new();
    for (body, says) in [
        (
            serde_json::json!({"role": "owner"}),
            "role: must be admin, deployer or viewer",
        ),
        (
            serde_json::json!({"role": "viewer", "name": "a\u{1b}b"}),
            "without control characters",
        ),
        (
            serde_json::json!({"role": "viewer", "name": "x".repeat(101)}),
            "1 to 100 bytes",
        ),
    ] {
        let resp = http
            .post(format!("{}/v1/operator-tokens", server.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert!(err.error.contains(says), "{body}: {}", err.error);
    }
    let out = server
        .hoist(&["token", "revoke", "op-0000000000000000"])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no operator token"), "{}", out.stderr);
}

#[tokio::test]
async fn operator_tokens_are_stored_hashed_and_keep_their_role_and_revocation_across_a_restart() {
    let s = Scratch::new();
    let data = s.join("data");
    let mut server = Server::start(&data);
    let (viewer, _) = operator_token(&server, "viewer", Some("vic")).await;
    let (gone, gone_id) = operator_token(&server, "admin", None).await;
    server.hoist(&["token", "revoke", &gone_id]).await.ok();
    server.stop().await;
    drop(server);

    // No secret in the database or its log, only their hashes.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in [&viewer, &gone] {
                assert!(
                    !text.contains(secret.as_str()),
                    "{} holds a token",
                    path.display()
                );
            }
        }
    }

    let server = Server::start(&data);
    hoist_with(&server.url, Some(&viewer), &["app", "list"])
        .await
        .ok();
    let out = hoist_with(&server.url, Some(&viewer), &["app", "create", "shop"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("role is viewer"), "{}", out.stderr);
    let out = hoist_with(&server.url, Some(&gone), &["app", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("was revoked"), "{}", out.stderr);
}
