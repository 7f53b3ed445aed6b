//! Deployment variables against the real server: `--var` reaches each host's command and
//! the deployment's status, bad names are refused with every problem listed, and a
//! catch-up carries the variables of the deployment that set the group's target.

use std::time::{Duration, Instant};

use hoist_protocol::operator::Creator;

use crate::support::{bundle_dir, setup, tags, Scratch, Server, SimHost, TOKEN};

#[tokio::test]
async fn variables_reach_the_commands_and_a_catch_up_carries_the_targets() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let token = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let web1 = SimHost::register(&server.url, &token, "web-1", tags(&[("role", "web")])).await;
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let out = server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--revision",
            &revision,
            "--var",
            "DEPLOY_MODE=destructive",
            "--var",
            "GREETING=a=b c",
        ])
        .await;
    let id = out.ok().to_owned();
    let start = Instant::now();
    let cmd = loop {
        if let Some(c) = web1.poll(1).await {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no command");
    };
    assert_eq!(cmd.deployment_id, id);
    assert_eq!(
        cmd.variables,
        tags(&[("DEPLOY_MODE", "destructive"), ("GREETING", "a=b c")])
    );
    let status = server.hoist(&["deploy", "status", &id]).await;
    assert!(
        status
            .ok()
            .contains("variable:     DEPLOY_MODE=destructive"),
        "{}",
        status.stdout
    );
    web1.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;

    // A host that joins later is caught up with the target's variables.
    let web2 = SimHost::register(&server.url, &token, "web-2", tags(&[("role", "web")])).await;
    let catch_up = web2.first.clone().expect("a catch-up at the first poll");
    assert_eq!(
        server.deployment(&catch_up.deployment_id).await.creator,
        Creator::CatchUp
    );
    assert_eq!(catch_up.variables, cmd.variables);
}

#[tokio::test]
async fn bad_variables_are_refused_with_every_problem_named() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let token = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let _web1 = SimHost::register(&server.url, &token, "web-1", tags(&[("role", "web")])).await;
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    // The API checks every variable, whoever sends them.
    let resp = server
        .client()
        .post(format!("{}/v1/deployments", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "application": "shop", "deployment_group": "web",
            "revision": {"id": revision},
            "variables": {"DEPLOYMENT_ID": "d-x", "lower": "1", "OK": "fine"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: hoist_protocol::ErrorBody = resp.json().await.unwrap();
    assert!(
        body.error
            .contains("\"DEPLOYMENT_ID\": is a reserved hook variable")
            && body.error.contains("\"lower\": a variable name must match"),
        "{}",
        body.error
    );
    // The CLI refuses before sending, naming the flag's value.
    let out = server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--revision",
            &revision,
            "--var",
            "PATH=/tmp",
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("reserved hook variable"),
        "{}",
        out.stderr
    );
    let list = server.hoist(&["deploy", "list", "--json"]).await;
    assert!(
        !list.ok().contains("\"id\": \"d-"),
        "nothing was created: {}",
        list.stdout
    );
}
