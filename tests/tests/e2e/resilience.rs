//! The fleet when things go wrong: auto-rollback on real hosts, an agent killed mid-hook,
//! the coordinator stopped mid-deployment and restarted on the same address, revoked and
//! wrong host credentials, a coordinator that comes up after its agents, pickup latency of
//! a long-polling agent, heartbeats that keep a host running a long hook alive past a
//! short lease, and a host restarted in its own mount namespace between two deployments
//! keeping what it installed. Real `hoist server` and `hoist-agent run` processes
//! throughout; no test here asserts a tight timing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hoist_tests::fleet::{Agent, AgentOptions, Coordinator};
use hoist_tests::{alive, debug_secs, need_root, wait_for, walk, Scratch};
use nix::sys::signal::Signal;

fn wait_hosts(c: &Coordinator, names: &[&str]) {
    wait_for("hosts registered", Duration::from_secs(30), || {
        let text = c.hoist_ok(&["hosts", "list", "--json"]);
        names.iter().all(|n| text.contains(&format!("\"{n}\"")))
    });
}

/// The id of host `name` at the coordinator.
fn host_id(c: &Coordinator, name: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&c.hoist_ok(&["hosts", "list", "--json"])).expect("hosts json");
    list["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["id"].as_str())
        .expect("host listed")
        .to_string()
}

/// Writes a bundle: `appspec` plus executable `files` (path, body).
fn bundle(dir: &Path, appspec: &str, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join("appspec.yml"), appspec).expect("appspec");
    for (path, body) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn deployment(c: &Coordinator, id: &str) -> serde_json::Value {
    serde_json::from_str(&c.hoist_ok(&["deploy", "status", id, "--json"])).expect("status json")
}

/// `hoist deploy status ID` as text (stdout and stderr).
fn status_text(c: &Coordinator, id: &str) -> String {
    let out = c.hoist(&["deploy", "status", id]);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Waits until deployment `id` has ended and returns it.
fn wait_ended(c: &Coordinator, id: &str, limit: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let d = deployment(c, id);
        if d["state"] != "in_progress" && d["state"] != "pending" {
            return d;
        }
        assert!(t0.elapsed() < limit, "deployment {id} still running: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The deployment's entry for host `name`.
fn host_of<'a>(d: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    d["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host_name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the deployment: {d}"))
}

const RECORD: &str = "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n";

#[test]
fn a_failing_revision_is_rolled_back_to_the_previous_files_on_every_host() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "OneAtATime", "--auto-rollback"]);
    // Both hosts run on this machine: they install into one directory, one at a time, and
    // their ApplicationStart copies what it finds there into the host's own $OUT.
    let www = s.join("www");
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nfile_exists_behavior: OVERWRITE\nhooks:\n  AfterInstall:\n    - location: scripts/after.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n",
        www.display()
    );
    let start = format!(
        "#!/bin/sh\ncp {}/version.txt \"$OUT/version.txt\"\necho \"$DEPLOYMENT_ID\" >> \"$OUT/deployments.log\"\n",
        www.display()
    );
    let good = s.join("good");
    bundle(
        &good,
        &appspec,
        &[
            ("app/version.txt", "v1 good\n"),
            ("scripts/after.sh", "#!/bin/sh\nexit 0\n"),
            ("scripts/start.sh", &start),
        ],
    );
    let bad = s.join("bad");
    bundle(
        &bad,
        &appspec,
        &[
            ("app/version.txt", "v2 broken\n"),
            (
                "scripts/after.sh",
                "#!/bin/sh\necho 'migration 42 failed' >&2\nexit 4\n",
            ),
            ("scripts/start.sh", &start),
        ],
    );
    let web1 = Agent::start(&s, "web-1", &c, &token, "role: web");
    let web2 = Agent::start(&s, "web-2", &c, &token, "role: web");
    wait_hosts(&c, &["web-1", "web-2"]);
    let version = |a: &Agent| fs::read_to_string(a.dir.join("out/version.txt")).unwrap_or_default();

    let (code, first) = c.deploy(&c.push(&good), true);
    assert_eq!(code, Some(0), "the good revision deploys");
    for a in [&web1, &web2] {
        assert_eq!(version(a), "v1 good\n");
    }

    let (code, failed) = c.deploy(&c.push(&bad), true);
    assert_eq!(code, Some(1), "the broken revision fails");
    let d = deployment(&c, &failed);
    assert_eq!(d["state"], "failed", "{d}");
    let rollback = d["rolled_back_by"]
        .as_str()
        .unwrap_or_else(|| panic!("no rollback started: {d}"))
        .to_string();
    let r = wait_ended(&c, &rollback, Duration::from_secs(60));
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["creator"], "rollback");
    assert_eq!(r["rollback_of"], failed.as_str());
    assert_eq!(r["revision"], deployment(&c, &first)["revision"]);

    // The good files are back, installed by the rollback on both hosts.
    assert_eq!(
        fs::read_to_string(www.join("version.txt")).expect("installed"),
        "v1 good\n"
    );
    for a in [&web1, &web2] {
        assert_eq!(version(a), "v1 good\n");
        let log = fs::read_to_string(a.dir.join("out/deployments.log")).expect("log");
        assert_eq!(
            log.lines().last(),
            Some(rollback.as_str()),
            "the rollback ran last"
        );
        assert!(!log.contains(&failed), "the broken revision never started");
    }
    let text = status_text(&c, &failed);
    assert!(
        text.contains(&format!("rolled back:  by {rollback}")),
        "{text}"
    );
    assert!(text.contains("migration 42 failed"), "{text}");
    let text = status_text(&c, &rollback);
    assert!(text.contains("by auto-rollback"), "{text}");
    assert!(text.contains(&format!("rollback of:  {failed}")), "{text}");
}

#[test]
fn kill_9_of_the_agent_during_a_long_hook_is_reported_and_its_hook_killed_on_restart() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    let long = s.join("long");
    bundle(
        &long,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: long.sh\n",
        &[(
            "long.sh",
            "#!/bin/sh\necho $$ >> \"$OUT/pids\"\nsleep 300 &\necho $! >> \"$OUT/pids\"\nsleep 300\n",
        )],
    );
    let (code, id) = c.deploy(&c.push(&long), false);
    assert_eq!(code, Some(0));
    let pids_file = web.dir.join("out/pids");
    wait_for("the hook and its child", Duration::from_secs(30), || {
        fs::read_to_string(&pids_file).is_ok_and(|p| p.lines().count() >= 2)
    });
    let pids: Vec<i32> = fs::read_to_string(&pids_file)
        .expect("pids")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    web.child.kill().expect("kill -9");
    let _ = web.child.wait();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the hook outlives kill -9 of its agent"
    );

    web.restart();
    let d = wait_ended(&c, &id, Duration::from_secs(30));
    assert_eq!(d["state"], "failed", "{d}");
    let h = host_of(&d, "web-1");
    assert_eq!(h["failed_event"], "ApplicationStart", "{h}");
    assert_eq!(h["error_code"], "agent_restarted", "{h}");
    assert_eq!(
        h["message"], "agent restarted during ApplicationStart",
        "{h}"
    );
    let text = status_text(&c, &id);
    assert!(
        text.contains("agent restarted during ApplicationStart"),
        "{text}"
    );
    wait_for(
        "the orphaned hook group to die",
        Duration::from_secs(10),
        || pids.iter().all(|p| !alive(*p)),
    );

    // Back to polling: the next deployment runs.
    let quick = s.join("quick");
    bundle(
        &quick,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: record.sh\n",
        &[("record.sh", RECORD)],
    );
    let (code, _) = c.deploy(&c.push(&quick), true);
    assert_eq!(code, Some(0), "a deployment after the restart succeeds");
    assert_eq!(web.events(), ["ApplicationStart"]);
    let handed_again = web.log().matches("command already handled here").count();
    eprintln!("the interrupted command was handed out again {handed_again} times");
    assert!(handed_again < 10, "polling spun on a handled command");
}

/// Every lifecycle event, in order.
const ALL_EVENTS: [&str; 11] = [
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

#[test]
fn a_coordinator_stopped_mid_deployment_loses_no_event_report_when_it_comes_back() {
    let s = Scratch::new();
    let data = s.join("coordinator");
    let mut c = Coordinator::start(&data);
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let agents = [
        Agent::start(&s, "web-1", &c, &token, "role: web"),
        Agent::start(&s, "web-2", &c, &token, "role: web"),
    ];
    wait_hosts(&c, &["web-1", "web-2"]);
    let appspec = "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: record.sh\n  AfterInstall:\n    - location: slow.sh\n  ApplicationStart:\n    - location: record.sh\n  ValidateService:\n    - location: record.sh\n  BeforeAllowTraffic:\n    - location: record.sh\n";
    let slow = "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\nsleep 3\n";

    for (round, signal) in [(1, Signal::SIGKILL), (2, Signal::SIGTERM)] {
        let dir = s.join(format!("rev{round}"));
        bundle(
            &dir,
            appspec,
            &[
                ("record.sh", RECORD),
                ("slow.sh", slow),
                ("round.txt", &format!("{round}\n")),
            ],
        );
        let before: Vec<usize> = agents.iter().map(|a| a.events().len()).collect();
        let (code, id) = c.deploy(&c.push(&dir), false);
        assert_eq!(code, Some(0));
        wait_for(
            "both hosts in AfterInstall",
            Duration::from_secs(30),
            || {
                agents
                    .iter()
                    .zip(&before)
                    .all(|(a, n)| a.events()[*n..].contains(&"AfterInstall".to_string()))
            },
        );
        c.stop_with(signal);
        eprintln!("round {round}: coordinator stopped with {signal}");
        // The hosts finish the deployment while it is down; their reports wait on disk.
        wait_for("both hosts done", Duration::from_secs(30), || {
            agents
                .iter()
                .zip(&before)
                .all(|(a, n)| a.events()[*n..].contains(&"BeforeAllowTraffic".to_string()))
        });
        std::thread::sleep(Duration::from_secs(1));
        let addr = c.authority();
        c = Coordinator::start_on(&data, &addr);

        let d = wait_ended(&c, &id, Duration::from_secs(60));
        assert_eq!(d["state"], "succeeded", "round {round}: {d}");
        for (a, n) in agents.iter().zip(&before) {
            let name = a.dir.file_name().and_then(|n| n.to_str()).expect("name");
            let h = host_of(&d, name);
            let events = h["events"].as_array().expect("events");
            let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
            assert_eq!(names, ALL_EVENTS, "round {round}, {name}: {h}");
            for e in events {
                assert!(
                    e["status"] == "succeeded" || e["status"] == "skipped",
                    "round {round}, {name}: event not ended well: {e}"
                );
            }
            // The hooks the coordinator saw succeed are exactly the hooks the host ran.
            let ran: Vec<&str> = events
                .iter()
                .filter(|e| e["status"] == "succeeded")
                .filter_map(|e| e["event"].as_str())
                .filter(|e| *e != "DownloadBundle" && *e != "Install")
                .collect();
            assert_eq!(ran, a.events()[*n..], "round {round}, {name}");
        }
    }
}

#[test]
fn a_revoked_host_and_a_wrong_secret_are_refused_and_get_no_commands() {
    let s = Scratch::new();
    // A short lease: hosts that cannot poll soon stop being deployment targets.
    let c = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &["--host-lease", "3s"],
    );
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let revoked = Agent::start(&s, "web-1", &c, &token, "role: web");
    let mut wrong = Agent::start(&s, "web-2", &c, &token, "role: web");
    let good = Agent::start(&s, "web-3", &c, &token, "role: web");
    wait_hosts(&c, &["web-1", "web-2", "web-3"]);

    let id = host_id(&c, "web-1");
    c.hoist_ok(&["hosts", "revoke", &id]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wrong.child.id() as i32),
        Signal::SIGTERM,
    );
    let _ = wrong.child.wait();
    let host_json = wrong.dir.join("state/host.json");
    let mut creds: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&host_json).expect("host.json")).expect("json");
    creds["host_secret"] = "not-the-secret".into();
    fs::write(&host_json, creds.to_string()).expect("write host.json");
    wrong.restart();

    for (agent, why) in [
        (&revoked, "was revoked"),
        (&wrong, "unknown host or wrong host secret"),
    ] {
        wait_for(
            "the refusal in the agent's log",
            Duration::from_secs(30),
            || {
                let log = agent.log();
                log.contains("refused this host's credentials") && log.contains(why)
            },
        );
        let st = agent.status();
        assert_eq!(st["running"], true, "{st}");
        assert!(
            st["last_contact_error"]
                .as_str()
                .is_some_and(|e| e.contains("401") && e.contains(why)),
            "status must show the refusal: {st}"
        );
    }
    // Past the lease only web-3 is a target; nobody hands the refused hosts anything.
    std::thread::sleep(Duration::from_secs(4));
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: record.sh\n",
        &[("record.sh", RECORD)],
    );
    let (code, id) = c.deploy(&c.push(&dir), true);
    assert_eq!(code, Some(0), "deployment to the healthy host");
    let d = deployment(&c, &id);
    let hosts: Vec<&str> = d["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["host_name"].as_str())
        .collect();
    assert_eq!(hosts, ["web-3"], "{d}");
    assert_eq!(good.events(), ["ApplicationStart"]);
    std::thread::sleep(Duration::from_secs(2));
    for a in [&revoked, &wrong] {
        assert!(a.events().is_empty(), "a refused host ran a hook");
        assert!(!a.log().contains("deployment_id"), "{}", a.log());
    }
    let list = c.hoist_ok(&["hosts", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let web1 = list["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == "web-1")
        .expect("web-1");
    assert_eq!(web1["revoked"], true);
}

/// Report files (`*.json`) and refused ones (`*.refused`) in an agent's outbox.
fn outbox_files(a: &Agent) -> (usize, usize) {
    let mut counts = (0, 0);
    for dir in fs::read_dir(a.dir.join("state/outbox"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            match f.path().extension().and_then(|e| e.to_str()) {
                Some("json") => counts.0 += 1,
                Some("refused") => counts.1 += 1,
                _ => {}
            }
        }
    }
    counts
}

#[test]
fn reports_refused_for_a_wrong_secret_are_kept_until_it_is_fixed() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    let long = s.join("long");
    bundle(
        &long,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: long.sh\n",
        &[("long.sh", "#!/bin/sh\necho $$ > \"$OUT/pid\"\nsleep 300\n")],
    );
    let (code, id) = c.deploy(&c.push(&long), false);
    assert_eq!(code, Some(0));
    wait_for("the hook", Duration::from_secs(30), || {
        web.dir.join("out/pid").exists()
    });
    web.child.kill().expect("kill -9");
    let _ = web.child.wait();
    // The host comes back with a damaged secret: its recovery reports are refused (401).
    let host_json = web.dir.join("state/host.json");
    let good = fs::read_to_string(&host_json).expect("host.json");
    let mut creds: serde_json::Value = serde_json::from_str(&good).expect("json");
    creds["host_secret"] = "damaged".into();
    fs::write(&host_json, creds.to_string()).expect("write host.json");
    web.restart();
    wait_for("a refused report", Duration::from_secs(30), || {
        web.log().contains("answered 401 to event report")
    });
    assert!(web.log().contains("reports kept"), "{}", web.log());
    let (queued, refused) = outbox_files(&web);
    assert!(queued >= 2, "the recovery reports wait in the outbox");
    assert_eq!(
        refused, 0,
        "nothing is thrown away for a credentials problem"
    );
    assert_eq!(deployment(&c, &id)["state"], "in_progress");

    // The operator restores the secret: the kept reports arrive and end the deployment.
    web.child.kill().expect("kill -9");
    let _ = web.child.wait();
    fs::write(&host_json, good).expect("restore host.json");
    web.restart();
    let d = wait_ended(&c, &id, Duration::from_secs(30));
    assert_eq!(d["state"], "failed", "{d}");
    assert_eq!(
        host_of(&d, "web-1")["message"],
        "agent restarted during ApplicationStart"
    );
    wait_for("the outbox to drain", Duration::from_secs(10), || {
        outbox_files(&web).0 == 0
    });
}

#[test]
fn an_agent_started_before_its_coordinator_retries_then_registers_and_deploys() {
    let s = Scratch::new();
    let data = s.join("coordinator");
    let mut c = Coordinator::start(&data);
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let addr = c.authority();
    c.stop_with(Signal::SIGKILL);
    // The agent is given the address while nothing listens there.
    let web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_for("four retries", Duration::from_secs(30), || {
        web.log().matches("retrying in").count() >= 4
    });
    let st = web.status();
    assert!(
        st["last_contact_error"]
            .as_str()
            .is_some_and(|e| e.contains(&addr)),
        "{st}"
    );
    let log = web.log();
    let delays: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("retrying in ").nth(1))
        .filter_map(|r| debug_secs(r.split(':').next().unwrap_or("")))
        .collect();
    eprintln!("retry delays: {delays:?}");
    // Exponential with jitter (at most one base delay): two steps always show growth.
    assert!(delays[2] > delays[0], "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 2.0),
        "capped at 1 s: {delays:?}"
    );

    let c = Coordinator::start_on(&data, &addr);
    wait_hosts(&c, &["web-1"]);
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: record.sh\n",
        &[("record.sh", RECORD)],
    );
    let (code, _) = c.deploy(&c.push(&dir), true);
    assert_eq!(code, Some(0));
    assert_eq!(web.events(), ["ApplicationStart"]);
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[test]
fn an_idle_long_polling_agent_picks_up_a_new_deployment_at_once() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    // BeforeBlockTraffic runs the hooks of the revision installed last, before anything
    // else (even the download): once this revision is installed, its stamp marks the
    // moment the next deployment starts on the host.
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  BeforeBlockTraffic:\n    - location: stamp.sh\n",
        &[(
            "stamp.sh",
            "#!/bin/sh\necho $(($(date +%s%N) / 1000000)) > \"$OUT/started\"\n",
        )],
    );
    let revision = c.push(&dir);
    let (code, _) = c.deploy(&revision, true);
    assert_eq!(code, Some(0));
    let stamp = web.dir.join("out/started");
    assert!(
        !stamp.exists(),
        "nothing installed before the first deployment"
    );
    // Let the agent settle into a long poll (it waits up to 20 s for work).
    std::thread::sleep(Duration::from_secs(2));
    let asked = unix_ms();
    let (code, _) = c.deploy(&revision, false);
    let returned = unix_ms();
    assert_eq!(code, Some(0));
    wait_for("the first hook", Duration::from_secs(30), || stamp.exists());
    let started: u128 = fs::read_to_string(&stamp)
        .expect("stamp")
        .trim()
        .parse()
        .expect("ms");
    eprintln!(
        "pickup: the deployment's first hook started {} ms after `deploy create` returned ({} ms after it was run)",
        started as i128 - returned as i128,
        started as i128 - asked as i128
    );
    assert!(
        started.saturating_sub(asked) < 5000,
        "a long-polling agent must start within seconds"
    );
}

#[test]
fn heartbeats_keep_a_host_running_a_hook_longer_than_the_lease() {
    let s = Scratch::new();
    let c = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &["--host-lease", "2s"],
    );
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: slow.sh\n",
        &[(
            "slow.sh",
            "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\nsleep 5\necho done\n",
        )],
    );
    let t0 = Instant::now();
    let (code, id) = c.deploy(&c.push(&dir), true);
    eprintln!(
        "deployment with a 5 s hook under a 2 s lease took {:?}",
        t0.elapsed()
    );
    let d = deployment(&c, &id);
    assert_eq!(code, Some(0), "{d}");
    let h = host_of(&d, "web-1");
    assert_eq!(h["state"], "succeeded", "{h}");
    assert!(h["error_code"].is_null(), "{h}");
    assert!(!status_text(&c, &id).contains("host lost"));
    assert_eq!(web.events(), ["ApplicationStart"]);
}

/// The mount namespace of process `pid` (`mnt:[N]`).
fn mount_ns(pid: impl std::fmt::Display) -> String {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("mount namespace of {pid}: {e}"))
}

/// A revision installing `site/` into `dest` (index.html holds `version`, plus a file only
/// this version has), whose ApplicationStop records `version` in `$OUT/stops.log` and whose
/// AfterInstall copies the installed index.html to `$OUT/seen`.
fn versioned_bundle(dir: &Path, dest: &Path, version: &str) {
    let dest = dest.display();
    bundle(
        dir,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {dest}\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n  AfterInstall:\n    - location: scripts/seen.sh\n"
        ),
        &[
            ("site/index.html", &format!("{version}\n")),
            (&format!("site/only-{version}.txt"), ""),
            (
                "scripts/stop.sh",
                &format!("#!/bin/sh\necho {version} >> \"$OUT/stops.log\"\n"),
            ),
            (
                "scripts/seen.sh",
                &format!("#!/bin/sh\ncp {dest}/index.html \"$OUT/seen\"\n"),
            ),
        ],
    );
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_host_restarted_in_its_own_mount_namespace_keeps_its_install_for_the_next_deployment() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    // Both hosts install into `dest`; each sees its own `DIR/private` there.
    let dest = s.join("dest");
    let options = AgentOptions {
        extra_yaml: "",
        private_dir: Some(&dest),
        ..AgentOptions::default()
    };
    let mut web1 = Agent::start_with(&s, "web-1", &c, &token, "role: web", options);
    let web2 = Agent::start_with(&s, "web-2", &c, &token, "role: web", options);
    wait_hosts(&c, &["web-1", "web-2"]);
    let v1 = s.join("v1");
    versioned_bundle(&v1, &dest, "v1");
    let v2 = s.join("v2");
    versioned_bundle(&v2, &dest, "v2");
    let tree = |a: &Agent| -> Vec<String> {
        let own = a.dir.join("private");
        walk(&own)
            .iter()
            .map(|p| p.strip_prefix(&own).expect("inside").display().to_string())
            .collect()
    };
    let read = |a: &Agent, path: &str| fs::read_to_string(a.dir.join(path)).unwrap_or_default();

    let (code, first) = c.deploy(&c.push(&v1), true);
    assert_eq!(code, Some(0), "{}", status_text(&c, &first));
    for a in [&web1, &web2] {
        assert_eq!(tree(a), ["index.html", "only-v1.txt"]);
        assert_eq!(read(a, "private/index.html"), "v1\n");
        assert_eq!(
            read(a, "out/seen"),
            "v1\n",
            "the hook sees the host's own tree"
        );
    }
    assert!(walk(&dest).is_empty(), "installed outside the hosts' trees");

    let id_before = host_id(&c, "web-1");
    web1.stop_with(Signal::SIGKILL);
    web1.restart();

    // Default DISALLOW: had the restarted host lost its record of v1's files, the v1 files it
    // finds in its tree would fail this deployment.
    let (code, second) = c.deploy(&c.push(&v2), true);
    assert_eq!(code, Some(0), "{}", status_text(&c, &second));
    assert_eq!(host_id(&c, "web-1"), id_before, "registered once");
    let ours = mount_ns("self");
    for a in [&web1, &web2] {
        assert_ne!(
            mount_ns(a.child.id()),
            ours,
            "{} runs in a mount namespace of its own",
            a.dir.display()
        );
        // v1's files were removed from the same tree they were installed into, and v1's
        // ApplicationStop ran: the host updated from v1 rather than installing afresh.
        assert_eq!(tree(a), ["index.html", "only-v2.txt"]);
        assert_eq!(read(a, "private/index.html"), "v2\n");
        assert_eq!(read(a, "out/seen"), "v2\n");
        assert_eq!(read(a, "out/stops.log"), "v1\n", "{}", a.dir.display());
        let st = a.status();
        let listed: Vec<&str> = st["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["deployments"].as_array().into_iter().flatten())
            .filter(|d| d["status"] == "succeeded")
            .filter_map(|d| d["deployment_id"].as_str())
            .collect();
        assert!(
            listed.contains(&first.as_str()) && listed.contains(&second.as_str()),
            "both deployments in {}'s state: {st}",
            a.dir.display()
        );
    }
    assert!(walk(&dest).is_empty(), "installed outside the hosts' trees");
    let starts = |a: &Agent| {
        a.log()
            .lines()
            .filter(|l| l.contains(" started") && l.contains("state_dir"))
            .count()
    };
    assert_eq!(starts(&web1), 2, "both runs in one log: {}", web1.log());
    assert_eq!(starts(&web2), 1, "{}", web2.log());
}

/// A small tmpfs mounted over a directory until dropped (needs root).
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        need_root("mounts a small tmpfs");
        fs::create_dir_all(dir).expect("mkdir");
        let out = hoist_tests::run(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        );
        assert!(out.status.success(), "mount tmpfs on {}", dir.display());
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills it up with a file of zeros.
    fn fill(&self) {
        use std::io::Write;
        let mut f = fs::File::create(self.dir.join("filler")).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // What is left is less than a block; take it too.
        while f.write_all(&[0u8; 512]).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
    }

    fn free(&self) {
        fs::remove_file(self.dir.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_state_directory_fails_the_command_instead_of_leaving_it_in_progress() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let disk = SmallFs::mount(&s.join("web-1/state"), "2m");
    let web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_hosts(&c, &["web-1"]);
    wait_for("host.json", Duration::from_secs(10), || {
        s.join("web-1/state/host.json").exists()
    });
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: record.sh\n",
        &[("record.sh", RECORD)],
    );
    let revision = c.push(&dir);
    disk.fill();
    let (code, id) = c.deploy(&revision, false);
    assert_eq!(code, Some(0));
    // Before, the agent sent nothing and polled on: the command stayed in progress.
    let d = wait_ended(&c, &id, Duration::from_secs(30));
    assert_eq!(d["state"], "failed", "{d}");
    let h = host_of(&d, "web-1");
    let message = h["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "no space left in the state directory {}",
            s.join("web-1/state").display()
        )),
        "{h}"
    );
    assert!(web.events().is_empty(), "nothing ran: {:?}", web.events());
    assert!(
        web.log().contains("sending it directly"),
        "the outbox took the report: {}",
        web.log()
    );
    let handed_again = web.log().matches("command already reported failed").count();
    assert!(handed_again < 10, "polling spun on the failed command");

    // With space again, the next deployment runs.
    disk.free();
    let (code, _) = c.deploy(&revision, true);
    assert_eq!(code, Some(0), "{}", web.log());
    assert_eq!(web.events(), ["ApplicationStart"]);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_host_whose_state_directory_is_full_does_not_register_until_there_is_space() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let disk = SmallFs::mount(&s.join("web-1/state"), "1m");
    disk.fill();
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_for("refusals to register", Duration::from_secs(30), || {
        web.log().matches("not registering: no space left").count() >= 3
    });
    assert!(
        web.child.try_wait().expect("try_wait").is_none(),
        "the agent exited: {}",
        web.log()
    );
    let hosts = c.hoist_ok(&["hosts", "list", "--json"]);
    assert!(
        !hosts.contains("\"web-1\""),
        "registered without a place for its credentials: {hosts}"
    );

    disk.free();
    wait_hosts(&c, &["web-1"]);
    assert!(s.join("web-1/state/host.json").exists());
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_state_directory_filled_while_registering_leaves_no_orphan_host() {
    let s = Scratch::new();
    let data = s.join("coordinator");
    let mut c = Coordinator::start(&data);
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let addr = c.authority();
    c.stop_with(Signal::SIGKILL);
    let disk = SmallFs::mount(&s.join("web-1/state"), "1m");
    // Started while nothing listens: the disk fills while it retries its registration.
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_for("a registration retry", Duration::from_secs(30), || {
        web.log().contains("retrying in")
    });
    disk.fill();
    let c = Coordinator::start_on(&data, &addr);
    // Before, it registered, could not write host.json and exited: a host nobody can use.
    wait_hosts(&c, &["web-1"]);
    wait_for("host.json", Duration::from_secs(10), || {
        s.join("web-1/state/host.json").exists()
    });
    assert!(
        web.child.try_wait().expect("try_wait").is_none(),
        "the agent exited: {}",
        web.log()
    );
    let list: serde_json::Value =
        serde_json::from_str(&c.hoist_ok(&["hosts", "list", "--json"])).expect("hosts json");
    assert_eq!(list["hosts"].as_array().map(Vec::len), Some(1), "{list}");

    disk.free();
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: record.sh\n",
        &[("record.sh", RECORD)],
    );
    let (code, _) = c.deploy(&c.push(&dir), true);
    assert_eq!(code, Some(0), "{}", web.log());
    assert_eq!(web.events(), ["ApplicationStart"]);
}

#[test]
fn a_coordinator_stopped_with_sigterm_hands_its_held_polls_back_and_agents_move_to_the_next_url() {
    let s = Scratch::new();
    let data = s.join("coordinator");
    // The agents' second URL: where the database's next server comes up.
    let second = format!("127.0.0.1:{}", hoist_tests::servers::free_port());
    let mut first = Coordinator::start(&data);
    let token = first.shop_web(&["--config", "AllAtOnce"]);
    let names = ["web-1", "web-2", "web-3"];
    let second_url = format!("http://{second}");
    let options = AgentOptions {
        more_urls: &[second_url.as_str()],
        ..AgentOptions::default()
    };
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| Agent::start_with(&s, n, &first, &token, "role: web", options))
        .collect();
    wait_hosts(&first, &names);
    // Each agent is in a long poll (held up to 20 s) a moment after its first one.
    std::thread::sleep(Duration::from_secs(2));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let took = runtime.block_on(first.stop());
    eprintln!("the first coordinator exited {took:?} after SIGTERM with three polls held");
    let log = first.log();
    assert!(
        log.contains("coordinator stopped; 3 held polls handed back"),
        "every held poll is answered at once:\n{log}"
    );
    drop(first);

    let next = Coordinator::start_on(&data, &second);
    let dir = s.join("rev");
    bundle(
        &dir,
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: ran.sh\n",
        &[("ran.sh", "#!/bin/sh\necho ran > \"$OUT/ran\"\n")],
    );
    let revision = next.push(&dir);
    let (code, id) = next.deploy(&revision, true);
    assert_eq!(code, Some(0), "{}", status_text(&next, &id));
    for a in &agents {
        assert_eq!(
            fs::read_to_string(a.dir.join("out/ran")).ok().as_deref(),
            Some("ran\n"),
            "{} deployed through the second URL",
            a.dir.display()
        );
    }
}
