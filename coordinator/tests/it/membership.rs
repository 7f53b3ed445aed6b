//! Group membership is the operator's: a host's tags come from its registration (within
//! what its token allows), a later change is only a request until `hoist hosts tag`
//! accepts it; registration tokens expire, run out and can be revoked; names are unique
//! among active hosts and limited in length and characters.

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_protocol::agent::RegisterRequest;
use hoist_protocol::operator::{HostList, RegistrationTokenList, TokenStatus};
use hoist_protocol::ErrorBody;

use crate::support::*;

async fn register_raw(
    server: &Server,
    token: &str,
    name: &str,
    tags: BTreeMap<String, String>,
    agent_version: &str,
) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/hosts/register", server.url))
        .bearer_auth(token)
        .json(&RegisterRequest {
            name: name.into(),
            tags,
            agent_version: agent_version.into(),
        })
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let msg = if status == 201 {
        text
    } else {
        serde_json::from_str::<ErrorBody>(&text)
            .unwrap_or_else(|_| panic!("not an ErrorBody: {text}"))
            .error
    };
    (status, msg)
}

async fn hosts(server: &Server) -> HostList {
    serde_json::from_str(server.hoist(&["hosts", "list", "--json"]).await.ok()).unwrap()
}

fn deploy_args(rev: &str) -> Vec<&str> {
    vec![
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--revision",
        rev,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_polling_with_new_tags_joins_no_group_until_an_operator_accepts() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "h-1", tags(&[("role", "db")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;

    // The host's config now says role=web, and its polls say so.
    let mut moved = host.clone();
    moved.tags = tags(&[("role", "web")]);
    assert!(moved.poll(0).await.is_none());
    let listed = hosts(&server).await;
    assert_eq!(listed.hosts[0].tags, tags(&[("role", "db")]));
    assert_eq!(
        listed.hosts[0].requested_tags,
        Some(tags(&[("role", "web")]))
    );
    let text = server.hoist(&["hosts", "list"]).await;
    assert!(text.ok().contains("REQUESTED"), "{}", text.stdout);
    assert!(text.stdout.contains("tags role=web"), "{}", text.stdout);

    // Not a member yet: the group matches no host.
    let out = server.hoist(&deploy_args(&rev)).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("matches no host"), "{}", out.stderr);

    // The operator accepts (by name); the host is a member now.
    server
        .hoist(&["hosts", "tag", "h-1", "--accept"])
        .await
        .ok();
    let listed = hosts(&server).await;
    assert_eq!(listed.hosts[0].tags, tags(&[("role", "web")]));
    assert_eq!(listed.hosts[0].requested_tags, None);
    let id = server.deploy("shop", "web", &rev).await;
    let cmd = moved.poll(5).await.expect("a member gets the command");
    assert_eq!(cmd.deployment_id, id);

    // Tags set directly (by id), one removed; nothing left to accept afterwards.
    let out = server
        .hoist(&["hosts", "tag", &host.id, "env=prod", "--remove", "role"])
        .await;
    out.ok();
    assert_eq!(hosts(&server).await.hosts[0].tags, tags(&[("env", "prod")]));
    let out = server.hoist(&["hosts", "tag", "nobody", "x=y"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no host"), "{}", out.stderr);
    let out = server.hoist(&["hosts", "tag", "h-1", "bad\u{1b}=x"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("tag key") && !out.stderr.contains('\u{1b}'),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_limited_to_one_use_registers_one_host_and_refuses_the_second() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let once = server
        .hoist(&["token", "create", "--max-uses", "1"])
        .await
        .ok()
        .to_owned();
    let (status, msg) = register_raw(&server, &once, "a", tags(&[]), "1.0").await;
    assert_eq!(status, 201, "{msg}");
    let (status, msg) = register_raw(&server, &once, "b", tags(&[]), "1.0").await;
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("used up"), "{msg}");

    // Listed with its use count, never with its secret.
    let out = server.hoist(&["token", "list", "--json"]).await;
    assert!(!out.ok().contains(&once), "{}", out.stdout);
    let list: RegistrationTokenList = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.tokens.len(), 1);
    assert_eq!((list.tokens[0].uses, list.tokens[0].max_uses), (1, Some(1)));
    assert_eq!(list.tokens[0].status, TokenStatus::UsedUp);
    let out = server.hoist(&["token", "list"]).await;
    assert!(out.ok().contains("used up"), "{}", out.stdout);
    assert!(out.stdout.contains("1/1"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_or_expired_token_is_refused() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let out = server.hoist(&["token", "create"]).await;
    let revoked = out.ok().to_owned();
    let id = serde_json::from_str::<RegistrationTokenList>(
        server.hoist(&["token", "list", "--json"]).await.ok(),
    )
    .unwrap()
    .tokens[0]
        .id
        .clone();
    assert!(out.stderr.contains(&id), "{}", out.stderr);
    server.hoist(&["token", "revoke", &id]).await.ok();
    let (status, msg) = register_raw(&server, &revoked, "a", tags(&[]), "1.0").await;
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("revoked") && msg.contains(&id), "{msg}");

    let expiring = server
        .hoist(&["token", "create", "--expires", "1s"])
        .await
        .ok()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, msg) = register_raw(&server, &expiring, "b", tags(&[]), "1.0").await;
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("expired"), "{msg}");
    // The coordinator's clock judges each token, for the list as for registration.
    let list: RegistrationTokenList =
        serde_json::from_str(server.hoist(&["token", "list", "--json"]).await.ok()).unwrap();
    let statuses: Vec<TokenStatus> = list.tokens.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [TokenStatus::Revoked, TokenStatus::Expired]);
    let out = server.hoist(&["token", "list"]).await;
    assert!(
        out.ok().contains("revoked") && out.stdout.contains("expired"),
        "{}",
        out.stdout
    );
    let out = server.hoist(&["token", "revoke", "t-nope"]).await;
    assert_eq!(out.code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_token_refuses_a_tag_it_does_not_allow() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let scoped = server
        .hoist(&[
            "token",
            "create",
            "--allow-tag",
            "env=prod",
            "--allow-tag",
            "role=web",
        ])
        .await
        .ok()
        .to_owned();
    let (status, msg) = register_raw(
        &server,
        &scoped,
        "a",
        tags(&[("env", "prod"), ("role", "db")]),
        "1.0",
    )
    .await;
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("role=db"), "{msg}");
    let (status, msg) = register_raw(
        &server,
        &scoped,
        "a",
        tags(&[("env", "prod"), ("role", "web")]),
        "1.0",
    )
    .await;
    assert_eq!(status, 201, "{msg}");
    let out = server.hoist(&["token", "list"]).await;
    assert!(out.ok().contains("env=prod,role=web"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_taken_by_an_active_host_is_refused_naming_that_host() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    let first = SimHost::register(&server.url, &reg, "web-1", tags(&[])).await;
    let (status, msg) = register_raw(&server, &reg, "web-1", tags(&[]), "1.0").await;
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains(&first.id) && msg.contains(&format!("hoist hosts revoke {}", first.id)),
        "{msg}"
    );
    server.hoist(&["hosts", "revoke", &first.id]).await.ok();
    let (status, msg) = register_raw(&server, &reg, "web-1", tags(&[]), "1.0").await;
    assert_eq!(status, 201, "a revoked host's name is free again: {msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_tag_or_version_with_escape_sequences_is_refused() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    let long = "x".repeat(129);
    for (name, tags, version, field) in [
        ("web\u{1b}[2J", tags(&[]), "1.0", "name"),
        (long.as_str(), tags(&[]), "1.0", "name"),
        (
            "web-1",
            tags(&[("role", "web\nforged log line")]),
            "1.0",
            "tag role",
        ),
        ("web-1", tags(&[]), "1.0\u{1b}]0;x\u{7}", "agent_version"),
    ] {
        let (status, msg) = register_raw(&server, &reg, name, tags, version).await;
        assert_eq!(status, 400, "{msg}");
        assert!(msg.starts_with(field), "{msg}");
        assert!(!msg.contains('\u{1b}') && !msg.contains('\n'), "{msg:?}");
        assert!(
            msg.len() < 300,
            "the refusal does not echo the whole input: {msg}"
        );
    }
    assert!(hosts(&server).await.hosts.is_empty());
    // A poll that asks for such a name records no request.
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[])).await;
    let mut bad = host.clone();
    bad.name = "web\u{1b}[31m".into();
    assert!(bad.poll(0).await.is_none());
    let listed = hosts(&server).await;
    assert_eq!(listed.hosts[0].name, "web-1");
    assert_eq!(listed.hosts[0].requested_name, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_registered_but_never_polled_is_no_target() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let (status, msg) = register_raw(&server, &reg, "web-1", tags(&[("role", "web")]), "1.0").await;
    assert_eq!(status, 201, "{msg}");
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let out = server.hoist(&deploy_args(&rev)).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("matches no host"), "{}", out.stderr);
    let listed = hosts(&server).await;
    assert_eq!(listed.hosts[0].last_seen_ms, 0);
    assert!(!listed.hosts[0].online);
    let text = server.hoist(&["hosts", "list"]).await;
    assert!(text.ok().contains("never"), "{}", text.stdout);

    // Its agent lost the answer and registers again under the same name: the orphan,
    // which never polled, gives the name up.
    let (status, msg) = register_raw(&server, &reg, "web-1", tags(&[("role", "web")]), "1.0").await;
    assert_eq!(status, 201, "{msg}");
    let listed = hosts(&server).await;
    assert_eq!(listed.hosts.len(), 2);
    assert_eq!(listed.hosts.iter().filter(|h| h.revoked).count(), 1);
}
