//! Fleet convergence against the real server with simulated hosts: catch-up deployments
//! for hosts that join or come back, bounded retries and `hosts retry`, an operator's
//! deployment superseding a catch-up, bakes between batches, and honest outcomes
//! (`interrupted`, `unknown`). Waits poll with a deadline; nothing asserts on timing.

use std::time::{Duration, Instant};

use hoist_protocol::agent::{self, CommandStatus, ErrorCode, EventStatus, ReportBody};
use hoist_protocol::operator::{CommandState, Creator, DeploymentGroup, HostList, SyncState};

use crate::support::{bundle_dir, setup, tags, Scratch, Server, SimHost};

/// Polls `f` every 50 ms until it returns `Some`, failing after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hosts(server: &Server) -> HostList {
    serde_json::from_str(server.hoist(&["hosts", "list", "--json"]).await.ok()).unwrap()
}

async fn group(server: &Server) -> DeploymentGroup {
    serde_json::from_str(
        server
            .hoist(&["group", "show", "web", "--app", "shop", "--json"])
            .await
            .ok(),
    )
    .unwrap()
}

/// The sync state of host `name` in shop/web.
async fn sync_of(server: &Server, name: &str) -> SyncState {
    let list = hosts(server).await;
    let h = list.hosts.iter().find(|h| h.name == name).unwrap();
    h.groups
        .iter()
        .find(|g| g.application == "shop" && g.deployment_group == "web")
        .map(|g| g.sync)
        .unwrap()
}

/// A poll that waits for a command, up to 10 s of polls.
async fn next_command(host: &SimHost) -> agent::Command {
    eventually("a command", Duration::from_secs(10), || host.poll(1)).await
}

/// Reports a command failed in Install with `code`.
async fn fail(host: &SimHost, cmd: &agent::Command, code: ErrorCode, message: &str) {
    let id = &cmd.command_id;
    host.report(
        id,
        1,
        ReportBody::EventStarted {
            event: "Install".into(),
        },
    )
    .await;
    host.report(
        id,
        2,
        ReportBody::EventEnded {
            event: "Install".into(),
            status: EventStatus::Failed,
            error_code: Some(code),
            message: Some(message.into()),
            script: None,
            exit_code: None,
            log_tail: None,
            duration_ms: 3,
        },
    )
    .await;
    host.report(
        id,
        3,
        ReportBody::Completed {
            status: CommandStatus::Failed,
            failed_event: Some("Install".into()),
            message: Some(message.into()),
        },
    )
    .await;
}

/// shop/web (AllAtOnce, `extra` group flags) with hosts web-1 and web-2 and a successful
/// deployment of one revision to them: the server, the token, the hosts, the revision
/// and the deployment.
async fn deployed(
    s: &Scratch,
    server_flags: &[&str],
    extra: &[&str],
) -> (Server, String, Vec<SimHost>, String, String) {
    let server = Server::start_with(&s.join("data"), server_flags, Some(crate::support::TOKEN));
    let mut group_args = vec!["--tag", "role=web", "--config", "AllAtOnce"];
    group_args.extend_from_slice(extra);
    let token = setup(&server, "shop", "web", &group_args).await;
    let mut web = Vec::new();
    for name in ["web-1", "web-2"] {
        web.push(SimHost::register(&server.url, &token, name, tags(&[("role", "web")])).await);
    }
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &revision).await;
    for h in &web {
        let cmd = next_command(h).await;
        h.run(&cmd, true).await;
    }
    server.wait_state(&id, "succeeded").await;
    (server, token, web, revision, id)
}

#[tokio::test]
async fn a_host_registered_after_a_deployment_catches_up_without_an_operator() {
    let s = Scratch::new();
    let (server, token, _web, revision, first) = deployed(&s, &[], &[]).await;
    let g = group(&server).await;
    let target = g.target.expect("a target after a successful deployment");
    assert_eq!(target.deployment_id, first);
    assert_eq!(target.revision.id, revision);
    assert_eq!(
        (g.sync_counts.in_sync, g.sync_counts.never_deployed),
        (2, 0)
    );

    let web3 = SimHost::register(&server.url, &token, "web-3", tags(&[("role", "web")])).await;
    // Its very first poll is caught up.
    let cmd = web3.first.clone().expect("a catch-up at the first poll");
    assert_ne!(cmd.deployment_id, first);
    let d = server.deployment(&cmd.deployment_id).await;
    assert_eq!(d.creator, Creator::CatchUp);
    assert_eq!(d.revision_id.as_deref(), Some(revision.as_str()));
    assert_eq!(sync_of(&server, "web-3").await, SyncState::CatchingUp);
    web3.run(&cmd, true).await;
    server.wait_state(&cmd.deployment_id, "succeeded").await;

    for name in ["web-1", "web-2", "web-3"] {
        assert_eq!(sync_of(&server, name).await, SyncState::InSync, "{name}");
    }
    let g = group(&server).await;
    assert_eq!(g.sync_counts.in_sync, 3);
    assert_eq!(
        g.target.map(|t| t.deployment_id),
        Some(first),
        "a catch-up never moves the target"
    );
    let list = server.hoist(&["deploy", "list", "--app", "shop"]).await;
    assert!(list.ok().contains("catch-up"), "{}", list.stdout);
    let status = server
        .hoist(&["deploy", "status", &cmd.deployment_id])
        .await;
    assert!(status.ok().contains("by catch-up"), "{}", status.stdout);
    let text = server
        .hoist(&["group", "show", "web", "--app", "shop"])
        .await;
    assert!(text.ok().contains("3 in sync"), "{}", text.stdout);
    // In sync: later polls get nothing.
    assert!(web3.poll(0).await.is_none());
}

#[tokio::test]
async fn a_failing_catch_up_is_tried_four_times_then_held_until_an_operator_retries() {
    let s = Scratch::new();
    // A 2 s lease: retries after 0.5, 1 and 2 s.
    let (server, token, _web, _revision, _first) = deployed(&s, &["--host-lease", "2s"], &[]).await;
    let web3 = SimHost::register(&server.url, &token, "web-3", tags(&[("role", "web")])).await;
    let mut tries: Vec<String> = Vec::new();
    let mut handed = web3.first.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cmd) = handed.take() {
            assert!(!tries.contains(&cmd.command_id), "a command is handed once");
            tries.push(cmd.command_id.clone());
            fail(
                &web3,
                &cmd,
                ErrorCode::InstallFailed,
                "no space left on device",
            )
            .await;
        }
        if sync_of(&server, "web-3").await == SyncState::OutOfSync {
            break;
        }
        assert!(Instant::now() < deadline, "web-3 never held: {tries:?}");
        handed = web3.poll(1).await;
    }
    assert_eq!(tries.len(), 4, "one try and three retries: {tries:?}");
    // Held: no fifth try however often it polls.
    for _ in 0..5 {
        assert!(web3.poll(1).await.is_none());
    }
    let list = hosts(&server).await;
    let g = &list
        .hosts
        .iter()
        .find(|h| h.name == "web-3")
        .unwrap()
        .groups[0];
    assert_eq!(g.failed_state, Some(CommandState::Failed));
    assert_eq!(g.failed_event.as_deref(), Some("Install"));
    assert!(
        g.error
            .as_deref()
            .unwrap()
            .contains("no space left on device"),
        "{g:?}"
    );
    assert_eq!(g.catch_up_attempts, 4);
    let text = server.hoist(&["hosts", "list"]).await;
    assert!(
        text.ok().contains("out_of_sync (failed in Install)"),
        "{}",
        text.stdout
    );

    // One more try on the operator's word, and only one.
    server.hoist(&["hosts", "retry", "web-3"]).await.ok();
    let cmd = next_command(&web3).await;
    fail(&web3, &cmd, ErrorCode::InstallFailed, "still full").await;
    eventually("held again", Duration::from_secs(10), || async {
        (sync_of(&server, "web-3").await == SyncState::OutOfSync).then_some(())
    })
    .await;
    for _ in 0..3 {
        assert!(web3.poll(1).await.is_none());
    }
    let out = server.hoist(&["hosts", "retry", "web-1"]).await;
    assert_ne!(out.code, 0, "web-1 is in sync: nothing to retry");
    assert!(
        out.stderr.contains("not held out of sync"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn an_operator_deployment_supersedes_a_catch_up_and_catch_up_can_be_turned_off() {
    let s = Scratch::new();
    let (server, token, web, _revision, _first) = deployed(&s, &[], &[]).await;
    let web3 = SimHost::register(&server.url, &token, "web-3", tags(&[("role", "web")])).await;
    let catch_up = web3.first.clone().expect("a catch-up at the first poll");
    // An operator deploys v2 while web-3's catch-up runs: the catch-up is stopped.
    let dir = bundle_dir(&s.join("b"), "v2");
    let v2 = server.push(dir.to_str().unwrap(), "shop").await;
    let second = server.deploy("shop", "web", &v2).await;
    let superseded = server.deployment(&catch_up.deployment_id).await;
    assert_eq!(superseded.state.to_string(), "stopped");
    assert!(
        superseded.message.as_deref().unwrap().contains(&second),
        "{superseded:?}"
    );
    for h in &web {
        let cmd = next_command(h).await;
        assert_eq!(cmd.deployment_id, second);
        h.run(&cmd, true).await;
    }
    // web-3 finishes its aborted catch-up, then gets the operator's command.
    web3.report(
        &catch_up.command_id,
        1,
        ReportBody::Completed {
            status: CommandStatus::Stopped,
            failed_event: None,
            message: None,
        },
    )
    .await;
    let cmd = next_command(&web3).await;
    assert_eq!(cmd.deployment_id, second);
    web3.run(&cmd, true).await;
    server.wait_state(&second, "succeeded").await;
    assert_eq!(group(&server).await.sync_counts.in_sync, 3);

    // With catch-up off, a new host is left alone and shown never deployed.
    server
        .hoist(&["group", "update", "web", "--app", "shop", "--no-catch-up"])
        .await
        .ok();
    let web4 = SimHost::register(&server.url, &token, "web-4", tags(&[("role", "web")])).await;
    assert!(web4.first.is_none());
    for _ in 0..3 {
        assert!(web4.poll(1).await.is_none());
    }
    assert_eq!(sync_of(&server, "web-4").await, SyncState::NeverDeployed);
    let g = group(&server).await;
    assert!(!g.catch_up);
    assert_eq!(g.sync_counts.never_deployed, 1);
    server
        .hoist(&["group", "update", "web", "--app", "shop", "--catch-up"])
        .await
        .ok();
    let cmd = next_command(&web4).await;
    assert_eq!(
        server.deployment(&cmd.deployment_id).await.creator,
        Creator::CatchUp
    );
    let out = server
        .hoist(&["group", "update", "web", "--app", "shop"])
        .await;
    assert_eq!(out.code, 2, "nothing to change is a usage error");
}

#[tokio::test]
async fn a_coordinator_restart_while_a_catch_up_is_due_still_delivers_it() {
    let s = Scratch::new();
    let (mut server, token, _web, revision, _first) = deployed(&s, &[], &[]).await;
    // web-3 registers outside the group; an operator's tags put it in, so a catch-up is
    // due at its next poll, and the coordinator restarts before that poll.
    let web3 = SimHost::register(&server.url, &token, "web-3", tags(&[("role", "db")])).await;
    assert!(web3.first.is_none());
    server
        .hoist(&["hosts", "tag", "web-3", "role=web"])
        .await
        .ok();
    assert_eq!(sync_of(&server, "web-3").await, SyncState::NeverDeployed);
    let addr = server.authority();
    server.stop().await;
    let server = Server::launch(
        &s.join("data"),
        crate::support::Launch {
            listen: &addr,
            token: Some(crate::support::TOKEN),
            ..crate::support::Launch::default()
        },
    );
    let web3 = web3.at(&server.url);
    let cmd = next_command(&web3).await;
    let d = server.deployment(&cmd.deployment_id).await;
    assert_eq!(d.creator, Creator::CatchUp);
    assert_eq!(d.revision_id.as_deref(), Some(revision.as_str()));
    web3.run(&cmd, true).await;
    server.wait_state(&cmd.deployment_id, "succeeded").await;
    assert_eq!(sync_of(&server, "web-3").await, SyncState::InSync);
}

#[tokio::test]
async fn an_agent_restart_mid_event_is_interrupted_and_a_lost_host_unknown() {
    let s = Scratch::new();
    let (server, _token, web, _revision, _first) =
        deployed(&s, &["--host-lease", "2s"], &["--no-catch-up"]).await;
    let dir = bundle_dir(&s.join("b"), "v2");
    let v2 = server.push(dir.to_str().unwrap(), "shop").await;
    // Seen just now, so both are targets of the 2 s lease.
    for h in &web {
        assert!(h.poll(0).await.is_none());
    }
    let id = server.deploy("shop", "web", &v2).await;
    let a = next_command(&web[0]).await;
    let b = next_command(&web[1]).await;
    // web-1's agent restarted during Install; web-2 goes silent mid-command.
    fail(
        &web[0],
        &a,
        ErrorCode::AgentRestarted,
        "agent restarted during Install",
    )
    .await;
    web[1]
        .report(
            &b.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await;
    let d = server.wait_state(&id, "failed").await;
    let d = eventually(
        "the lost host's verdict",
        Duration::from_secs(15),
        || async {
            let d = server.deployment(&d.id).await;
            d.hosts
                .iter()
                .all(|h| h.state != CommandState::InProgress)
                .then_some(d)
        },
    )
    .await;
    let state = |name: &str| d.hosts.iter().find(|h| h.host_name == name).unwrap().state;
    assert_eq!(state("web-1"), CommandState::Interrupted);
    assert_eq!(state("web-2"), CommandState::Unknown);
    assert_eq!(
        (d.counts.failed, d.counts.interrupted, d.counts.unknown),
        (2, 1, 1)
    );
    let status = server.hoist(&["deploy", "status", &id]).await;
    let text = status.ok();
    assert!(text.contains("web-1  interrupted"), "{text}");
    assert!(text.contains("web-2  unknown"), "{text}");
    let list = hosts(&server).await;
    for (name, want) in [
        ("web-1", CommandState::Interrupted),
        ("web-2", CommandState::Unknown),
    ] {
        let g = &list.hosts.iter().find(|h| h.name == name).unwrap().groups[0];
        assert_eq!(g.sync, SyncState::OutOfSync, "{name}");
        assert_eq!(g.failed_state, Some(want), "{name}");
    }
}

#[tokio::test]
async fn a_bake_separates_two_batches_and_a_stop_during_it_halts_the_rollout() {
    let s = Scratch::new();
    let (server, _token, web, _revision, _first) = deployed(&s, &[], &["--no-catch-up"]).await;
    server
        .hoist(&[
            "group",
            "update",
            "web",
            "--app",
            "shop",
            "--bake",
            "2",
            "--config",
            "OneAtATime",
        ])
        .await
        .ok();
    let bake_run = |marker: &'static str| {
        let server = &server;
        let s = &s;
        async move {
            let dir = bundle_dir(&s.join("b"), marker);
            let rev = server.push(dir.to_str().unwrap(), "shop").await;
            server.deploy("shop", "web", &rev).await
        }
    };
    let id = bake_run("v2").await;
    // The first batch: whichever host got the one command.
    let (first, second) = eventually("the first batch", Duration::from_secs(10), || async {
        let d = server.deployment(&id).await;
        let started = d
            .hosts
            .iter()
            .position(|h| h.state == CommandState::InProgress)?;
        Some((started, 1 - started))
    })
    .await;
    let cmd = next_command(&web[first]).await;
    web[first].run(&cmd, true).await;
    let baking = eventually("baking", Duration::from_secs(10), || async {
        let d = server.deployment(&id).await;
        d.baking_until_ms.map(|until| (d, until))
    })
    .await;
    let (d, until) = baking;
    assert_eq!(d.counts.pending, 1, "the next batch waits for the bake");
    let text = server.hoist(&["deploy", "status", &id]).await;
    assert!(text.ok().contains("baking:"), "{}", text.stdout);
    assert!(
        web[second].poll(0).await.is_none(),
        "nothing during the bake"
    );
    // After the bake the second batch starts.
    let cmd = next_command(&web[second]).await;
    assert_eq!(cmd.deployment_id, id);
    let d = server.deployment(&id).await;
    assert_eq!(d.baking_until_ms, None);
    let started = d.hosts[second].started_ms.unwrap();
    assert!(
        started >= until,
        "started {started} before the bake ended {until}"
    );
    web[second].run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;

    // A stop during the bake halts the rollout: the second batch never starts.
    let id = bake_run("v3").await;
    let (first, second) = eventually("the first batch", Duration::from_secs(10), || async {
        let d = server.deployment(&id).await;
        let started = d
            .hosts
            .iter()
            .position(|h| h.state == CommandState::InProgress)?;
        Some((started, 1 - started))
    })
    .await;
    let cmd = next_command(&web[first]).await;
    web[first].run(&cmd, true).await;
    eventually("baking", Duration::from_secs(10), || async {
        server.deployment(&id).await.baking_until_ms
    })
    .await;
    server.hoist(&["deploy", "stop", &id]).await.ok();
    let d = server.wait_state(&id, "stopped").await;
    assert_eq!(d.hosts[second].state, CommandState::Skipped);
    assert_eq!(d.baking_until_ms, None);
    for _ in 0..3 {
        assert!(web[second].poll(1).await.is_none());
    }
}

/// Stops the server and starts it again on the same address and data directory.
async fn restart(s: &Scratch, mut server: Server) -> Server {
    let addr = server.authority();
    server.stop().await;
    Server::launch(
        &s.join("data"),
        crate::support::Launch {
            listen: &addr,
            token: Some(crate::support::TOKEN),
            ..crate::support::Launch::default()
        },
    )
}

#[tokio::test]
async fn a_restart_keeps_a_host_retry_count_and_a_bake_with_the_time_left() {
    let s = Scratch::new();
    let (server, token, web, _revision, _first) = deployed(&s, &[], &[]).await;
    // web-3's first catch-up fails: one try counted, the next due after a delay.
    let web3 = SimHost::register(&server.url, &token, "web-3", tags(&[("role", "web")])).await;
    let cmd = web3.first.clone().expect("a catch-up at the first poll");
    fail(
        &web3,
        &cmd,
        ErrorCode::InstallFailed,
        "no space left on device",
    )
    .await;
    let before = hosts(&server).await;
    let row = |list: &HostList| {
        let h = list.hosts.iter().find(|h| h.name == "web-3").unwrap();
        (h.groups[0].catch_up_attempts, h.groups[0].next_attempt_ms)
    };
    let (attempts, next) = row(&before);
    assert_eq!(attempts, 1);
    assert!(next.is_some());
    let server = restart(&s, server).await;
    assert_eq!(
        row(&hosts(&server).await),
        (attempts, next),
        "kept across the restart"
    );
    let web3 = web3.at(&server.url);
    assert!(web3.poll(0).await.is_none(), "not due before its delay");
    server.hoist(&["hosts", "revoke", &web3.id]).await.ok();

    // A OneAtATime rollout with a bake: the coordinator restarts while it bakes.
    server
        .hoist(&[
            "group",
            "update",
            "web",
            "--app",
            "shop",
            "--bake",
            "3",
            "--config",
            "OneAtATime",
        ])
        .await
        .ok();
    let web: Vec<SimHost> = web.iter().map(|h| h.at(&server.url)).collect();
    let dir = bundle_dir(&s.join("b"), "v2");
    let v2 = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &v2).await;
    let d = server.deployment(&id).await;
    assert_eq!(d.hosts.len(), 2);
    let first = d
        .hosts
        .iter()
        .position(|h| h.state == CommandState::InProgress)
        .unwrap();
    let first_name = d.hosts[first].host_name.clone();
    let (first, second): (Vec<&SimHost>, Vec<&SimHost>) =
        web.iter().partition(|h| h.name == first_name);
    let cmd = next_command(first[0]).await;
    first[0].run(&cmd, true).await;
    let until = eventually("baking", Duration::from_secs(10), || async {
        server.deployment(&id).await.baking_until_ms
    })
    .await;
    let server = restart(&s, server).await;
    let d = server.deployment(&id).await;
    if d.counts.pending > 0 {
        assert_eq!(d.baking_until_ms, Some(until), "the bake's end is kept");
    }
    // The second batch starts once the bake is over, after the restart.
    let second = second[0].at(&server.url);
    let cmd = next_command(&second).await;
    assert_eq!(cmd.deployment_id, id);
    let started = server
        .deployment(&id)
        .await
        .hosts
        .iter()
        .find(|h| h.host_name == second.name)
        .unwrap()
        .started_ms
        .unwrap();
    assert!(
        started >= until,
        "started {started} before the bake ended {until}"
    );
    second.run(&cmd, true).await;
    server.wait_state(&id, "succeeded").await;
}

#[tokio::test]
async fn hosts_due_while_a_catch_up_runs_share_it() {
    let s = Scratch::new();
    let (server, token, _web, _revision, _first) = deployed(&s, &[], &[]).await;
    let mut joined = Vec::new();
    for name in ["web-3", "web-4", "web-5"] {
        joined.push(SimHost::register(&server.url, &token, name, tags(&[("role", "db")])).await);
    }
    for h in &joined {
        server
            .hoist(&["hosts", "tag", &h.name, "role=web"])
            .await
            .ok();
    }
    // All three poll at once, then each again until it holds a command.
    let polls = joined.iter().map(|h| h.poll(0));
    let mut commands: Vec<Option<agent::Command>> = futures_util::future::join_all(polls).await;
    for (h, c) in joined.iter().zip(commands.iter_mut()) {
        if c.is_none() {
            *c = Some(next_command(h).await);
        }
    }
    let ids: Vec<String> = commands
        .iter()
        .flatten()
        .map(|c| c.deployment_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one catch-up for all: {ids:?}"
    );
    let d = server.deployment(&ids[0]).await;
    assert_eq!(d.creator, Creator::CatchUp);
    assert_eq!(d.hosts.len(), 3);
    for (h, c) in joined.iter().zip(commands.iter().flatten()) {
        h.run(c, true).await;
    }
    server.wait_state(&ids[0], "succeeded").await;
    assert_eq!(group(&server).await.sync_counts.in_sync, 5);
}
