//! Reports and liveness under retries: a completion report sent twice (the same one again,
//! acknowledged; or a second one for a command already over, refused) changes nothing; reports arriving together
//! (written as one batch) are each recorded once; heartbeats keep a host that is busy and
//! silent inside its lease and carry a stop to it; what a poll asks for its host
//! survives a restart right after it.

use std::time::Duration;

use hoist_protocol::agent::{
    CommandStatus, Heartbeat, HeartbeatAck, PollResponse, ReportAck, ReportBody,
};
use hoist_protocol::operator::{CommandState, DeploymentList, DeploymentState};

use crate::support::{bundle_dir, setup, succeeded, tags, Scratch, Server, SimHost, TOKEN};

fn completed(status: CommandStatus) -> ReportBody {
    ReportBody::Completed {
        status,
        failed_event: (status == CommandStatus::Failed).then(|| "ApplicationStart".to_owned()),
        message: (status == CommandStatus::Failed).then(|| "late and wrong".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_completion_report_changes_nothing() {
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
            "OneAtATime",
            "--auto-rollback",
        ],
    )
    .await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    let b = SimHost::register(&server.url, &reg, "web-b", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let cmd_a = a.poll(5).await.expect("web-a goes first");
    a.run(&cmd_a, true).await; // seq 1..=5, 5 = Completed(succeeded)

    // The same completion again (its acknowledgement was lost): not recorded, no stop.
    let ack = a
        .report(&cmd_a.command_id, 5, completed(CommandStatus::Succeeded))
        .await;
    assert_eq!(
        ack,
        ReportAck {
            recorded: false,
            aborted: false
        }
    );
    // A second completion with a new sequence number and another verdict: refused, the
    // first holds.
    let resp = a
        .report_raw(&cmd_a.command_id, 6, completed(CommandStatus::Failed))
        .await;
    assert_eq!(resp.status(), 409);
    let d = server.deployment(&id).await;
    assert_eq!(d.state, DeploymentState::InProgress);
    let ha = d.hosts.iter().find(|h| h.host_name == "web-a").unwrap();
    assert_eq!(ha.state, CommandState::Succeeded);
    assert_eq!(ha.failed_event, None);
    assert_eq!(ha.message, None);
    assert_eq!((d.counts.succeeded, d.counts.failed), (1, 0));

    // web-b gets exactly one command and the deployment ends once.
    let cmd_b = b.poll(5).await.expect("web-b's turn");
    assert!(a.poll(0).await.is_none(), "web-a has nothing more to do");
    b.run(&cmd_b, true).await;
    for seq in [5, 6] {
        let resp = b
            .report_raw(&cmd_b.command_id, seq, completed(CommandStatus::Failed))
            .await;
        assert_eq!(resp.status(), 409, "seq {seq}");
    }
    let d = server.wait_state(&id, "succeeded").await;
    assert_eq!((d.counts.succeeded, d.counts.failed), (2, 0));
    assert!(d.rolled_back_by.is_none(), "no rollback of a success");
    let list: DeploymentList = server
        .client()
        .get(format!("{}/v1/deployments", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.deployments.len(), 1, "no deployment was started twice");
    assert!(b.poll(0).await.is_none());
}

async fn heartbeat(host: &SimHost, command_id: Option<&str>) -> reqwest::Response {
    host.req(reqwest::Method::POST, "/v1/hosts/heartbeat")
        .json(&Heartbeat {
            command_id: command_id.map(str::to_owned),
        })
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_a_busy_host_inside_its_lease_and_carry_a_stop() {
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
    let other = SimHost::register(&server.url, &reg, "db-a", tags(&[("role", "db")])).await;
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let resp = a.poll_raw(5).await;
    assert_eq!(resp.status(), 200);
    let poll: PollResponse = resp.json().await.unwrap();
    let cmd = poll.command.expect("web-a's command");
    let every = poll
        .heartbeat_ms
        .expect("the coordinator names a heartbeat interval");
    assert!(
        (100..=500).contains(&every),
        "a quarter of the 1 s lease: {every} ms"
    );
    // Busy for three leases with nothing to report but heartbeats.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(every)).await;
        let resp = heartbeat(&a, Some(&cmd.command_id)).await;
        assert_eq!(resp.status(), 200);
        let ack: HeartbeatAck = resp.json().await.unwrap();
        assert!(!ack.aborted);
    }
    let d = server.deployment(&id).await;
    assert_eq!(d.state, DeploymentState::InProgress, "{:?}", d.hosts[0]);
    assert_eq!(d.hosts[0].state, CommandState::InProgress);

    // Another host naming this command learns nothing; no credentials, no answer.
    let ack: HeartbeatAck = heartbeat(&other, Some(&cmd.command_id))
        .await
        .json()
        .await
        .unwrap();
    assert!(!ack.aborted);
    let resp = heartbeat(&a.with_secret("wrong"), Some(&cmd.command_id)).await;
    assert_eq!(resp.status(), 401);

    // A stop reaches the host on its next heartbeat, without waiting for a report.
    server.hoist(&["deploy", "stop", &id]).await.ok();
    let ack: HeartbeatAck = heartbeat(&a, Some(&cmd.command_id))
        .await
        .json()
        .await
        .unwrap();
    assert!(ack.aborted, "the stop travels with the heartbeat");
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_arriving_together_are_each_recorded_once() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    let mut hosts = Vec::new();
    for i in 0..30 {
        let name = format!("web-{i:02}");
        hosts.push(SimHost::register(&server.url, &reg, &name, tags(&[("role", "web")])).await);
    }
    let rev = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let id = server.deploy("shop", "web", &rev).await;
    let mut tasks = tokio::task::JoinSet::new();
    for host in hosts {
        let cmd = host.poll(5).await.expect("every host gets a command");
        tasks.spawn(async move {
            let bodies = [
                ReportBody::EventStarted {
                    event: "Install".into(),
                },
                succeeded("Install"),
                ReportBody::EventStarted {
                    event: "ApplicationStart".into(),
                },
                succeeded("ApplicationStart"),
                completed(CommandStatus::Succeeded),
            ];
            for (seq, body) in (1..).zip(bodies) {
                // Every report twice at the same moment: a resend racing its original.
                let (x, y) = tokio::join!(
                    host.report(&cmd.command_id, seq, body.clone()),
                    host.report(&cmd.command_id, seq, body)
                );
                assert!(
                    x.recorded != y.recorded && !x.aborted && !y.aborted,
                    "{} seq {seq}: exactly one copy recorded, none aborted: {x:?} {y:?}",
                    host.name
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let d = server.wait_state(&id, "succeeded").await;
    assert_eq!(d.counts.succeeded, 30);
    for h in &d.hosts {
        let events: Vec<(&str, &str)> = h
            .events
            .iter()
            .map(|e| (e.event.as_str(), e.status.as_str()))
            .collect();
        assert_eq!(
            events,
            [("Install", "succeeded"), ("ApplicationStart", "succeeded")],
            "{}",
            h.host_name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_poll_asks_for_survives_a_restart_right_after_it() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let mut server = Server::start_with(&data, &[], Some(TOKEN));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let a = SimHost::register(&server.url, &reg, "web-a", tags(&[("role", "web")])).await;
    // The host's config is re-tagged; its next poll asks for it. Contacts are written in
    // batches, so a stop straight after must still write this request.
    let mut moved = a.clone();
    moved.tags = tags(&[("role", "db")]);
    assert!(moved.poll(0).await.is_none());
    server.stop().await;
    let server = Server::start_with(&data, &[], Some(TOKEN));
    let listed = server.hoist(&["hosts", "list", "--json"]).await;
    let hosts: hoist_protocol::operator::HostList =
        serde_json::from_str(listed.ok()).expect("hosts --json");
    assert_eq!(hosts.hosts.len(), 1);
    assert_eq!(hosts.hosts[0].tags, tags(&[("role", "web")]));
    assert_eq!(hosts.hosts[0].requested_tags, Some(tags(&[("role", "db")])));
}
