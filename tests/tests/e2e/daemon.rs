//! The agent's daemon side without a coordinator: crash recovery through the state
//! directory, `hoist-agent status`, and an unreachable coordinator.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoist_tests::{alive, bin, debug_secs, run, wait_for, Scratch};

fn status_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = run(Command::new(bin("hoist-agent"))
        .args(["status", "--json", "--config"])
        .arg(config));
    let v = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    (out.status.code(), v)
}

#[test]
fn kill_9_during_a_hook_is_recovered_on_the_next_start() {
    let s = Scratch::new();
    let config = s.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "state_dir: {}\nhooks:\n  kill_grace_secs: 2\n",
            s.join("state").display()
        ),
    )
    .expect("config");
    let bundle = s.join("b");
    fs::create_dir_all(&bundle).expect("mkdir");
    fs::write(
        bundle.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: long.sh\n",
    )
    .expect("appspec");
    let pids = s.join("pids");
    fs::write(
        bundle.join("long.sh"),
        format!(
            "#!/bin/sh\necho $$ >> {p}\nsleep 300 &\necho $! >> {p}\nsleep 300\n",
            p = pids.display()
        ),
    )
    .expect("script");
    fs::set_permissions(bundle.join("long.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut agent = Command::new(bin("hoist-agent"))
        .arg("deploy")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--config")
        .arg(&config)
        .args(["--group", "g"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("the hook to start", Duration::from_secs(30), || {
        fs::read_to_string(&pids)
            .map(|p| p.lines().count() >= 2)
            .unwrap_or(false)
    });
    // The in-flight marker names the running hook's process group.
    let (code, st) = status_json(&config);
    assert_eq!(code, Some(3), "a local deploy is not the daemon");
    assert_eq!(st["in_flight"]["event"], "ApplicationStart");
    assert_eq!(st["in_flight"]["script"], "long.sh");

    agent.kill().expect("kill -9");
    let _ = agent.wait();
    let hook_pids: Vec<i32> = fs::read_to_string(&pids)
        .expect("pids")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        hook_pids.iter().all(|p| alive(*p)),
        "orphans should outlive kill -9"
    );

    // The next start finds the interrupted deployment, kills its hook and records it.
    let empty = s.join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    fs::write(empty.join("appspec.yml"), "version: 0.0\nos: linux\n").expect("appspec");
    let out = run(Command::new(bin("hoist-agent"))
        .arg("deploy")
        .arg("--bundle")
        .arg(&empty)
        .arg("--config")
        .arg(&config)
        .args(["--group", "g"]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("interrupted during ApplicationStart"),
        "{text}"
    );
    for pid in &hook_pids {
        assert!(
            !alive(*pid),
            "orphaned hook process {pid} survived recovery"
        );
    }
    let (_, st) = status_json(&config);
    // Two groups named g: one of application `b`, one of `empty`.
    let deployments: Vec<&serde_json::Value> = st["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["deployments"].as_array().expect("deployments"))
        .collect();
    let failed = deployments
        .iter()
        .find(|d| d["status"] == "failed")
        .expect("the interrupted deployment is listed as failed");
    assert_eq!(failed["failed_event"], "ApplicationStart");
    assert_eq!(
        failed["error"], "agent restarted during ApplicationStart",
        "{failed}"
    );
    assert!(st["in_flight"].is_null());
}

/// A bundle for `app` installing `<app>.txt` into `dest/<app>`, whose ApplicationStop
/// appends the application's name to `dest/<app>/stops.log`.
fn app_bundle(dir: &Path, app: &str, dest: &Path) {
    let target = dest.join(app);
    fs::create_dir_all(dir.join("files")).expect("mkdir");
    fs::write(dir.join("files").join(format!("{app}.txt")), app).expect("file");
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {}\nhooks:\n  ApplicationStop:\n    - location: stop.sh\n",
            target.display()
        ),
    )
    .expect("appspec");
    fs::write(
        dir.join("stop.sh"),
        format!("#!/bin/sh\necho {app} >> {}/stops.log\n", target.display()),
    )
    .expect("script");
    fs::set_permissions(dir.join("stop.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn two_applications_with_a_group_web_each_keep_their_own_files_and_stop_scripts() {
    let s = Scratch::new();
    let dest = s.join("dest");
    let deploy = |app: &str| {
        let bundle = s.join(format!("bundle-{app}"));
        app_bundle(&bundle, app, &dest);
        let out = run(Command::new(bin("hoist-agent"))
            .arg("deploy")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--state-dir")
            .arg(s.join("state"))
            .args(["--app", app, "--group", "web"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap_or_default();
    deploy("shop");
    deploy("billing");
    assert_eq!(
        read("shop/shop.txt"),
        "shop",
        "billing removed shop's files"
    );
    assert_eq!(
        read("shop/stops.log"),
        "",
        "billing ran shop's ApplicationStop"
    );
    deploy("shop");
    deploy("billing");
    assert_eq!(read("shop/stops.log"), "shop\n");
    assert_eq!(read("billing/stops.log"), "billing\n");
    assert_eq!(read("shop/shop.txt"), "shop");
    assert_eq!(read("billing/billing.txt"), "billing");

    let config = s.join("agent.yaml");
    fs::write(
        &config,
        format!("state_dir: {}\n", s.join("state").display()),
    )
    .expect("config");
    let (_, st) = status_json(&config);
    let groups: Vec<(&str, &str, usize)> = st["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap_or(""),
                g["application"].as_str().unwrap_or(""),
                g["deployments"].as_array().map_or(0, |d| d.len()),
            )
        })
        .collect();
    assert_eq!(groups, [("web", "billing", 2), ("web", "shop", 2)], "{st}");
}

#[test]
fn an_unreachable_coordinator_is_retried_with_growing_delays_and_sigterm_exits_cleanly() {
    let s = Scratch::new();
    let config = s.join("agent.yaml");
    // Port 9 on loopback: nothing listens, connections are refused at once.
    fs::write(
        &config,
        format!(
            "coordinator:\n  url: http://127.0.0.1:9\n  registration_token: t\nstate_dir: {}\npoll:\n  initial_backoff_ms: 100\n  max_backoff_secs: 2\n",
            s.join("state").display()
        ),
    )
    .expect("config");
    let log = s.join("agent.log");
    let mut agent = Command::new(bin("hoist-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    wait_for("three retries", Duration::from_secs(30), || {
        fs::read_to_string(&log)
            .map(|l| l.matches("retrying in").count() >= 3)
            .unwrap_or(false)
    });
    let (code, st) = status_json(&config);
    assert_eq!(code, Some(0), "status must say the daemon runs: {st}");
    assert_eq!(st["pid"], agent.id());
    assert!(
        st["last_contact_error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1:9")),
        "{st}"
    );
    // A second agent on the same state directory refuses, naming the first.
    let second = run(Command::new(bin("hoist-agent"))
        .args(["run", "--config"])
        .arg(&config));
    assert_ne!(second.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains(&format!("pid {} (hoist-agent run)", agent.id())));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let t0 = Instant::now();
    let status = agent.wait().expect("wait");
    eprintln!("agent exited {status} {:?} after SIGTERM", t0.elapsed());
    assert_eq!(status.code(), Some(0));
    let text = fs::read_to_string(&log).expect("log");
    let delays: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("retrying in ").nth(1))
        .map(|r| r.split(':').next().unwrap_or(""))
        .collect();
    eprintln!("retry delays: {delays:?}");
    let secs: Vec<f64> = delays.iter().filter_map(|d| debug_secs(d)).collect();
    assert!(secs.len() >= 3, "{delays:?}");
    // Jitter adds at most one base delay, so doubling still shows over two steps.
    assert!(
        secs[2] > secs[0],
        "delays must grow between retries: {delays:?}"
    );
    assert!(
        secs.iter().all(|s| *s <= 4.0),
        "delays must stay near the 2 s cap: {delays:?}"
    );
    let (code, _) = status_json(&config);
    assert_eq!(code, Some(3), "status after exit must say not running");
}
