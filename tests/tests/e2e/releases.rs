//! Releases on the host (`hoist.releases`) with a real `hoist server` and `hoist-agent run`:
//! two deployments leave `current` a symlink to the second release with the first kept
//! whole; during the second's Install `current` still serves the first; redeploying the
//! first revision (and `--previous`) switches back without a request to the bundle route;
//! `hoist-agent rollback` switches on the box and is told to the coordinator; `kill -9` of
//! the agent around the switch leaves a complete release behind `current`; a Git commit
//! kept as a release is switched back to without a request to the Git server; a bundle
//! without the section installs as before.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hoist_tests::coordinator::OPERATOR_TOKEN;
use hoist_tests::fleet::{Agent, Coordinator};
use hoist_tests::{bin, run, wait_for, Scratch};
use nix::sys::signal::Signal;

/// A revision `version` with `hoist.releases` (current `srv/current`): `site/` holds
/// index.html (`version`) and a file only it has; BeforeInstall and AfterInstall record what
/// they see through `current` in `$OUT/seen-<event>`; ApplicationStop and ApplicationStart
/// append "stop <version>" / "start <version> <deployment>" to `$OUT/hooks.log`. `extra`
/// adds scripts (event, body).
fn release_bundle(dir: &Path, srv: &Path, version: &str, extra: &[(&str, &str)]) {
    let current = srv.join("current");
    let mut hooks = String::new();
    let mut files: Vec<(String, String)> = vec![
        ("site/index.html".into(), format!("{version}\n")),
        (format!("site/only-{version}.txt"), String::new()),
        (
            "scripts/stop.sh".into(),
            format!("#!/bin/sh\necho stop {version} >> \"$OUT/hooks.log\"\n"),
        ),
        (
            "scripts/start.sh".into(),
            format!("#!/bin/sh\necho start {version} $DEPLOYMENT_ID >> \"$OUT/hooks.log\"\n"),
        ),
        (
            "scripts/seen.sh".into(),
            format!(
                "#!/bin/sh\n(ls {c}; cat {c}/index.html) > \"$OUT/seen-$LIFECYCLE_EVENT\" 2>/dev/null\nexit 0\n",
                c = current.display()
            ),
        ),
    ];
    let mut events: Vec<(&str, String)> = vec![
        ("ApplicationStop", "scripts/stop.sh".into()),
        ("BeforeInstall", "scripts/seen.sh".into()),
        ("AfterInstall", "scripts/seen.sh".into()),
        ("ApplicationStart", "scripts/start.sh".into()),
    ];
    for (i, (event, body)) in extra.iter().enumerate() {
        let path = format!("scripts/extra-{i}.sh");
        files.push((path.clone(), (*body).to_string()));
        events.push((event, path));
    }
    for (event, _) in &events {
        if !hooks.contains(&format!("  {event}:")) {
            hooks.push_str(&format!("  {event}:\n"));
            for (_, path) in events.iter().filter(|(e, _)| e == event) {
                hooks.push_str(&format!("    - location: {path}\n"));
            }
        }
    }
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\nhooks:\n{hooks}hoist:\n  releases:\n    current: {}\n    keep: 3\n",
            current.display(),
            current.display()
        ),
    )
    .expect("appspec");
    for (path, body) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// GET requests the coordinator answered on its bundle route, from `/metrics`.
fn bundle_downloads(c: &Coordinator) -> u64 {
    let out = run(Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {OPERATOR_TOKEN}"))
        .arg(format!("{}/metrics", c.url)));
    assert!(out.status.success(), "GET /metrics failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("hoist_http_requests_total{")
                && l.contains("route=\"/v1/bundles/{sha256}\"")
                && l.contains("method=\"GET\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn deploy_ok(c: &Coordinator, args: &[&str]) -> String {
    let mut all = vec![
        "deploy", "create", "--app", "shop", "--group", "web", "--wait",
    ];
    all.extend_from_slice(args);
    let out = c.hoist(&all);
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        out.status.success(),
        "deploy {args:?} failed: {}",
        c.hoist_ok(&["deploy", "status", &id])
    );
    id
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn target(p: &Path) -> PathBuf {
    fs::read_link(p).unwrap_or_else(|e| panic!("{} is not a symlink: {e}", p.display()))
}

/// The agent's record of deployment `id` (its `result.json`).
fn agent_record(a: &Agent, id: &str) -> serde_json::Value {
    let groups = a.dir.join("state/deployment-groups");
    for g in fs::read_dir(&groups).expect("groups").flatten() {
        let p = g.path().join("deployments").join(id).join("result.json");
        if p.is_file() {
            return serde_json::from_str(&read(&p)).expect("record json");
        }
    }
    panic!("no record of {id} under {}", groups.display())
}

fn event<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} in {record}"))
}

fn web1_sync(c: &Coordinator) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&c.hoist_ok(&["hosts", "list", "--json"])).expect("hosts json");
    list["hosts"][0]["groups"][0].clone()
}

#[test]
fn releases_switch_roll_back_without_a_download_and_a_rollback_on_the_box_is_reported() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&[]);
    let srv = s.join("srv");
    let current = srv.join("current");
    let mut web = Agent::start(&s, "web-1", &c, &token, "role: web");
    wait_for("web-1 registered", Duration::from_secs(30), || {
        c.hoist_ok(&["hosts", "list"]).contains("web-1")
    });
    let out_dir = web.dir.join("out");

    // Nothing deployed yet: no previous revision.
    let out = c.hoist(&[
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--previous",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no successful revision before its current one"),
        "{err}"
    );

    let (v1, v2) = (s.join("v1"), s.join("v2"));
    release_bundle(&v1, &srv, "v1", &[]);
    release_bundle(&v2, &srv, "v2", &[]);
    let (r1, r2) = (c.push(&v1), c.push(&v2));
    let d1 = deploy_ok(&c, &["--revision", &r1]);
    assert_eq!(target(&current), srv.join("releases").join(&d1));
    let d2 = deploy_ok(&c, &["--revision", &r2]);
    assert_eq!(target(&current), srv.join("releases").join(&d2));
    let mut kept: Vec<String> = fs::read_dir(srv.join("releases").join(&d1))
        .expect("first release kept")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["index.html", "only-v1.txt"],
        "the first release is kept whole"
    );
    // Before the second's Install, `current` served the first revision, whole; after it, the
    // second.
    assert_eq!(
        read(&out_dir.join("seen-BeforeInstall")),
        "index.html\nonly-v1.txt\nv1\n"
    );
    assert_eq!(
        read(&out_dir.join("seen-AfterInstall")),
        "index.html\nonly-v2.txt\nv2\n"
    );
    // A kept release keeps its extracted revision, not the archive it was downloaded as.
    let d1_dir = fs::read_dir(web.dir.join("state/deployment-groups"))
        .expect("groups")
        .flatten()
        .map(|g| g.path().join("deployments").join(&d1))
        .find(|d| d.is_dir())
        .expect("d1's deployment directory");
    assert!(d1_dir.join("archive/appspec.yml").is_file());
    assert!(!d1_dir.join("download").exists());
    let downloads = bundle_downloads(&c);
    assert!(
        downloads >= 2,
        "each new revision was downloaded: {downloads}"
    );

    // The first revision again: switched back, nothing downloaded, v2 stopped, v1 started.
    let d3 = deploy_ok(&c, &["--revision", &r1]);
    assert_eq!(target(&current), srv.join("releases").join(&d1));
    assert_eq!(
        bundle_downloads(&c),
        downloads,
        "the bundle route saw no request"
    );
    let log = read(&out_dir.join("hooks.log"));
    assert!(log.ends_with(&format!("stop v2\nstart v1 {d3}\n")), "{log}");
    let record = agent_record(&web, &d3);
    assert_eq!(
        event(&record, "DownloadBundle")["status"],
        "skipped",
        "{record}"
    );
    assert!(
        event(&record, "DownloadBundle")["message"]
            .as_str()
            .is_some_and(|m| m.contains("is kept on this host as release")),
        "{record}"
    );
    assert_eq!(event(&record, "BeforeInstall")["status"], "skipped");
    assert_eq!(event(&record, "Install")["status"], "succeeded");

    // --previous: the group's successful revision before the current one (v2 now).
    let d4 = deploy_ok(&c, &["--previous"]);
    let d = c.hoist_ok(&["deploy", "status", &d4, "--json"]);
    let d: serde_json::Value = serde_json::from_str(&d).expect("json");
    assert_eq!(d["revision_id"], r2.as_str(), "{d}");
    assert_eq!(target(&current), srv.join("releases").join(&d2));
    assert_eq!(bundle_downloads(&c), downloads);
    assert_eq!(web1_sync(&c)["sync"], "in_sync");

    // On the box: the daemon holds the host lock, so the rollback refuses while it runs.
    let agent_config = web.config.clone();
    let rollback = |extra: &[&str]| {
        let mut cmd = Command::new(bin("hoist-agent"));
        cmd.args(["rollback", "--app", "shop", "--group", "web", "--config"])
            .arg(&agent_config)
            .args(extra);
        run(&mut cmd)
    };
    let out = rollback(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hoist-agent run"), "names the holder: {err}");
    web.stop_with(Signal::SIGTERM);
    let out = rollback(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(target(&current), srv.join("releases").join(&d1), "{text}");
    assert!(text.contains("told the coordinator"), "{text}");
    let sync = web1_sync(&c);
    assert_eq!(sync["sync"], "out_of_sync", "{sync}");
    assert!(
        sync["error"]
            .as_str()
            .is_some_and(|e| e.contains("rolled back on the host") && e.contains(&d1)),
        "{sync}"
    );
    let st = web.status();
    let group = &st["groups"][0];
    assert_eq!(group["releases"]["current"], d1.as_str(), "{st}");
    assert!(
        group["deployments"][0]["deployment_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("rollback-")),
        "{st}"
    );
    let out = rollback(&["--to", "no-such"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such release kept"));

    // Back under the daemon: held out of sync (no catch-up) until an operator retries.
    web.restart();
    c.hoist_ok(&["hosts", "retry", "web-1"]);
    wait_for("caught up to the target", Duration::from_secs(60), || {
        fs::read_link(&current).ok() == Some(srv.join("releases").join(&d2))
    });
    wait_for("in sync again", Duration::from_secs(30), || {
        web1_sync(&c)["sync"] == "in_sync"
    });
    assert_eq!(
        bundle_downloads(&c),
        downloads,
        "the catch-up switched back too"
    );
}

#[test]
fn kill_9_around_the_switch_leaves_current_at_a_complete_release() {
    let s = Scratch::new();
    let srv = s.join("srv");
    let current = srv.join("current");
    let state = s.join("state");
    let out = s.join("out");
    fs::create_dir_all(&out).expect("mkdir");
    let config = s.join("agent.yaml");
    let env = s.join("hook.env");
    fs::write(&env, format!("OUT={}\n", out.display())).expect("env");
    fs::write(
        &config,
        format!(
            "state_dir: {}\nhooks:\n  environment_file: {}\n",
            state.display(),
            env.display()
        ),
    )
    .expect("config");
    let deploy = |bundle: &Path| {
        run(Command::new(bin("hoist-agent"))
            .args(["deploy", "--app", "shop", "--group", "web", "--config"])
            .arg(&config)
            .arg("--bundle")
            .arg(bundle))
    };
    let complete = |version: &str| -> bool {
        let mut names: Vec<String> = fs::read_dir(&current)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names == ["index.html".to_string(), format!("only-{version}.txt")]
            && read(&current.join("index.html")) == format!("{version}\n")
    };
    let v1 = s.join("v1");
    release_bundle(&v1, &srv, "v1", &[]);
    let o = deploy(&v1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(complete("v1"));

    // Killed before the switch (BeforeInstall), then right after it (AfterInstall): each
    // time `current` is a whole release, the old one or the new one, and the next
    // deployment's recovery names it.
    let kill = "#!/bin/sh\nkill -KILL \"$PPID\"\nsleep 5\n";
    for (n, (event, expect)) in [("BeforeInstall", "v1"), ("AfterInstall", "v2")]
        .into_iter()
        .enumerate()
    {
        let b = s.join(format!("killed-{n}"));
        release_bundle(&b, &srv, "v2", &[(event, kill)]);
        let o = deploy(&b);
        assert_eq!(o.status.code(), None, "killed by SIGKILL");
        assert!(
            complete(expect),
            "after a kill in {event}: {:?}",
            fs::read_link(&current)
        );
        let v3 = s.join(format!("v3-{n}"));
        release_bundle(&v3, &srv, "v3", &[]);
        let o = deploy(&v3);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{text}");
        assert!(complete("v3"), "{text}");
        let st: serde_json::Value = serde_json::from_slice(
            &run(Command::new(bin("hoist-agent"))
                .args(["status", "--json", "--config"])
                .arg(&config))
            .stdout,
        )
        .expect("status json");
        let interrupted = st["groups"][0]["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .find(|d| d["status"] == "failed")
            .cloned()
            .unwrap_or_default();
        let error = interrupted["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("agent restarted during {event}; "))
                && error.contains("points to the complete release"),
            "{st}"
        );
    }

    // Killed at moments spread over Install of a larger release: never a partial `current`.
    let big = s.join("big");
    release_bundle(&big, &srv, "big", &[]);
    for i in 0..400 {
        fs::write(big.join(format!("site/f{i:03}.txt")), "x".repeat(4096)).expect("file");
    }
    let mut seen_old = false;
    for delay_ms in [0u64, 20, 40, 80, 120, 200, 300, 500] {
        let _ = fs::remove_file(out.join("seen-BeforeInstall"));
        let mut child = Command::new(bin("hoist-agent"))
            .args(["deploy", "--app", "shop", "--group", "web", "--config"])
            .arg(&config)
            .arg("--bundle")
            .arg(&big)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        wait_for("Install started", Duration::from_secs(30), || {
            out.join("seen-BeforeInstall").exists() || child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_file(out.join("seen-BeforeInstall"));
        let link = fs::read_link(&current).expect("current is a link");
        let names = fs::read_dir(&link).expect("release").flatten().count();
        if read(&current.join("index.html")) == "big\n" {
            assert_eq!(names, 402, "a whole new release: {}", link.display());
        } else {
            seen_old = true;
            assert!(
                complete("v3"),
                "the previous release, whole: {}",
                link.display()
            );
        }
        // The next run recovers, then puts `current` back on v3 for the next kill.
        let v3 = s.join(format!("v3-big-{delay_ms}"));
        release_bundle(&v3, &srv, "v3", &[]);
        assert!(deploy(&v3).status.success());
    }
    assert!(seen_old, "some kill landed before the switch");
}

#[test]
fn a_bundle_without_the_section_installs_in_place_as_before() {
    let s = Scratch::new();
    let dest = s.join("www");
    let bundle = s.join("plain");
    fs::create_dir_all(bundle.join("site")).expect("mkdir");
    fs::write(bundle.join("site/index.html"), "plain\n").expect("file");
    fs::write(
        bundle.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
            dest.display()
        ),
    )
    .expect("appspec");
    let state = s.join("state");
    let o = run(Command::new(bin("hoist-agent"))
        .args(["deploy", "--app", "shop", "--bundle"])
        .arg(&bundle)
        .arg("--state-dir")
        .arg(&state));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let meta = fs::symlink_metadata(&dest).expect("installed");
    assert!(
        meta.is_dir() && !meta.file_type().is_symlink(),
        "a plain directory"
    );
    assert_eq!(read(&dest.join("index.html")), "plain\n");
    assert!(!s.join("releases").exists(), "no releases/ beside it");
    let groups: Vec<PathBuf> = fs::read_dir(state.join("deployment-groups"))
        .expect("groups")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(groups.len(), 1);
    assert!(
        !groups[0].join("releases.json").exists(),
        "no record of releases"
    );
}

#[test]
fn a_git_commit_kept_as_a_release_is_switched_back_to_without_fetching() {
    let s = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let srv = s.join("srv");
    let current = srv.join("current");
    // Two commits of one release bundle: the files of v1, then those of v2 over them.
    let (v1, v2) = (s.join("v1"), s.join("v2"));
    release_bundle(&v1, &srv, "v1", &[]);
    release_bundle(&v2, &srv, "v2", &[]);
    let files = |dir: &Path| -> Vec<(String, String)> {
        hoist_tests::walk(dir)
            .into_iter()
            .filter(|p| p.is_file())
            .map(|p| {
                let rel = p.strip_prefix(dir).expect("inside").display().to_string();
                (rel, read(&p))
            })
            .collect()
    };
    let (f1, mut f2) = (files(&v1), files(&v2));
    // The second commit writes v2's files over v1's (it removes none): index.html tells them
    // apart.
    f2.retain(|(p, _)| !p.starts_with("site/only-"));
    let r1: Vec<(&str, &str)> = f1.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let r2: Vec<(&str, &str)> = f2.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let git_root = s.join("git");
    fs::create_dir_all(&git_root).expect("mkdir");
    let commits = hoist_tests::servers::bare_repo(&git_root, "app.git", &[&r1, &r2]);
    let server = rt.block_on(hoist_tests::servers::start_git_http(&git_root, true));
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&[]);
    let extra = format!(
        "git:\n  username: {}\n  password: {}\n  hosts: [127.0.0.1]\n",
        hoist_tests::servers::GIT_HTTP_USER,
        hoist_tests::servers::GIT_HTTP_PASSWORD
    );
    let _web = Agent::start_with(
        &s,
        "web-1",
        &c,
        &token,
        "role: web",
        hoist_tests::fleet::AgentOptions {
            extra_yaml: &extra,
            ..Default::default()
        },
    );
    wait_for("web-1 registered", Duration::from_secs(30), || {
        c.hoist_ok(&["hosts", "list"]).contains("web-1")
    });
    let url = server.url("/app.git");
    let d1 = deploy_ok(&c, &["--git", &url, "--commit", &commits[0]]);
    let d2 = deploy_ok(&c, &["--git", &url, "--commit", &commits[1]]);
    assert_eq!(target(&current), srv.join("releases").join(&d2));
    assert_eq!(read(&current.join("index.html")), "v2\n");
    let fetched = server.requests().len();
    assert!(fetched > 0, "the commits were fetched");

    deploy_ok(&c, &["--git", &url, "--commit", &commits[0]]);
    assert_eq!(target(&current), srv.join("releases").join(&d1));
    assert_eq!(read(&current.join("index.html")), "v1\n");
    assert_eq!(
        server.requests().len(),
        fetched,
        "the Git server saw no request"
    );
}
