//! Pipelines and releases against the real server with simulated hosts: a release moves
//! stage by stage with each stage's variables, waits at a gate, is approved (who and when
//! recorded) or rejected; a stage busy with another release's deployment waits for it; a
//! newer release supersedes one waiting at the gate; a pipeline file's problems are all
//! listed.

use std::time::{Duration, Instant};

use hoist_protocol::agent;
use hoist_protocol::operator::{Creator, Release, ReleaseState, StageState};

use crate::support::{bundle_dir, tags, Scratch, Server, SimHost};

const PIPELINE: &str = "pipeline: shop-release\napplication: shop\nstages:\n  - group: staging\n    variables: { DEPLOY_MODE: destructive }\n  - group: production\n    approval: manual\n    variables: { DEPLOY_MODE: normal }\n";

/// shop with groups staging (env=staging) and production (env=prod), one host in each,
/// the pipeline applied and one revision pushed.
async fn setup(s: &Scratch) -> (Server, SimHost, SimHost, String) {
    let server = Server::start(&s.join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    for (g, env) in [("staging", "staging"), ("production", "prod")] {
        let tag = format!("env={env}");
        server
            .hoist(&["group", "create", g, "--app", "shop", "--tag", &tag])
            .await
            .ok();
    }
    let token = server.hoist(&["token", "create"]).await.ok().to_owned();
    let staging =
        SimHost::register(&server.url, &token, "stg-1", tags(&[("env", "staging")])).await;
    let prod = SimHost::register(&server.url, &token, "prod-1", tags(&[("env", "prod")])).await;
    let file = s.join("pipeline.yml");
    std::fs::write(&file, PIPELINE).unwrap();
    server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    (server, staging, prod, revision)
}

async fn release(server: &Server, id: &str) -> Release {
    serde_json::from_str(
        server
            .hoist(&["release", "status", id, "--json"])
            .await
            .ok(),
    )
    .unwrap()
}

async fn create(server: &Server, revision: &str) -> String {
    server
        .hoist(&[
            "release",
            "create",
            "--pipeline",
            "shop-release",
            "--revision",
            revision,
        ])
        .await
        .ok()
        .to_owned()
}

async fn next_command(host: &SimHost) -> agent::Command {
    let start = Instant::now();
    loop {
        if let Some(c) = host.poll(1).await {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no command for {}",
            host.name
        );
    }
}

/// Waits until release `id` is in `state`, up to 10 s.
async fn wait_release(server: &Server, id: &str, state: ReleaseState) -> Release {
    let start = Instant::now();
    loop {
        let r = release(server, id).await;
        if r.state == state {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "release {id} is {} not {state}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_release_deploys_each_stage_with_its_variables_and_waits_at_the_gate() {
    let s = Scratch::new();
    let (server, staging, prod, revision) = setup(&s).await;
    let id = create(&server, &revision).await;
    let cmd = next_command(&staging).await;
    assert_eq!(cmd.variables, tags(&[("DEPLOY_MODE", "destructive")]));
    let d = server.deployment(&cmd.deployment_id).await;
    assert_eq!(
        (d.creator, d.release_id.as_deref()),
        (Creator::Pipeline, Some(id.as_str()))
    );
    staging.run(&cmd, true).await;
    let r = wait_release(&server, &id, ReleaseState::AwaitingApproval).await;
    assert_eq!(r.stages[0].state, StageState::Succeeded);
    assert_eq!(r.stages[1].state, StageState::AwaitingApproval);
    assert!(
        prod.poll(0).await.is_none(),
        "production waits for its approval"
    );
    let text = server.hoist(&["release", "status", &id]).await;
    assert!(
        text.ok().contains("production  awaiting_approval"),
        "{}",
        text.stdout
    );

    server
        .hoist(&[
            "release",
            "approve",
            &id,
            "--comment",
            "looks good",
            "--by",
            "ana",
        ])
        .await
        .ok();
    let cmd = next_command(&prod).await;
    assert_eq!(cmd.variables, tags(&[("DEPLOY_MODE", "normal")]));
    prod.run(&cmd, true).await;
    let r = wait_release(&server, &id, ReleaseState::Succeeded).await;
    let gate = &r.stages[1];
    assert_eq!(gate.approved_by.as_deref(), Some("ana"));
    assert!(gate.approved_ms.is_some());
    assert_eq!(gate.comment.as_deref(), Some("looks good"));
    let text = server.hoist(&["release", "status", &id]).await;
    assert!(text.ok().contains("approved by ana at"), "{}", text.stdout);
    // Approving again is refused: nothing waits.
    let again = server.hoist(&["release", "approve", &id]).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("not waiting for approval"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn a_busy_stage_waits_a_newer_release_supersedes_at_the_gate_and_reject_ends_one() {
    let s = Scratch::new();
    let (server, staging, _prod, revision) = setup(&s).await;
    let first = create(&server, &revision).await;
    let cmd1 = next_command(&staging).await;
    // The second release reaches staging while the first deploys there: it waits.
    let second = create(&server, &revision).await;
    let r2 = release(&server, &second).await;
    assert_eq!(r2.stages[0].state, StageState::Pending);
    assert!(
        r2.stages[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&cmd1.deployment_id)),
        "{:?}",
        r2.stages[0]
    );
    staging.run(&cmd1, true).await;
    wait_release(&server, &first, ReleaseState::AwaitingApproval).await;
    // The first's end started the second's staging deployment.
    let cmd2 = next_command(&staging).await;
    assert_ne!(cmd2.deployment_id, cmd1.deployment_id);
    assert_eq!(
        server
            .deployment(&cmd2.deployment_id)
            .await
            .release_id
            .as_deref(),
        Some(second.as_str())
    );
    staging.run(&cmd2, true).await;
    wait_release(&server, &second, ReleaseState::AwaitingApproval).await;
    let r1 = wait_release(&server, &first, ReleaseState::Superseded).await;
    assert_eq!(r1.stages[1].state, StageState::Skipped);
    assert!(
        r1.message.as_deref().is_some_and(|m| m.contains(&second)),
        "{:?}",
        r1.message
    );

    server
        .hoist(&[
            "release",
            "reject",
            &second,
            "--comment",
            "not today",
            "--by",
            "bo",
        ])
        .await
        .ok();
    let r2 = wait_release(&server, &second, ReleaseState::Rejected).await;
    assert_eq!(r2.stages[1].rejected_by.as_deref(), Some("bo"));
    assert_eq!(r2.stages[1].comment.as_deref(), Some("not today"));
    let list = server
        .hoist(&["release", "list", "--pipeline", "shop-release"])
        .await;
    assert!(
        list.ok().contains("superseded") && list.stdout.contains("rejected"),
        "{}",
        list.stdout
    );
}

#[tokio::test]
async fn a_failed_stage_ends_the_release_and_later_stages_do_not_run() {
    let s = Scratch::new();
    let (server, staging, prod, revision) = setup(&s).await;
    let id = create(&server, &revision).await;
    let cmd = next_command(&staging).await;
    staging.run(&cmd, false).await;
    let r = wait_release(&server, &id, ReleaseState::Failed).await;
    assert_eq!(r.stages[0].state, StageState::Failed);
    assert_eq!(r.stages[1].state, StageState::Skipped);
    assert!(prod.poll(0).await.is_none());
}

#[tokio::test]
async fn an_invalid_pipeline_file_lists_every_problem() {
    let s = Scratch::new();
    let (server, _staging, _prod, _revision) = setup(&s).await;
    let file = s.join("bad.yml");
    std::fs::write(
        &file,
        "pipeline: shop-release\napplication: shop\nowner: me\nstages:\n  - group: staging\n    variables: { deploy-mode: x }\n  - group: qa\n  - group: staging\n",
    )
    .unwrap();
    let out = server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in [
        "the pipeline file has 4 problem(s)",
        "owner: unknown key",
        "stages[0].variables: \"deploy-mode\": a variable name must match",
        "stages[1].group: no deployment group \"qa\" in application \"shop\"",
        "stages[2].group: duplicate group \"staging\" (also stages[0])",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            out.stderr
        );
    }
    // The pipeline applied before is untouched.
    let show = server.hoist(&["pipeline", "show", "shop-release"]).await;
    assert!(show.ok().contains("DEPLOY_MODE=normal"), "{}", show.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_deployment_that_ended_while_the_coordinator_was_down_moves_its_release_on_start() {
    let s = Scratch::new();
    let (mut server, staging, _prod, revision) = setup(&s).await;
    let id = create(&server, &revision).await;
    let cmd = next_command(&staging).await;
    server.stop().await;
    // The deployment's end is in the store, the release's step is not: what a crash right
    // after the end's commit leaves.
    let db = rusqlite::Connection::open(s.join("data").join("hoist.db")).unwrap();
    db.execute(
        "UPDATE commands SET state = 'succeeded', ended_ms = 1 WHERE id = ?1",
        [&cmd.command_id],
    )
    .unwrap();
    db.execute(
        "UPDATE deployments SET state = 'succeeded', ended_ms = 1 WHERE id = ?1",
        [&cmd.deployment_id],
    )
    .unwrap();
    drop(db);
    let server = Server::start(&s.join("data"));
    let r = release(&server, &id).await;
    assert_eq!(r.state, ReleaseState::AwaitingApproval, "{r:?}");
    assert_eq!(r.stages[0].state, StageState::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn release_create_wait_exits_0_when_every_stage_succeeded() {
    let s = Scratch::new();
    let (server, staging, _prod, revision) = setup(&s).await;
    let file = s.join("one-stage.yml");
    std::fs::write(
        &file,
        "pipeline: quick\napplication: shop\nstages:\n  - group: staging\n",
    )
    .unwrap();
    server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();
    let url = server.url.clone();
    let wait = tokio::spawn(async move {
        crate::support::hoist_with(
            &url,
            Some(crate::support::TOKEN),
            &[
                "release",
                "create",
                "--pipeline",
                "quick",
                "--revision",
                &revision,
                "--wait",
            ],
        )
        .await
    });
    let cmd = next_command(&staging).await;
    staging.run(&cmd, true).await;
    let out = wait.await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim();
    assert!(
        id.starts_with("rel-") && !id.contains('\n'),
        "{:?}",
        out.stdout
    );
    assert!(out.stderr.contains("staging succeeded"), "{}", out.stderr);
    assert_eq!(release(&server, id).await.state, ReleaseState::Succeeded);
}
