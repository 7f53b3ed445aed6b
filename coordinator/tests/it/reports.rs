//! Event reports are bounded: known lifecycle events only, a cap on reports per command,
//! every free-text field capped with the cut marked, nothing more on a command that has
//! ended (but an identical resend); the CLI escapes what a host wrote before printing it;
//! a command whose host polls but never reports fails after the lease.

use hoist_protocol::agent::{self, CommandStatus, EventStatus, ReportBody};
use hoist_protocol::operator::CommandState;
use hoist_protocol::ErrorBody;

use crate::support::*;

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: ErrorBody = resp.json().await.expect("an ErrorBody");
    (status, body.error)
}

/// A server with shop/web (role=web), one host in it and a deployment handed to it.
async fn one_command(tmp: &std::path::Path, extra: &[&str]) -> (Server, SimHost, agent::Command) {
    let server = Server::start_with(&tmp.join("data"), extra, Some(TOKEN));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let rev = server
        .push(bundle_dir(tmp, "v1").to_str().unwrap(), "shop")
        .await;
    server.deploy("shop", "web", &rev).await;
    let cmd = host.poll(5).await.expect("the command");
    (server, host, cmd)
}

fn ended(event: &str, message: String, log_tail: String) -> ReportBody {
    ReportBody::EventEnded {
        event: event.into(),
        status: EventStatus::Failed,
        error_code: Some(agent::ErrorCode::ScriptFailed),
        message: Some(message),
        script: Some("scripts/start.sh".into()),
        exit_code: Some(3),
        log_tail: Some(log_tail),
        duration_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_naming_an_unknown_event_or_past_the_cap_is_refused() {
    let tmp = Scratch::new();
    let (server, host, cmd) = one_command(tmp.path(), &[]).await;
    let id = &cmd.command_id;
    let started = |event: String| ReportBody::EventStarted { event };
    let (status, msg) = error_of(host.report_raw(id, 1, started("Teleport".into())).await).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("not a lifecycle event"), "{msg}");
    // Under the route's body limit: refused by the event check, not echoed back.
    let long = "E".repeat(200_000);
    let (status, msg) = error_of(host.report_raw(id, 1, started(long)).await).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.len() < 1000, "the refusal does not echo the event");
    // Over it: refused before it is read whole.
    let huge = "E".repeat(1_500_000);
    let (status, msg) = error_of(host.report_raw(id, 1, started(huge)).await).await;
    assert_eq!(status, 413, "{msg}");
    let (status, msg) = error_of(host.report_raw(id, 257, started("Install".into())).await).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("seq 257"), "{msg}");
    let d = server.deployment(&cmd.deployment_id).await;
    assert!(d.hosts[0].events.is_empty(), "nothing was recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_over_its_cap_is_cut_and_marked_and_a_report_of_1_5_mb_is_refused() {
    let tmp = Scratch::new();
    let (server, host, cmd) = one_command(tmp.path(), &[]).await;
    // A 1.5 MB field is over the route's body limit as a whole report.
    let report = ended("ApplicationStart", "m".repeat(1_500_000), String::new());
    let (status, msg) = error_of(host.report_raw(&cmd.command_id, 1, report).await).await;
    assert_eq!(status, 413, "{msg}");
    // Under the route's body limit, far over the fields' caps.
    let big = "m".repeat(150_000);
    let tail = format!("{}the last line\n", "t".repeat(80_000));
    let ack = host
        .report(&cmd.command_id, 1, ended("ApplicationStart", big, tail))
        .await;
    assert!(ack.recorded);
    let resp = server
        .client()
        .get(format!(
            "{}/v1/deployments/{}",
            server.url, cmd.deployment_id
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let json = resp.text().await.unwrap();
    assert!(
        json.len() < 64 * 1024,
        "deployment JSON is {} bytes",
        json.len()
    );
    let d: hoist_protocol::operator::Deployment = serde_json::from_str(&json).unwrap();
    let h = &d.hosts[0];
    let message = h.message.as_deref().unwrap();
    assert!(
        message.len() <= 4096 && message.ends_with("… [truncated]"),
        "{}",
        message.len()
    );
    let tail = h.log_tail.as_deref().unwrap();
    assert!(tail.len() <= 16 * 1024, "{}", tail.len());
    assert!(tail.starts_with("… [truncated]") && tail.ends_with("the last line\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_on_a_finished_command_is_refused_unless_it_is_an_identical_resend() {
    let tmp = Scratch::new();
    let (server, host, cmd) = one_command(tmp.path(), &[]).await;
    host.run(&cmd, true).await; // seq 1..=5, 5 = Completed(succeeded)
    let done = || ReportBody::Completed {
        status: CommandStatus::Succeeded,
        failed_event: None,
        message: None,
    };
    let ack = host.report(&cmd.command_id, 5, done()).await;
    assert!(!ack.recorded, "an identical resend is acknowledged");
    let later = ReportBody::EventStarted {
        event: "ValidateService".into(),
    };
    let (status, msg) = error_of(host.report_raw(&cmd.command_id, 6, later).await).await;
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("has ended"), "{msg}");
    let other = ReportBody::Completed {
        status: CommandStatus::Failed,
        failed_event: Some("Install".into()),
        message: Some("changed my mind".into()),
    };
    let (status, msg) = error_of(host.report_raw(&cmd.command_id, 5, other).await).await;
    assert_eq!(status, 409, "{msg}");
    let d = server.deployment(&cmd.deployment_id).await;
    assert_eq!(d.hosts[0].state, CommandState::Succeeded);
    assert_eq!(d.hosts[0].events.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_status_escapes_control_characters_a_host_sent() {
    let tmp = Scratch::new();
    let (server, host, cmd) = one_command(tmp.path(), &[]).await;
    let ack = host
        .report(
            &cmd.command_id,
            1,
            ended(
                "ApplicationStart",
                "exit 3\u{1b}[2J".into(),
                "ok\n\u{1b}]0;owned\u{7}\u{1b}[31mred\rforged\n".into(),
            ),
        )
        .await;
    assert!(ack.recorded);
    let out = server
        .hoist(&["deploy", "status", &cmd.deployment_id])
        .await;
    let text = out.ok();
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'));
    assert!(
        text.contains("| \\x1b]0;owned\\x07\\x1b[31mred\\x0dforged"),
        "{text}"
    );
    assert!(text.contains("exit 3\\x1b[2J"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_command_fails_after_the_lease_while_its_host_still_polls() {
    let tmp = Scratch::new();
    let (server, host, cmd) = one_command(tmp.path(), &["--host-lease", "2s"]).await;
    // The host polls on (its disk is full, say) but never reports on the command.
    let start = std::time::Instant::now();
    let d = loop {
        host.poll(0).await;
        let d = server.deployment(&cmd.deployment_id).await;
        if d.state.is_terminal() {
            break d;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the command is still {} after 10 s",
            d.hosts[0].state
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(d.hosts[0].state, CommandState::Failed);
    assert_eq!(d.hosts[0].error_code.as_deref(), Some("no_report"));
    assert!(
        d.hosts[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("still polls"),
        "{:?}",
        d.hosts[0].message
    );
    assert!(
        host.poll(0).await.is_none(),
        "the failed command is not handed out again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_queued_behind_another_of_its_host_keeps_its_lease_until_handed_out() {
    let tmp = Scratch::new();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &["--host-lease", "2s"],
        Some(TOKEN),
    );
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    server.hoist(&["app", "create", "billing"]).await.ok();
    server
        .hoist(&[
            "group", "create", "web", "--app", "billing", "--tag", "role=web",
        ])
        .await
        .ok();
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let dir = bundle_dir(tmp.path(), "v1");
    let shop = server.push(dir.to_str().unwrap(), "shop").await;
    let billing = server.push(dir.to_str().unwrap(), "billing").await;
    let first = server.deploy("shop", "web", &shop).await;
    let second = server.deploy("billing", "web", &billing).await;
    let cmd = host.poll(5).await.expect("the first command");
    assert_eq!(cmd.deployment_id, first);
    // Busy with the first for two leases, heartbeating; the second waits its turn.
    for _ in 0..20 {
        let resp = host
            .req(reqwest::Method::POST, "/v1/hosts/heartbeat")
            .json(&agent::Heartbeat {
                command_id: Some(cmd.command_id.clone()),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.deployment(&second).await.hosts[0].state,
        CommandState::InProgress
    );
    host.run(&cmd, true).await;
    let next = host.poll(5).await.expect("the second command");
    assert_eq!(next.deployment_id, second);
    host.run(&next, true).await;
    server.wait_state(&second, "succeeded").await;
}
