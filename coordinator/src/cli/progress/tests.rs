//! Tests of the diff and the plain, JSON and live renderings, on deployment views built from JSON.

use super::*;

/// A deployment view with `hosts` given as (name, state, current event) and the counts
/// that follow from them.
fn view(state: &str, hosts: &[(&str, &str, Option<&str>)]) -> Deployment {
    let mut counts = serde_json::json!({"pending": 0, "in_progress": 0, "succeeded": 0,
        "failed": 0, "stopped": 0, "skipped": 0});
    let hosts: Vec<serde_json::Value> = hosts
        .iter()
        .map(|(name, st, event)| {
            counts[*st] = (counts[*st].as_u64().unwrap_or(0) + 1).into();
            let mut h = serde_json::json!({"host_id": format!("id-{name}"),
                "host_name": name, "command_id": format!("c-{name}"), "state": st,
                "current_event": event});
            if *st == "failed" {
                h["failed_event"] = "ValidateService".into();
                h["script"] = "scripts/validate.sh".into();
                h["exit_code"] = 3.into();
                h["message"] = "script scripts/validate.sh exited with code 3".into();
                h["log_tail"] = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n\x1b[2Jboom".into();
            }
            h
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "id": "d-1", "application": "shop", "deployment_group": "web",
        "revision": {"kind": "coordinator", "sha256": "00", "size": 1},
        "state": state, "creator": "user", "rollout": {"type": "all_at_once"},
        "created_ms": 1_000, "ended_ms": if state == "in_progress" { None } else { Some(3_500u64) },
        "counts": counts, "hosts": hosts,
    }))
    .expect("a deployment view")
}

fn check(prev: Option<&Deployment>, next: &Deployment, expected: &[&str]) {
    let got: Vec<String> = diff(prev, next)
        .iter()
        .map(|c| match c {
            Change::Started { host } => format!("{host} started"),
            Change::Event { host, event } => format!("{host} event {event}"),
            Change::Failed { host, failure } => {
                format!("{host} failed {}", failure.event.as_deref().unwrap_or("-"))
            }
            Change::Finished { host, state, .. } => format!("{host} {state}"),
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn the_diff_names_each_host_change_once() {
    let first = view(
        "in_progress",
        &[
            ("a", "in_progress", Some("BeforeInstall")),
            ("b", "pending", None),
        ],
    );
    check(None, &first, &["a started", "a event BeforeInstall"]);
    // The same view again changes nothing.
    check(Some(&first), &first, &[]);
    let second = view(
        "in_progress",
        &[
            ("a", "in_progress", Some("Install")),
            ("b", "in_progress", None),
        ],
    );
    check(Some(&first), &second, &["a event Install", "b started"]);
    // An in-progress host whose event does not change, or who reports no event yet,
    // changes nothing.
    let third = view(
        "in_progress",
        &[
            ("a", "in_progress", Some("Install")),
            ("b", "in_progress", None),
        ],
    );
    check(Some(&second), &third, &[]);
    let fourth = view("failed", &[("a", "succeeded", None), ("b", "failed", None)]);
    check(
        Some(&third),
        &fourth,
        &["a succeeded", "b failed ValidateService"],
    );
    check(Some(&fourth), &fourth, &[]);
}

#[test]
fn a_host_first_seen_ended_yields_only_its_end() {
    let only = view(
        "failed",
        &[
            ("a", "succeeded", None),
            ("b", "failed", None),
            ("c", "skipped", None),
        ],
    );
    check(
        None,
        &only,
        &["a succeeded", "b failed ValidateService", "c skipped"],
    );
    // A host pending in both views, then started and ended between two views.
    let pending = view("in_progress", &[("a", "pending", None)]);
    check(Some(&pending), &pending, &[]);
    let done = view("succeeded", &[("a", "succeeded", None)]);
    check(Some(&pending), &done, &["a succeeded"]);
}

#[test]
fn plain_lines_are_per_host_state_change_never_per_event() {
    let first = view("in_progress", &[("web-1", "in_progress", Some("Install"))]);
    let last = view("failed", &[("web-1", "failed", None)]);
    let mut lines = Vec::new();
    for (p, n) in [(None, &first), (Some(&first), &last)] {
        for c in diff(p, n) {
            lines.extend(plain(&c).unwrap_or_default());
        }
    }
    assert_eq!(
        lines,
        [
            "web-1 started",
            "web-1 failed in ValidateService: script scripts/validate.sh exited with code 3",
            "    | ... (2 earlier lines)",
            "    | three",
            "    | four",
            "    | five",
            "    | six",
            "    | seven",
            // The escape sequence a host sent is shown, not obeyed.
            "    | \\x1b[2Jboom",
        ]
    );
    let quiet = Failure {
        event: Some("AfterInstall".into()),
        script: Some("scripts/migrate.sh".into()),
        exit_code: Some(4),
        error_code: Some("script_failed".into()),
        message: None,
        log_tail: None,
    };
    assert_eq!(
        failure_lines("web-2", &quiet, "  "),
        ["web-2 failed in AfterInstall, script scripts/migrate.sh, exit code 4: script_failed"]
    );
    assert_eq!(
        plain(&Change::Event {
            host: "h".into(),
            event: "Install".into()
        }),
        None
    );
}

#[test]
fn the_summary_says_how_long_and_which_hosts_failed() {
    let d = view(
        "failed",
        &[
            ("web-1", "succeeded", None),
            ("web-2", "failed", None),
            ("web-3", "skipped", None),
        ],
    );
    let lines = summary(&d, Duration::from_secs(99));
    assert_eq!(
        lines[0],
        "deployment d-1 failed in 2.5s: 1 succeeded, 1 failed, 0 stopped, 1 skipped; failed on web-2"
    );
    let j = summary_json(&d, Duration::from_secs(99));
    assert_eq!(j["failed_hosts"], serde_json::json!(["web-2"]));
    assert_eq!(j["seconds"], 2.5);
    assert_eq!(j["state"], "failed");
    // While it runs, the time followed is what there is.
    let running = view("in_progress", &[("web-1", "in_progress", None)]);
    assert!(summary(&running, Duration::from_secs(75))[0].contains(" in 1m15s: "));
}

#[test]
fn json_lines_carry_every_change_events_included() {
    let first = view("in_progress", &[("web-1", "in_progress", Some("Install"))]);
    let lines: Vec<String> = diff(None, &first)
        .iter()
        .map(|c| json(c, "d-1", 0.25).to_string())
        .collect();
    assert_eq!(
        lines,
        [
            r#"{"change":"started","deployment_id":"d-1","host":"web-1","seconds":0.25}"#,
            r#"{"change":"event","deployment_id":"d-1","event":"Install","host":"web-1","seconds":0.25}"#,
        ]
    );
}

#[test]
fn the_live_view_lists_a_bounded_number_of_running_hosts() {
    let names: Vec<String> = (0..50).map(|i| format!("web-{i:02}")).collect();
    let hosts: Vec<(&str, &str, Option<&str>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let state = if i < 30 { "in_progress" } else { "pending" };
            (n.as_str(), state, Some("AfterInstall"))
        })
        .collect();
    let msg = live_message(&view("in_progress", &hosts));
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 1 + RUNNING_SHOWN + 1, "{msg}");
    assert_eq!(
        lines[0],
        "0 succeeded, 30 in progress, 0 failed, 20 pending, 0 skipped"
    );
    assert_eq!(
        lines[1].trim_end(),
        "  web-00                   AfterInstall"
    );
    assert_eq!(lines[RUNNING_SHOWN + 1], "  ... and 20 more running");
}
