//! Fleet convergence on real hosts: the real `hoist server` (a short host lease where a
//! test needs hosts to be lost or retried quickly) and real `hoist-agent run` daemons, each
//! in its own mount namespace where the test checks what a host installed. A host that
//! registers later, or was down during a deployment, gets the group's revision with no
//! operator command; a host whose install always fails is tried four times and then shown
//! out of sync until `hoist hosts retry`; a bake separates two batches; a kill mid-hook
//! ends `interrupted`; a coordinator restart keeps a due catch-up. Waits poll with a
//! deadline; nothing asserts on timing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist_tests::fleet::{Agent, AgentOptions, Coordinator};
use hoist_tests::{need_root, wait_for, Scratch};
use nix::sys::signal::Signal;

const LIMIT: Duration = Duration::from_secs(60);

/// A revision installing `site/index.html` (holding `version`) into `dest`, whose
/// BeforeInstall fails with exit code 4 on a host whose `$OUT/broken` exists and whose
/// hooks append their event to `$OUT/events.log`.
fn site(dir: &Path, dest: &Path, version: &str) {
    let files = [
        ("site/index.html", format!("{version}\n")),
        (
            "scripts/before.sh",
            "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n\
             if [ -e \"$OUT/broken\" ]; then echo 'disk quota exceeded' >&2; exit 4; fi\n"
                .to_owned(),
        ),
        (
            "scripts/record.sh",
            "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n".to_owned(),
        ),
    ];
    for (path, body) in &files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n\
             file_exists_behavior: OVERWRITE\nhooks:\n  BeforeInstall:\n    - location: scripts/before.sh\n\
             \x20 ApplicationStart:\n    - location: scripts/record.sh\n",
            dest.display()
        ),
    )
    .expect("appspec");
}

fn json(c: &Coordinator, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&c.hoist_ok(args)).expect("json")
}

/// Host `name`'s entry for shop/web in `hosts list --json`.
fn host_group(c: &Coordinator, name: &str) -> serde_json::Value {
    let list = json(c, &["hosts", "list", "--json"]);
    list["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["name"] == name)
        .and_then(|h| {
            h["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["deployment_group"] == "web")
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

fn wait_sync(c: &Coordinator, name: &str, sync: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(&format!("{name} {sync}"), LIMIT, || {
        last = host_group(c, name);
        last["sync"] == sync
    });
    last
}

fn wait_hosts(c: &Coordinator, names: &[&str]) {
    wait_for("hosts polling", LIMIT, || {
        let list = json(c, &["hosts", "list", "--json"]);
        names.iter().all(|n| {
            list["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h["name"] == *n && h["online"] == true)
        })
    });
}

fn private(dest: &Path) -> AgentOptions<'_> {
    AgentOptions {
        private_dir: Some(dest),
        ..AgentOptions::default()
    }
}

fn installed(a: &Agent) -> String {
    fs::read_to_string(a.dir.join("private/index.html")).unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_host_registered_after_a_deployment_runs_the_revision_and_all_three_are_in_sync() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let dest = s.join("dest");
    let web1 = Agent::start_with(&s, "web-1", &c, &token, "role: web", private(&dest));
    let web2 = Agent::start_with(&s, "web-2", &c, &token, "role: web", private(&dest));
    wait_hosts(&c, &["web-1", "web-2"]);
    site(&s.join("v1"), &dest, "v1");
    let revision = c.push(&s.join("v1"));
    let (code, first) = c.deploy(&revision, true);
    assert_eq!(code, Some(0));

    let web3 = Agent::start_with(&s, "web-3", &c, &token, "role: web", private(&dest));
    wait_for("web-3 installs v1", LIMIT, || installed(&web3) == "v1\n");
    for a in [&web1, &web2, &web3] {
        assert_eq!(installed(a), "v1\n");
    }
    for name in ["web-1", "web-2", "web-3"] {
        let g = wait_sync(&c, name, "in_sync");
        assert_eq!(g["revision_id"], revision.as_str(), "{name}: {g}");
    }
    let g = json(&c, &["group", "show", "web", "--app", "shop", "--json"]);
    assert_eq!(g["target"]["deployment_id"], first.as_str(), "{g}");
    assert_eq!(g["sync_counts"]["in_sync"], 3, "{g}");
    let list = c.hoist_ok(&["deploy", "list", "--app", "shop"]);
    assert!(list.contains("catch-up"), "{list}");
    assert!(web3.events().contains(&"ApplicationStart".to_owned()));
    // The host itself shows the same, from what its polls heard.
    wait_for("web-3's status says in sync", LIMIT, || {
        web3.status()["sync"][0]["sync"] == "in_sync"
    });
    let st = web3.status();
    assert_eq!(st["sync"][0]["group"], "web", "{st}");
    assert_eq!(st["sync"][0]["application"], "shop", "{st}");
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_host_down_during_a_deployment_catches_up_when_it_comes_back() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let c = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &["--host-lease", "2s"],
    );
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let dest = s.join("dest");
    let web1 = Agent::start_with(&s, "web-1", &c, &token, "role: web", private(&dest));
    let mut web2 = Agent::start_with(&s, "web-2", &c, &token, "role: web", private(&dest));
    wait_hosts(&c, &["web-1", "web-2"]);
    site(&s.join("v1"), &dest, "v1");
    let (code, _) = c.deploy(&c.push(&s.join("v1")), true);
    assert_eq!(code, Some(0));
    assert_eq!(installed(&web2), "v1\n");

    // web-2 goes down and stays down past the lease: v2 goes to web-1 alone.
    web2.stop_with(Signal::SIGKILL);
    wait_for("web-2 past the lease", LIMIT, || {
        let list = json(&c, &["hosts", "list", "--json"]);
        let seen = list["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"] == "web-2")
            .and_then(|h| h["last_seen_ms"].as_u64())
            .unwrap_or(0);
        now_ms().saturating_sub(seen) > 3_000
    });
    site(&s.join("v2"), &dest, "v2");
    let v2 = c.push(&s.join("v2"));
    let (code, second) = c.deploy(&v2, true);
    assert_eq!(code, Some(0));
    let d = json(&c, &["deploy", "status", &second, "--json"]);
    assert_eq!(d["hosts"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(installed(&web1), "v2\n");
    assert_eq!(installed(&web2), "v1\n");
    assert_eq!(host_group(&c, "web-2")["sync"], "catching_up");

    web2.restart();
    wait_for("web-2 installs v2", LIMIT, || installed(&web2) == "v2\n");
    let g = wait_sync(&c, "web-2", "in_sync");
    assert_eq!(g["revision_id"], v2.as_str(), "{g}");
}

#[test]
fn a_host_whose_install_always_fails_is_tried_four_times_then_out_of_sync_until_retried() {
    let s = Scratch::new();
    let c = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &["--host-lease", "2s"],
    );
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let dest = s.join("dest");
    let web1 = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    // The destination is shared without namespaces: one host is enough here.
    site(&s.join("v1"), &dest, "v1");
    let (code, _) = c.deploy(&c.push(&s.join("v1")), true);
    assert_eq!(code, Some(0));
    assert!(web1.events().contains(&"ApplicationStart".to_owned()));

    // web-2's BeforeInstall always fails.
    fs::create_dir_all(s.join("web-2/out")).expect("mkdir");
    fs::write(s.join("web-2/out/broken"), "").expect("broken");
    let web2 = Agent::start(&s, "web-2", &c, &token, "role: web");
    let tries = || {
        web2.events()
            .iter()
            .filter(|e| *e == "BeforeInstall")
            .count()
    };
    let g = wait_sync(&c, "web-2", "out_of_sync");
    assert_eq!(tries(), 4, "one try and three retries");
    assert_eq!(g["failed_state"], "failed", "{g}");
    assert_eq!(g["failed_event"], "BeforeInstall", "{g}");
    assert!(
        g["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with code 4")),
        "{g}"
    );
    assert_eq!(g["catch_up_attempts"], 4, "{g}");
    let text = c.hoist_ok(&["hosts", "list"]);
    assert!(
        text.contains("out_of_sync (failed in BeforeInstall)"),
        "{text}"
    );
    wait_for("web-2's status says out of sync", LIMIT, || {
        web2.status()["sync"][0]["sync"] == "out_of_sync"
    });
    let st = web2.status();
    assert_eq!(st["sync"][0]["failed_event"], "BeforeInstall", "{st}");
    let out = std::process::Command::new(hoist_tests::bin("hoist-agent"))
        .args(["status", "--config"])
        .arg(&web2.config)
        .output()
        .expect("hoist-agent status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web of shop: out_of_sync"), "{text}");

    // Left alone: it keeps polling well past the longest retry delay (2 s) with no fifth try.
    let held_at = now_ms();
    wait_for("web-2 polls on, held", LIMIT, || {
        let list = json(&c, &["hosts", "list", "--json"]);
        list["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"] == "web-2")
            .and_then(|h| h["last_seen_ms"].as_u64())
            .is_some_and(|seen| seen > held_at + 5_000)
    });
    assert_eq!(tries(), 4);
    assert_eq!(host_group(&c, "web-2")["sync"], "out_of_sync");

    c.hoist_ok(&["hosts", "retry", "web-2"]);
    wait_for("a fifth try", LIMIT, || tries() == 5);
    let g = wait_sync(&c, "web-2", "out_of_sync");
    assert_eq!(g["failed_event"], "BeforeInstall", "{g}");
    assert_eq!(tries(), 5, "the retry is one try");
}

#[test]
fn a_bake_separates_two_batches_and_deploy_status_says_so() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "OneAtATime", "--bake", "3"]);
    let web1 = Agent::start(&s, "web-1", &c, &token, "role: web");
    let web2 = Agent::start(&s, "web-2", &c, &token, "role: web");
    wait_hosts(&c, &["web-1", "web-2"]);
    site(&s.join("v1"), &s.join("dest"), "v1");
    let (code, id) = c.deploy(&c.push(&s.join("v1")), false);
    assert_eq!(code, Some(0));
    let started = |a: &Agent| a.events().contains(&"ApplicationStart".to_owned());
    let mut text = String::new();
    wait_for("the bake after the first batch", LIMIT, || {
        text = c.hoist_ok(&["deploy", "status", &id]);
        text.contains("baking:")
    });
    let d = json(&c, &["deploy", "status", &id, "--json"]);
    let until = d["baking_until_ms"].as_u64().expect("baking_until_ms");
    assert_eq!(d["counts"]["pending"], 1, "{d}");
    assert_eq!(
        [&web1, &web2].iter().filter(|a| started(a)).count(),
        1,
        "only the first batch ran: {text}"
    );
    wait_for("the deployment to end", LIMIT, || {
        json(&c, &["deploy", "status", &id, "--json"])["state"] == "succeeded"
    });
    let d = json(&c, &["deploy", "status", &id, "--json"]);
    let second_start = d["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["started_ms"].as_u64())
        .max()
        .expect("start times");
    assert!(
        second_start >= until,
        "the second batch started during the bake: {d}"
    );
    assert!(started(&web1) && started(&web2));
}

#[test]
fn a_host_killed_during_its_hook_ends_interrupted() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    let dir = s.join("long");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: long.sh\n",
    )
    .expect("appspec");
    fs::write(
        dir.join("long.sh"),
        "#!/bin/sh\ntouch \"$OUT/started\"\nsleep 300\n",
    )
    .expect("script");
    fs::set_permissions(dir.join("long.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, id) = c.deploy(&c.push(&dir), false);
    assert_eq!(code, Some(0));
    wait_for("the hook runs", LIMIT, || {
        web.dir.join("out/started").exists()
    });
    web.stop_with(Signal::SIGKILL);
    web.restart();
    let mut d = serde_json::Value::Null;
    wait_for("the deployment ends", LIMIT, || {
        d = json(&c, &["deploy", "status", &id, "--json"]);
        d["state"] == "failed"
    });
    assert_eq!(d["hosts"][0]["state"], "interrupted", "{d}");
    assert_eq!(d["counts"]["interrupted"], 1, "{d}");
    let text = c.hoist_ok(&["deploy", "status", &id]);
    assert!(text.contains("web-1  interrupted"), "{text}");
    let g = wait_sync(&c, "web-1", "out_of_sync");
    assert_eq!(g["failed_state"], "interrupted", "{g}");
    assert_eq!(g["failed_event"], "ApplicationStart", "{g}");
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_coordinator_restart_while_a_catch_up_is_due_still_delivers_it() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let mut c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let dest = s.join("dest");
    let _web1 = Agent::start_with(&s, "web-1", &c, &token, "role: web", private(&dest));
    let mut db = Agent::start_with(&s, "db-1", &c, &token, "role: db", private(&dest));
    wait_hosts(&c, &["web-1", "db-1"]);
    site(&s.join("v1"), &dest, "v1");
    let (code, _) = c.deploy(&c.push(&s.join("v1")), true);
    assert_eq!(code, Some(0));
    assert_eq!(installed(&db), "", "db-1 is not in the group");

    // db-1 is stopped, an operator puts it in the group (a catch-up is due at its next
    // poll), and the coordinator restarts before that poll.
    db.stop_with(Signal::SIGTERM);
    c.hoist_ok(&["hosts", "tag", "db-1", "role=web"]);
    assert_eq!(host_group(&c, "db-1")["sync"], "never_deployed");
    let addr = c.authority();
    c.stop_with(Signal::SIGKILL);
    let c = Coordinator::start_on(&s.join("coordinator"), &addr);
    db.restart();
    wait_for("db-1 installs v1", LIMIT, || installed(&db) == "v1\n");
    wait_sync(&c, "db-1", "in_sync");
}
