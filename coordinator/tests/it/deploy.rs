//! Deployments end to end: push, create, long-poll pickup, rollout rules, auto-rollback,
//! and a restart in the middle.

use std::time::{Duration, Instant};

use hoist_protocol::agent::{ReportBody, Revision};
use hoist_protocol::operator::{CommandState, Creator, DeploymentState, HostList};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn operator_flow_push_deploy_and_a_long_polling_host_gets_it_at_once() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    assert!(reg.starts_with("hrt_"), "{reg}");
    let web1 = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let web2 = SimHost::register(
        &server.url,
        &reg,
        "web-2",
        tags(&[("role", "web"), ("x", "y")]),
    )
    .await;
    let db = SimHost::register(&server.url, &reg, "db-1", tags(&[("role", "db")])).await;

    // Both web hosts are already waiting in a long poll when the deployment is created.
    let polls: Vec<_> = [web1.clone(), web2.clone()]
        .into_iter()
        .map(|h| tokio::spawn(async move { (h.poll(25).await, Instant::now()) }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dir = bundle_dir(tmp.path(), "v1");
    let rev = server
        .hoist(&["push", dir.to_str().unwrap(), "--app", "shop"])
        .await;
    let rev = rev.ok().to_owned();
    assert!(rev.starts_with("r-") && !rev.contains('\n'), "{rev}");

    let created = Instant::now();
    let out = server
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
        .await;
    let id = out.ok().to_owned();
    assert!(id.starts_with("d-") && !id.contains('\n'), "{id}");

    let mut commands = Vec::new();
    for p in polls {
        let (cmd, at) = p.await.unwrap();
        let cmd = cmd.expect("the waiting poll returned with the command");
        let latency = at.saturating_duration_since(created);
        // Speed is hoist-bench's to measure; a poll that returned with the command was woken.
        eprintln!("poll returned {latency:?} after `deploy create` was started");
        assert_eq!(cmd.deployment_id, id);
        assert_eq!(cmd.application, "shop");
        assert_eq!(cmd.deployment_group, "web");
        assert_eq!(
            cmd.events.first().map(String::as_str),
            Some("BeforeBlockTraffic")
        );
        commands.push(cmd);
    }
    assert!(
        db.poll(0).await.is_none(),
        "a host outside the group got work"
    );

    // The bundle the hosts were told about downloads with the host secret and matches.
    let Revision::Coordinator { sha256, size } = commands[0].revision.clone() else {
        panic!("{:?}", commands[0].revision)
    };
    let bytes = web1
        .req(reqwest::Method::GET, &format!("/v1/bundles/{sha256}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, size);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha256);

    // A second poll while the command is in progress (agent restart) hands it out again.
    let again = web1.poll(0).await.expect("same command again");
    assert_eq!(again.command_id, commands[0].command_id);

    web1.run(&commands[0], true).await;
    web2.run(&commands[1], true).await;
    server.wait_state(&id, "succeeded").await;

    let status = server.hoist(&["deploy", "status", &id]).await;
    assert!(status.ok().contains("succeeded"), "{}", status.stdout);
    // Succeeded hosts are listed without their last log lines; the JSON keeps them.
    assert!(!status.stdout.contains("port in use"), "{}", status.stdout);
    let json: serde_json::Value = serde_json::from_str(
        server
            .hoist(&["deploy", "status", &id, "--json"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(json["hosts"][0]["log_tail"], "starting\nport in use\n");

    let hosts: HostList =
        serde_json::from_str(server.hoist(&["hosts", "list", "--json"]).await.ok()).unwrap();
    let h1 = hosts.hosts.iter().find(|h| h.name == "web-1").unwrap();
    assert!(h1.online);
    assert_eq!(h1.deployed.len(), 1);
    assert_eq!(h1.deployed[0].deployment_id, id);
    let text = server.hoist(&["hosts", "list"]).await;
    assert!(
        text.ok().contains("shop/web: coordinator bundle"),
        "{}",
        text.stdout
    );
    let list = server.hoist(&["deploy", "list", "--app", "shop"]).await;
    assert!(list.ok().contains(&id));

    // --wait follows a second deployment and exits 0 when it succeeds.
    let wait = {
        let url = server.url.clone();
        let rev = rev.clone();
        tokio::spawn(async move {
            hoist_with(
                &url,
                Some(TOKEN),
                &[
                    "deploy",
                    "create",
                    "--app",
                    "shop",
                    "--group",
                    "web",
                    "--revision",
                    &rev,
                    "--wait",
                ],
            )
            .await
        })
    };
    for h in [&web1, &web2] {
        let cmd = h.poll(10).await.expect("second deployment");
        h.run(&cmd, true).await;
    }
    let out = wait.await.unwrap();
    out.ok();
    assert!(out.stderr.contains("web-1 succeeded"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_at_a_time_stops_at_the_first_failure_and_leaves_the_rest_untouched() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "OneAtATime"],
    )
    .await;
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(
            SimHost::register(
                &server.url,
                &reg,
                &format!("web-{i}"),
                tags(&[("role", "web")]),
            )
            .await,
        );
    }
    let dir = bundle_dir(tmp.path(), "v1");
    let rev = server
        .hoist(&["push", dir.to_str().unwrap(), "--app", "shop"])
        .await
        .ok()
        .to_owned();
    let wait = {
        let url = server.url.clone();
        tokio::spawn(async move {
            hoist_with(
                &url,
                Some(TOKEN),
                &[
                    "deploy",
                    "create",
                    "--app",
                    "shop",
                    "--group",
                    "web",
                    "--revision",
                    &rev,
                    "--wait",
                ],
            )
            .await
        })
    };
    // Exactly one host gets a command.
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(10) {
        for h in &hosts {
            if let Some(c) = h.poll(0).await {
                got.push((h.clone(), c));
            }
        }
    }
    assert_eq!(got.len(), 1, "one host at a time");
    let (first, cmd) = got.pop().unwrap();
    first.run(&cmd, false).await;

    let out = wait.await.unwrap();
    assert_eq!(out.code, 1, "--wait exits 1 on failure: {}", out.stderr);
    let id = out.stdout.trim();
    let d = server.wait_state(id, "failed").await;
    assert!(
        d.message
            .as_deref()
            .unwrap_or("")
            .contains("1 of 3 hosts failed"),
        "{:?}",
        d.message
    );
    for h in &d.hosts {
        if h.host_name == first.name {
            assert_eq!(h.state, CommandState::Failed);
            assert_eq!(h.failed_event.as_deref(), Some("ApplicationStart"));
            assert_eq!(h.exit_code, Some(3));
            assert_eq!(h.script.as_deref(), Some("scripts/start.sh"));
        } else {
            assert_eq!(h.state, CommandState::Skipped, "{}", h.host_name);
            assert!(h.started_ms.is_none());
        }
    }
    for h in hosts.iter().filter(|h| h.name != first.name) {
        assert!(
            h.poll(0).await.is_none(),
            "{} got work after the failure",
            h.name
        );
    }
    let status = server.hoist(&["deploy", "status", id]).await;
    let text = status.ok();
    assert!(text.contains("failed event ApplicationStart"), "{text}");
    assert!(text.contains("exit code 3"), "{text}");
    assert!(text.contains("| port in use"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn min_healthy_half_of_ten_hosts_never_runs_more_than_five_at_once() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "min-healthy=50%"],
    )
    .await;
    let mut hosts = Vec::new();
    for i in 0..10 {
        hosts.push(
            SimHost::register(
                &server.url,
                &reg,
                &format!("web-{i:02}"),
                tags(&[("role", "web")]),
            )
            .await,
        );
    }
    let dir = bundle_dir(tmp.path(), "v1");
    let rev = server
        .hoist(&["push", dir.to_str().unwrap(), "--app", "shop"])
        .await
        .ok()
        .to_owned();
    let id = server.deploy("shop", "web", &rev).await;
    let mut running: Vec<(SimHost, hoist_protocol::agent::Command)> = Vec::new();
    let mut done = 0;
    let mut max_running = 0;
    for _round in 0..40 {
        for h in &hosts {
            if running.iter().any(|(r, _)| r.id == h.id) {
                continue;
            }
            if let Some(c) = h.poll(0).await {
                running.push((h.clone(), c));
            }
        }
        max_running = max_running.max(running.len());
        assert!(
            running.len() <= 5,
            "{} hosts running at once",
            running.len()
        );
        if running.is_empty() {
            break;
        }
        let (h, c) = running.remove(0);
        h.run(&c, true).await;
        done += 1;
    }
    assert_eq!(done, 10);
    assert_eq!(max_running, 5);
    server.wait_state(&id, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_rollback_redeploys_the_last_good_revision_after_a_failure() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &[
            "--tag",
            "role=web",
            "--config",
            "AllAtOnce",
            "--auto-rollback",
        ],
    )
    .await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let good = server
        .push(bundle_dir(tmp.path(), "good").to_str().unwrap(), "shop")
        .await;
    let bad = server
        .push(bundle_dir(tmp.path(), "bad").to_str().unwrap(), "shop")
        .await;

    let first = server.deploy("shop", "web", &good).await;
    let cmd = host.poll(5).await.unwrap();
    host.run(&cmd, true).await;
    let first = server.wait_state(&first, "succeeded").await;

    let second = server.deploy("shop", "web", &bad).await;
    let cmd = host.poll(5).await.unwrap();
    assert_eq!(cmd.deployment_id, second);
    host.run(&cmd, false).await;
    let failed = server.wait_state(&second, "failed").await;
    let rollback_id = failed.rolled_back_by.clone().expect("a rollback started");

    let rollback = server.deployment(&rollback_id).await;
    assert_eq!(rollback.creator, Creator::Rollback);
    assert_eq!(rollback.rollback_of.as_deref(), Some(second.as_str()));
    assert_eq!(rollback.revision, first.revision);
    assert_eq!(rollback.state, DeploymentState::InProgress);
    let cmd = host.poll(5).await.expect("the rollback's command");
    assert_eq!(cmd.deployment_id, rollback_id);
    assert_eq!(cmd.revision, first.revision);
    host.run(&cmd, true).await;
    server.wait_state(&rollback_id, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_deployment_loses_no_state_or_report() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data);
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "OneAtATime"],
    )
    .await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let b = SimHost::register(&server.url, &reg, "web-b", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    // Hosts are sorted by name: web-a goes first.
    let cmd = a.poll(5).await.expect("web-a's command");
    let ack = a
        .report(
            &cmd.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await;
    assert!(ack.recorded);

    // web-b waits in a long poll; SIGTERM hands it back promptly (503: poll again,
    // elsewhere when there is another replica).
    let b_poll = {
        let b = b.clone();
        tokio::spawn(async move {
            let resp = b.poll_raw(25).await;
            (resp.status(), resp.text().await.unwrap_or_default())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = server.stop().await;
    // The 503 below, not the time taken, shows the poll was handed back.
    eprintln!("server stopped {took:?} after SIGTERM with a long poll open");
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), b_poll)
        .await
        .expect("poll ended")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    assert!(
        server.log().contains("1 held polls handed back"),
        "the one held poll is counted as handed back:\n{}",
        server.log()
    );
    drop(server);

    let server = Server::start(&data);
    let (a, b) = (a.at(&server.url), b.at(&server.url));
    let d = server.deployment(&id).await;
    assert_eq!(d.state, DeploymentState::InProgress);
    let ha = d.hosts.iter().find(|h| h.host_name == "web-a").unwrap();
    assert_eq!(ha.state, CommandState::InProgress);
    assert_eq!(
        ha.current_event.as_deref(),
        Some("Install"),
        "the pre-restart report survived"
    );
    // The agent restarted too: it polls and gets the same command again.
    let again = a.poll(0).await.expect("same command after restart");
    assert_eq!(again.command_id, cmd.command_id);
    // Its durable report is sent again: recorded once.
    let ack = a
        .report(
            &cmd.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await;
    assert!(!ack.recorded);
    assert!(b.poll(0).await.is_none(), "OneAtATime: web-b waits");
    a.run(&cmd, true).await;
    let cmd_b = b.poll(5).await.expect("web-b's turn");
    b.run(&cmd_b, true).await;
    let d = server.wait_state(&id, "succeeded").await;
    assert_eq!(d.counts.succeeded, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_skips_pending_hosts_and_aborts_running_ones() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "OneAtATime"],
    )
    .await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let b = SimHost::register(&server.url, &reg, "web-b", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    // A second deployment for the busy group is refused with a sentence.
    let busy = server
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
        .await;
    assert_eq!(busy.code, 1);
    assert!(
        busy.stderr.contains("already has deployment") && !busy.stderr.contains('{'),
        "{}",
        busy.stderr
    );

    let cmd = a.poll(5).await.unwrap();
    let ack = a
        .report(
            &cmd.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await;
    assert!(!ack.aborted);
    server.hoist(&["deploy", "stop", &id]).await.ok();
    let ack = a
        .report(
            &cmd.command_id,
            2,
            ReportBody::EventStarted {
                event: "AfterInstall".into(),
            },
        )
        .await;
    assert!(ack.aborted, "running host told to abort");
    assert!(b.poll(0).await.is_none(), "pending host gets nothing");
    let ack = a
        .report(
            &cmd.command_id,
            3,
            ReportBody::Completed {
                status: hoist_protocol::agent::CommandStatus::Stopped,
                failed_event: None,
                message: Some("aborted".into()),
            },
        )
        .await;
    assert!(ack.recorded);
    let d = server.deployment(&id).await;
    assert_eq!(d.state, DeploymentState::Stopped);
    assert_eq!(d.counts.stopped, 1);
    assert_eq!(d.counts.skipped, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_silent_past_its_lease_fails_as_host_lost() {
    let tmp = Scratch::new();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &["--host-lease", "1s"],
        Some(TOKEN),
    );
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let cmd = a.poll(5).await.unwrap();
    let d = server.wait_state(&id, "failed").await;
    assert_eq!(d.hosts[0].error_code.as_deref(), Some("host_lost"));
    assert!(d.hosts[0]
        .message
        .as_deref()
        .unwrap_or("")
        .contains("host lost"));
    // The host comes back and reports: the command has ended, so the report is refused;
    // its heartbeat tells it to stop.
    let resp = a
        .report_raw(
            &cmd.command_id,
            1,
            ReportBody::EventStarted {
                event: "Install".into(),
            },
        )
        .await;
    assert_eq!(resp.status(), 409);
    let ack: hoist_protocol::agent::HeartbeatAck = a
        .req(reqwest::Method::POST, "/v1/hosts/heartbeat")
        .json(&hoist_protocol::agent::Heartbeat {
            command_id: Some(cmd.command_id.clone()),
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ack.aborted);
}
