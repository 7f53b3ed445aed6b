//! The daemon (the real `hoist-agent run` binary) against the fake coordinator of
//! `hoist_tests::fake_coordinator`: poll, reports, heartbeats, abort and backoff, and answers
//! the real coordinator does not give today (a revision kind from a newer version, a proxy's
//! 503 with a day-long `Retry-After`, command ids that are not URL-safe). Each test takes
//! well under a few seconds: the fake answers at once and the agent's backoff starts at
//! 100 ms (`hoist_tests::fleet::Agent`'s configuration).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use hoist_tests::fake_coordinator::{
    coordinator_revision, Answer, FakeCoordinator, Request, Route,
};
use hoist_tests::fleet::{Agent, AgentOptions};
use hoist_tests::{debug_secs, Scratch};
use serde_json::{json, Value};

/// How long a test waits for what the daemon should do in milliseconds: a loaded CI machine
/// is slow, and a failure still names what was missing.
const LIMIT: Duration = Duration::from_secs(30);

/// The events the fast tests ask for: those with a bundle, without traffic control.
const EVENTS: [&str; 6] = [
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

/// A wire `Command` with id `command_id` for `revision`, running `events` (all when empty).
fn command(command_id: &str, revision: Value, events: &[&str]) -> Value {
    json!({
        "command_id": command_id,
        "deployment_id": "d-1",
        "application": "shop",
        "deployment_group": "web",
        "deployment_group_id": "g-1",
        "events": events,
        "revision": revision,
    })
}

/// A tar.gz bundle whose appspec runs one script per `(event, shell)`: the shell, then a line
/// with the event's name appended to `$OUT/events.log` (see [`Agent::events`]).
fn bundle(s: &Scratch, hooks: &[(&str, &str)]) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let dir = s.join("bundle");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let mut appspec = String::from("version: 0.0\nos: linux\nhooks:\n");
    for (event, shell) in hooks {
        let script = format!("scripts/{event}.sh");
        appspec.push_str(&format!("  {event}:\n    - location: {script}\n"));
        let path = dir.join(&script);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n{shell}\necho {event} >> \"$OUT/events.log\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(dir.join("appspec.yml"), appspec).unwrap();
    let out = s.join("bundle.tgz");
    hoist_tests::archive::write_tar(&dir, &out, true).unwrap();
    std::fs::read(out).unwrap()
}

fn is_completion(r: &Request) -> bool {
    r.is_report() && r.json()["type"] == "completed"
}

fn completed(requests: &[Request]) -> bool {
    requests.iter().any(is_completion)
}

/// The reports (`seq`, `at_ms` and the body's fields), in arrival order.
fn report_bodies(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.is_report())
        .map(|r| r.json())
        .collect()
}

/// Where a report of `kind` for `event` arrived, as an index into `requests`.
fn report_at(requests: &[Request], kind: &str, event: &str) -> usize {
    requests
        .iter()
        .position(|r| {
            let body = r.json();
            r.is_report() && body["type"] == kind && body["event"] == event
        })
        .unwrap_or_else(|| panic!("no {kind} report for {event}"))
}

/// The delays the agent logged before retrying a poll, in order.
fn poll_retry_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split_once("polling failed, retrying in "))
        .filter_map(|(_, rest)| rest.split_once(':'))
        .filter_map(|(delay, _)| debug_secs(delay))
        .collect()
}

fn polls(requests: &[Request]) -> usize {
    requests.iter().filter(|r| r.is_poll()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_picks_up_a_command_and_reports_every_event_with_increasing_seq() {
    let s = Scratch::new();
    let bundle = bundle(
        &s,
        &[
            ("BeforeInstall", ""),
            ("AfterInstall", ""),
            ("ApplicationStart", ""),
        ],
    );
    let revision = coordinator_revision(&bundle);
    let answer = Answer::command(command("c-1", revision, &EVENTS), 60_000);
    let fake =
        FakeCoordinator::start(move |r| (r.is_poll() && r.n == 0).then(|| answer.clone())).await;
    fake.add_bundle(bundle);
    let agent = Agent::start(&s, "host-1", &fake, "reg-token", "role: web");
    let requests = fake
        .wait_for("the command's completion", LIMIT, completed)
        .await;

    // The registration carried the token; everything after it the credentials it returned.
    let register = requests
        .iter()
        .find(|r| r.route == Route::Register)
        .unwrap();
    assert_eq!(register.header("authorization"), Some("Bearer reg-token"));
    for r in requests.iter().filter(|r| r.is_report() || r.is_poll()) {
        assert_eq!(
            r.header("x-hoist-host"),
            Some("h-1"),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.header("authorization"), Some("Bearer s-1"), "{}", r.path);
    }
    let reports: Vec<Value> = requests
        .iter()
        .filter(|r| r.is_report())
        .map(|r| {
            assert_eq!(r.path, "/v1/commands/c-1/reports");
            r.json()
        })
        .collect();
    // One report a step, each sent once, seq 1, 2, 3, ... in the order they arrived.
    let seqs: Vec<u64> = reports.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{reports:?}"
    );
    let bodies = report_bodies(&requests);
    let mut expected = Vec::new();
    for event in EVENTS {
        // ValidateService has no script in this bundle.
        let status = if event == "ValidateService" {
            "skipped"
        } else {
            "succeeded"
        };
        expected.push(("event_started", event, ""));
        expected.push(("event_ended", event, status));
    }
    expected.push(("completed", "", "succeeded"));
    let got: Vec<(&str, &str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["type"].as_str().unwrap_or_default(),
                b["event"].as_str().unwrap_or_default(),
                b["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        agent.events(),
        ["BeforeInstall", "AfterInstall", "ApplicationStart"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_answered_aborted_stops_the_deployment_after_the_current_script() {
    let s = Scratch::new();
    let bundle = bundle(
        &s,
        &[
            ("BeforeInstall", "sleep 2"),
            ("AfterInstall", ""),
            ("ApplicationStart", ""),
        ],
    );
    let revision = coordinator_revision(&bundle);
    let answer = Answer::command(command("c-1", revision, &EVENTS), 60_000);
    let fake = FakeCoordinator::start(move |r| {
        let body = r.json();
        if r.is_poll() && r.n == 0 {
            Some(answer.clone())
        } else if r.is_report()
            && body["type"] == "event_started"
            && body["event"] == "BeforeInstall"
        {
            // An operator stopped the deployment while BeforeInstall's script runs: the
            // answer comes well after the script started (an abort that arrives before a
            // script starts rightly runs no script at all).
            Some(Answer::aborted().after(Duration::from_millis(500)))
        } else {
            None
        }
    })
    .await;
    fake.add_bundle(bundle);
    let agent = Agent::start(&s, "host-1", &fake, "reg-token", "role: web");
    let requests = fake
        .wait_for("the command's completion", LIMIT, completed)
        .await;

    let bodies = report_bodies(&requests);
    let completion = bodies.last().unwrap();
    assert_eq!(completion["type"], "completed", "{bodies:?}");
    assert_eq!(completion["status"], "stopped", "{completion}");
    // The script that was running finished; nothing after it started.
    assert_eq!(agent.events(), ["BeforeInstall"]);
    assert!(
        !bodies
            .iter()
            .any(|b| b["type"] == "event_started" && b["event"] == "AfterInstall"),
        "{bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_while_a_hook_runs() {
    let s = Scratch::new();
    let bundle = bundle(&s, &[("BeforeInstall", "sleep 1.5")]);
    let revision = coordinator_revision(&bundle);
    // The agent never beats more often than every 100 ms, whatever the coordinator asks.
    let answer = Answer::command(command("c-1", revision, &EVENTS), 100);
    let fake =
        FakeCoordinator::start(move |r| (r.is_poll() && r.n == 0).then(|| answer.clone())).await;
    fake.add_bundle(bundle);
    let _agent = Agent::start(&s, "host-1", &fake, "reg-token", "role: web");
    let requests = fake
        .wait_for("the command's completion", LIMIT, completed)
        .await;

    let started = report_at(&requests, "event_started", "BeforeInstall");
    let ended = report_at(&requests, "event_ended", "BeforeInstall");
    let during: Vec<&Request> = requests[started..ended]
        .iter()
        .filter(|r| r.route == Route::Heartbeat)
        .collect();
    // 1.5 s at one beat per 100 ms is 15; a busy machine may delay some.
    assert!(
        during.len() >= 3,
        "{} heartbeats while the script ran",
        during.len()
    );
    for beat in &during {
        assert_eq!(beat.json()["command_id"], "c-1");
        assert_eq!(beat.header("authorization"), Some("Bearer s-1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_backoff_after_503_grows_and_resets_after_a_success() {
    // Polls 0-3 fail, 4 succeeds (at once, no work), 5 and 6 fail, then the default.
    let fake = FakeCoordinator::start(|r| match (r.is_poll(), r.n) {
        (true, 0..=3 | 5 | 6) => Some(Answer::unavailable(None)),
        (true, 4) => Some(Answer::no_command()),
        _ => None,
    })
    .await;
    let s = Scratch::new();
    let agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    let requests = fake.wait_for("eight polls", LIMIT, |r| polls(r) >= 8).await;
    let delays = poll_retry_delays(&agent.log());
    assert!(delays.len() >= 6, "{delays:?} in\n{}", agent.log());
    // Backoff from poll.initial_backoff_ms (100 ms) doubling, with jitter, up to 1 s.
    assert!(
        delays[0] < delays[1] && delays[1] < delays[2] && delays[2] < delays[3],
        "the delays after consecutive failures do not grow: {delays:?}"
    );
    assert!(delays[3] <= 1.0, "over poll.max_backoff_secs: {delays:?}");
    // After poll 4 succeeded the sequence starts again from the initial delay.
    assert!(
        delays[4] < delays[2] && delays[4] < 0.4,
        "the delay after a success did not reset: {delays:?}"
    );
    // The polls were indeed that far apart.
    let at: Vec<_> = requests
        .iter()
        .filter(|r| r.is_poll())
        .map(|r| r.at)
        .collect();
    assert!(at[4] - at[3] >= Duration::from_secs_f64(delays[3] * 0.9));
    assert!(
        at[6] - at[5] < at[4] - at[3],
        "{:?}",
        at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_poll_is_retried_and_logged_naming_host_json() {
    let fake =
        FakeCoordinator::start(|r| (r.is_poll() && r.n < 3).then(Answer::unauthorized)).await;
    let s = Scratch::new();
    let agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    fake.wait_for("a fourth poll after three 401s", LIMIT, |r| polls(r) >= 4)
        .await;
    let log = agent.log();
    let host_json = agent.dir.join("state/host.json");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused this host's credentials"))
        .collect();
    assert_eq!(refusals.len(), 3, "{log}");
    for line in refusals {
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains(&host_json.display().to_string()), "{line}");
        assert!(line.contains("retrying in"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_revision_kind_is_reported_failed_naming_the_kind() {
    let answer = Answer::command(
        command(
            "c-1",
            json!({"kind": "oci", "image": "registry.example/app:1"}),
            &[],
        ),
        60_000,
    );
    let fake =
        FakeCoordinator::start(move |r| (r.is_poll() && r.n == 0).then(|| answer.clone())).await;
    let s = Scratch::new();
    let _agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    let requests = fake.wait_for("a completion report", LIMIT, completed).await;
    let completion = requests.iter().find(|r| is_completion(r)).unwrap();
    assert_eq!(completion.path, "/v1/commands/c-1/reports");
    let body = &completion.json();
    assert_eq!(body["status"], "failed", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"unsupported revision kind "oci""#),
        "{message}"
    );
    // Nothing was started for a command the agent does not understand.
    assert_eq!(report_bodies(&requests).len(), 1, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_of_a_day_delays_the_next_poll_by_at_most_the_max_backoff() {
    let fake = FakeCoordinator::start(|r| {
        (r.is_poll() && r.n == 0).then(|| Answer::unavailable(Some("86400")))
    })
    .await;
    let s = Scratch::new();
    let _agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    let requests = fake
        .wait_for("a poll after a 503 with Retry-After: 86400", LIMIT, |r| {
            polls(r) >= 2
        })
        .await;
    let at: Vec<_> = requests
        .iter()
        .filter(|r| r.is_poll())
        .map(|r| r.at)
        .collect();
    // poll.max_backoff_secs is 1.
    let waited = at[1] - at[0];
    assert!(waited <= Duration::from_millis(1500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_id_is_percent_encoded_in_the_report_url() {
    // A revision this agent refuses at once (a short sha256), so the command fails quickly.
    let answer = Answer::command(
        command(
            "c 1/../x?y",
            json!({"kind": "url", "url": "http://127.0.0.1:1/b", "sha256": "abc"}),
            &[],
        ),
        60_000,
    );
    let fake =
        FakeCoordinator::start(move |r| (r.is_poll() && r.n == 0).then(|| answer.clone())).await;
    let s = Scratch::new();
    let _agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    let requests = fake.wait_for("a completion report", LIMIT, completed).await;
    let paths: Vec<&str> = requests
        .iter()
        .filter(|r| r.is_report())
        .map(|r| r.path.as_str())
        .collect();
    assert!(!paths.is_empty(), "no report; requests: {requests:?}");
    for path in paths {
        assert_eq!(path, "/v1/commands/c%201%2F..%2Fx%3Fy/reports");
    }
}

/// A fake coordinator replica that answers 503 to everything once `down` is set (a failing
/// replica, or a load balancer in front of a dead one); until then, the fake's defaults.
async fn replica(down: Arc<AtomicBool>) -> FakeCoordinator {
    FakeCoordinator::start(move |_| down.load(SeqCst).then(|| Answer::unavailable(None))).await
}

fn registered(requests: &[Request]) -> bool {
    requests.iter().any(|r| r.route == Route::Register)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_urls_a_failing_replica_is_skipped_and_the_first_used_again_once_it_answers() {
    let s = Scratch::new();
    let first_down = Arc::new(AtomicBool::new(true));
    let first = replica(first_down.clone()).await;
    let second = FakeCoordinator::start(|_| None).await;
    let options = AgentOptions {
        more_urls: &[&second.url],
        ..AgentOptions::default()
    };
    let _agent = Agent::start_with(&s, "host-1", &first, "reg-token", "role: web", options);
    second
        .wait_for("registration and polls on the second URL", LIMIT, |r| {
            registered(r) && polls(r) >= 2
        })
        .await;
    assert!(
        registered(&first.requests()),
        "the first URL was not tried first"
    );

    // Back up: within poll.max_backoff_secs (1 s here) a request tries the first URL again,
    // and requests then stay there.
    first_down.store(false, SeqCst);
    let answered_at = first.requests().len();
    first
        .wait_for("a poll the first URL answers", LIMIT, |r| {
            r[answered_at..].iter().any(Request::is_poll)
        })
        .await;
    let on_second = polls(&second.requests());
    let seen = first.requests().len();
    first
        .wait_for("three more polls on the first URL", LIMIT, |r| {
            polls(&r[seen..]) >= 3
        })
        .await;
    assert_eq!(
        polls(&second.requests()),
        on_second,
        "polls went back to the second URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_urls_a_closed_port_is_skipped_at_once() {
    let s = Scratch::new();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let second = FakeCoordinator::start(|_| None).await;
    let options = AgentOptions {
        more_urls: &[&second.url],
        ..AgentOptions::default()
    };
    let agent = Agent::start_with(&s, "host-1", &closed, "reg-token", "role: web", options);
    second
        .wait_for("registration and a poll on the second URL", LIMIT, |r| {
            registered(r) && polls(r) >= 1
        })
        .await;
    // Moving on is not a failure to retry: nothing waited for a backoff.
    assert!(
        !agent.log().contains("retrying in"),
        "the agent backed off:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_dying_replica_did_not_take_is_resent_to_the_next() {
    let s = Scratch::new();
    let bundle = bundle(&s, &[("BeforeInstall", ""), ("AfterInstall", "")]);
    let answer = Answer::command(
        command("c-1", coordinator_revision(&bundle), &EVENTS),
        60_000,
    );
    let dead = Arc::new(AtomicBool::new(false));
    let first = {
        let dead = dead.clone();
        FakeCoordinator::start(move |r| {
            // The replica dies on the report that AfterInstall started.
            if r.is_report()
                && r.json()["type"] == "event_started"
                && r.json()["event"] == "AfterInstall"
            {
                dead.store(true, SeqCst);
            }
            if dead.load(SeqCst) {
                return Some(Answer::unavailable(None));
            }
            (r.is_poll() && r.n == 0).then(|| answer.clone())
        })
        .await
    };
    first.add_bundle(bundle);
    let second = FakeCoordinator::start(|_| None).await;
    let options = AgentOptions {
        more_urls: &[&second.url],
        ..AgentOptions::default()
    };
    let _agent = Agent::start_with(&s, "host-1", &first, "reg-token", "role: web", options);
    let on_second = second
        .wait_for(
            "the command's completion on the second URL",
            LIMIT,
            completed,
        )
        .await;
    let refused: Vec<Value> = report_bodies(&first.requests())
        .into_iter()
        .filter(|b| b["event"] == "AfterInstall")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    // The refused report went to the second replica with its seq, and the rest after it.
    let resent = report_bodies(&on_second);
    assert_eq!(resent[0]["seq"], refused[0]["seq"], "{resent:?}");
    assert_eq!(resent[0]["event"], "AfterInstall");
    let seqs: Vec<u64> = resent.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    let from = seqs[0];
    assert_eq!(seqs, (from..from + seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_made_on_the_host_and_not_yet_told_is_sent_after_registering_then_forgotten() {
    let fake = FakeCoordinator::start(|r| {
        (r.method == "POST" && r.path == "/v1/hosts/rollbacks")
            .then(|| Answer::json(json!({"recorded": true})))
    })
    .await;
    let s = Scratch::new();
    // What `hoist-agent rollback` leaves when the coordinator did not answer.
    let notes = s.join("host-1/state/local-rollbacks");
    std::fs::create_dir_all(&notes).unwrap();
    let note = notes.join("rollback-7-8.json");
    std::fs::write(
        &note,
        r#"{"schema_version":1,"group_id":"g-1","deployment_id":"d-1","rollback_id":"rollback-7-8","at_ms":7}"#,
    )
    .unwrap();
    let _agent = Agent::start(&s, "host-1", &fake, "reg-token", "");
    let requests = fake
        .wait_for("the rollback told, then a poll", LIMIT, |r| {
            r.iter().any(|q| q.path == "/v1/hosts/rollbacks") && polls(r) >= 1
        })
        .await;
    let sent: Vec<&Request> = requests
        .iter()
        .filter(|q| q.path == "/v1/hosts/rollbacks")
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].json(),
        json!({"group_id": "g-1", "deployment_id": "d-1", "rollback_id": "rollback-7-8", "rolled_back_at_ms": 7})
    );
    let first_poll = requests.iter().position(Request::is_poll).unwrap();
    let told = requests
        .iter()
        .position(|q| q.path == "/v1/hosts/rollbacks")
        .unwrap();
    assert!(told < first_poll, "told before the first poll");
    assert!(!note.exists(), "the acknowledged note is removed");
}
