//! What the coordinator does for releases on hosts: a rollback made on a host
//! (`POST /v1/hosts/rollbacks`) holds the host out of sync with the rollback as the reason
//! until an operator retries, and `deploy create --previous` deploys the group's previous
//! successful revision. Real server, simulated hosts.

use hoist_protocol::agent::{LocalRollback, LocalRollbackAck};
use hoist_protocol::operator::{HostList, SyncState};

use crate::support::{bundle_dir, setup, tags, Scratch, Server, SimHost};

async fn web1_sync(server: &Server) -> hoist_protocol::operator::HostGroupSync {
    let list: HostList =
        serde_json::from_str(server.hoist(&["hosts", "list", "--json"]).await.ok()).unwrap();
    let h = list.hosts.iter().find(|h| h.name == "web-1").unwrap();
    h.groups[0].clone()
}

/// Deploys `marker`'s bundle to shop/web and runs it on `host`; the deployment and revision.
async fn deploy_on(server: &Server, s: &Scratch, host: &SimHost, marker: &str) -> (String, String) {
    let dir = bundle_dir(&s.join(marker), marker);
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &revision).await;
    let cmd = host.poll(5).await.expect("a command");
    host.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
    (id, revision)
}

#[tokio::test]
async fn a_rollback_on_the_host_holds_it_out_of_sync_until_an_operator_retries() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let token = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let web = SimHost::register(&server.url, &token, "web-1", tags(&[("role", "web")])).await;
    let (first, r1) = deploy_on(&server, &s, &web, "v1").await;
    let dir = bundle_dir(&s.join("v2"), "v2");
    let r2 = server.push(dir.to_str().unwrap(), "shop").await;
    let second = server.deploy("shop", "web", &r2).await;
    let cmd = web.poll(5).await.expect("a command");
    let group_id = cmd.deployment_group_id.clone();
    web.run(&cmd, true).await;
    server.wait_state(&second, "succeeded").await;
    assert_eq!(web1_sync(&server).await.sync, SyncState::InSync);

    let send = |body: LocalRollback| {
        web.req(reqwest::Method::POST, "/v1/hosts/rollbacks")
            .json(&body)
            .send()
    };
    let rollback = LocalRollback {
        group_id: group_id.clone(),
        deployment_id: first.clone(),
        rollback_id: "rollback-1-2".into(),
        rolled_back_at_ms: 1,
    };
    // Refused: without the host's credentials, a deployment of no such group, bad ids.
    let anonymous = server
        .client()
        .post(format!("{}/v1/hosts/rollbacks", server.url))
        .json(&rollback)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let unknown = send(LocalRollback {
        deployment_id: "d-none".into(),
        ..rollback.clone()
    })
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad = send(LocalRollback {
        rollback_id: "x\u{1b}[2J".into(),
        ..rollback.clone()
    })
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("rollback_id"));
    assert_eq!(
        web1_sync(&server).await.sync,
        SyncState::InSync,
        "nothing changed"
    );

    let ok = send(rollback).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.json::<LocalRollbackAck>().await.unwrap().recorded);
    let g = web1_sync(&server).await;
    assert_eq!(g.sync, SyncState::OutOfSync);
    assert_eq!(
        g.revision_id.as_deref(),
        Some(r1.as_str()),
        "it runs v1 now"
    );
    let reason = g.error.unwrap_or_default();
    assert!(
        reason.contains("rolled back on the host (\"rollback-1-2\")") && reason.contains(&first),
        "{reason}"
    );
    // Held: no catch-up to the target however often it polls.
    assert!(web.poll(1).await.is_none());
    server.hoist(&["hosts", "retry", "web-1"]).await.ok();
    let cmd = web.poll(5).await.expect("a catch-up after the retry");
    assert_eq!(cmd.revision, server.deployment(&second).await.revision);
}

#[tokio::test]
async fn deploy_create_previous_deploys_the_groups_previous_successful_revision() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let token = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let web = SimHost::register(&server.url, &token, "web-1", tags(&[("role", "web")])).await;
    let previous = [
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--previous",
    ];
    let out = server.hoist(&previous).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("has no successful revision before its current one"),
        "{}",
        out.stderr
    );
    let (_, r1) = deploy_on(&server, &s, &web, "v1").await;
    let out = server.hoist(&previous).await;
    assert_ne!(out.code, 0, "one revision only: none before it");
    let (_, r2) = deploy_on(&server, &s, &web, "v2").await;
    // v2 again: the previous one is still v1, not the current v2.
    let again = server.deploy("shop", "web", &r2).await;
    let cmd = web.poll(5).await.expect("a command");
    web.run(&cmd, true).await;
    server.wait_state(&again, "succeeded").await;

    let id = server.hoist(&previous).await.ok().to_owned();
    let d = server.deployment(&id).await;
    assert_eq!(d.revision_id.as_deref(), Some(r1.as_str()));
    let cmd = web.poll(5).await.expect("a command");
    web.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
    // And back: from v1, the previous is v2.
    let id = server.hoist(&previous).await.ok().to_owned();
    assert_eq!(
        server.deployment(&id).await.revision_id.as_deref(),
        Some(r2.as_str())
    );
    // A pipeline's release takes a revision, not a group's.
    let out = server
        .hoist(&["release", "create", "--pipeline", "nothing", "--previous"])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--previous"), "{}", out.stderr);
}
