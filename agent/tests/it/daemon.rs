//! The daemon (`hoist_agent::daemon::run`, as `hoist-agent run` calls it) against a scripted
//! coordinator on 127.0.0.1 (`hoist_tests::servers::HttpServer`): what it does with answers
//! the real coordinator does not give today (a revision kind from a newer version, a proxy's
//! 503 with a day-long `Retry-After`, command ids that are not URL-safe).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_agent::config::Config;
use hoist_tests::servers::{HttpServer, Reply, Request};
use tokio_util::sync::CancellationToken;

/// A 200 with a JSON body.
fn json(body: &str) -> Reply {
    let mut reply = Reply::status(200).header("Content-Type", "application/json");
    reply.body = body.as_bytes().to_vec();
    reply
}

/// A coordinator that registers any host, answers the `n`th poll with `poll(n)` and records
/// every report. Polls after the scripted ones are held 200 ms and answered with no work.
async fn coordinator(poll: impl Fn(usize) -> Option<Reply> + Send + Sync + 'static) -> HttpServer {
    let polls = AtomicUsize::new(0);
    HttpServer::start(move |_, req: &Request| match req.target.as_str() {
        "/v1/hosts/register" => json(r#"{"host_id":"h-1","host_secret":"s-1"}"#),
        "/v1/hosts/poll" => {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            poll(n).unwrap_or_else(|| {
                // The test runtime has several threads: holding this one is a short long poll.
                std::thread::sleep(Duration::from_millis(200));
                json(r#"{"command":null}"#)
            })
        }
        t if t.starts_with("/v1/commands/") => json(r#"{"recorded":true,"aborted":false}"#),
        _ => Reply::status(404),
    })
    .await
}

fn config(dir: &Path, server: &HttpServer) -> Config {
    let text = format!(
        "coordinator:\n  url: {}\n  registration_token: tok\nhost:\n  name: test-host\n\
         state_dir: {}\npoll:\n  wait_secs: 1\n  initial_backoff_ms: 50\n  max_backoff_secs: 1\n",
        server.url(""),
        dir.join("state").display()
    );
    Config::from_str(&text, "agent.yaml").unwrap()
}

/// Runs the daemon until `done` holds for the server's requests (or 20 s pass), then stops it.
async fn run_until(
    config: Config,
    server: &HttpServer,
    done: impl Fn(&[Request]) -> bool,
) -> Vec<Request> {
    let stop = CancellationToken::new();
    // The daemon's future is not Send: it runs in this task, beside the watch.
    let daemon = hoist_agent::daemon::run(config, stop.clone());
    tokio::pin!(daemon);
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&server.requests()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        result = &mut daemon => panic!("the daemon stopped by itself: {result:?}"),
        () = watch => {}
    }
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(15), daemon).await;
    assert!(stopped.is_ok(), "the daemon did not stop within 15 s");
    server.requests()
}

fn command(command_id: &str, revision: &str) -> String {
    format!(
        r#"{{"command":{{"command_id":{command_id:?},"deployment_id":"d-1","application":"shop",
        "deployment_group":"web","deployment_group_id":"g-1","events":[],
        "revision":{revision}}},"heartbeat_ms":60000}}"#
    )
}

/// The reports the server received, as JSON.
fn reports(requests: &[Request]) -> Vec<(String, serde_json::Value)> {
    requests
        .iter()
        .filter(|r| r.target.starts_with("/v1/commands/"))
        .map(|r| (r.target.clone(), serde_json::from_slice(&r.body).unwrap()))
        .collect()
}

fn has_completion(requests: &[Request]) -> bool {
    reports(requests)
        .iter()
        .any(|(_, r)| r["type"] == "completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_revision_kind_is_reported_failed_naming_the_kind() {
    let answer = command("c-1", r#"{"kind":"oci","image":"registry.example/app:1"}"#);
    let server = coordinator(move |n| (n == 0).then(|| json(&answer))).await;
    let dir = tempfile::tempdir().unwrap();
    let requests = run_until(config(dir.path(), &server), &server, has_completion).await;
    let reports = reports(&requests);
    let (target, completed) = reports
        .iter()
        .find(|(_, r)| r["type"] == "completed")
        .unwrap_or_else(|| panic!("no completion report; requests: {requests:?}"));
    assert_eq!(target, "/v1/commands/c-1/reports");
    assert_eq!(completed["status"], "failed", "{completed}");
    let message = completed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"unsupported revision kind "oci""#),
        "{message}"
    );
    // Nothing was started for a command the agent does not understand.
    assert_eq!(reports.len(), 1, "{reports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_of_a_day_delays_the_next_poll_by_at_most_the_max_backoff() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    let server = coordinator(move |n| {
        seen.lock().unwrap().push(Instant::now());
        (n == 0).then(|| Reply::status(503).header("Retry-After", "86400"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let polls = |requests: &[Request]| {
        requests
            .iter()
            .filter(|r| r.target == "/v1/hosts/poll")
            .count()
    };
    run_until(config(dir.path(), &server), &server, |r| polls(r) >= 2).await;
    let times = times.lock().unwrap();
    assert!(
        times.len() >= 2,
        "the agent did not poll again within 20 s of a 503 with Retry-After: 86400"
    );
    // poll.max_backoff_secs is 1.
    let waited = times[1] - times[0];
    assert!(waited <= Duration::from_millis(1500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_id_is_percent_encoded_in_the_report_url() {
    // A revision this agent refuses at once (a short sha256), so the command fails quickly.
    let answer = command(
        "c 1/../x?y",
        r#"{"kind":"url","url":"http://127.0.0.1:1/b","sha256":"abc"}"#,
    );
    let server = coordinator(move |n| (n == 0).then(|| json(&answer))).await;
    let dir = tempfile::tempdir().unwrap();
    let requests = run_until(config(dir.path(), &server), &server, has_completion).await;
    let targets: Vec<String> = reports(&requests).into_iter().map(|(t, _)| t).collect();
    assert!(!targets.is_empty(), "no report; requests: {requests:?}");
    for target in &targets {
        assert_eq!(target, "/v1/commands/c%201%2F..%2Fx%3Fy/reports");
    }
}
