//! Signed revisions end to end: the real `hoist server`, real `hoist-agent run` daemons with
//! different `trust:` sections, and the operator CLI signing with real minisign keys. A host
//! refuses, before anything is extracted, what its keys do not vouch for, and a coordinator
//! whose database was changed behind its back cannot make it run another bundle.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_tests::fleet::{Agent, AgentOptions, Coordinator};
use hoist_tests::servers::{bare_repo, GitDaemon};
use hoist_tests::{wait_for, Scratch};

/// A bundle whose BeforeInstall and ApplicationStart append `MARKER EVENT` to
/// `$OUT/events.log`.
fn bundle(dir: &Path, marker: &str) {
    fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    fs::write(dir.join("appspec.yml"), APPSPEC).expect("appspec");
    let p = dir.join("scripts/record.sh");
    fs::write(&p, record_script(marker)).expect("script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

const APPSPEC: &str = "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: scripts/record.sh\n  ApplicationStart:\n    - location: scripts/record.sh\n";

fn record_script(marker: &str) -> String {
    format!("#!/bin/sh\necho \"{marker} $LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\n")
}

/// `hoist key generate --out DIR`: the key id.
fn generate(c: &Coordinator, dir: &Path) -> String {
    c.hoist_ok(&["key", "generate", "--out", dir.to_str().expect("utf-8")])
}

/// `hoist push DIR --app APP [--sign-key KEY]` as JSON.
fn push(c: &Coordinator, dir: &Path, app: &str, key: Option<&Path>) -> serde_json::Value {
    let mut args = vec!["push", dir.to_str().expect("utf-8"), "--app", app, "--json"];
    if let Some(k) = key {
        args.extend_from_slice(&["--sign-key", k.to_str().expect("utf-8")]);
    }
    serde_json::from_str(&c.hoist_ok(&args)).expect("revision json")
}

/// Deploys `args` (after `deploy create --app shop --group web`) and waits for the end;
/// returns the deployment id and each host's (state, message).
fn deploy(c: &Coordinator, args: &[&str]) -> (String, Vec<(String, String, String)>) {
    let mut all = vec!["deploy", "create", "--app", "shop", "--group", "web"];
    all.extend_from_slice(args);
    let id = c.hoist_ok(&all);
    wait_for("the deployment to end", Duration::from_secs(60), || {
        let d = status(c, &id);
        !matches!(d["state"].as_str(), Some("in_progress" | "pending"))
    });
    let d = status(c, &id);
    let hosts = d["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            let text = |k: &str| h[k].as_str().unwrap_or_default().to_owned();
            (text("host_name"), text("state"), text("message"))
        })
        .collect();
    (id, hosts)
}

fn status(c: &Coordinator, id: &str) -> serde_json::Value {
    serde_json::from_str(&c.hoist_ok(&["deploy", "status", id, "--json"])).expect("status json")
}

/// Host `name`'s (state, message) in `hosts`.
fn on<'a>(hosts: &'a [(String, String, String)], name: &str) -> (&'a str, &'a str) {
    let h = hosts
        .iter()
        .find(|h| h.0 == name)
        .unwrap_or_else(|| panic!("{name} in {hosts:?}"));
    (&h.1, &h.2)
}

/// The deployment's directory on `agent`'s host.
fn deployment_dir(agent: &Agent, id: &str) -> PathBuf {
    let groups = agent.dir.join("state/deployment-groups");
    for group in fs::read_dir(&groups).expect("groups").flatten() {
        let dir = group.path().join("deployments").join(id);
        if dir.is_dir() {
            return dir;
        }
    }
    panic!("no directory of deployment {id} under {}", groups.display())
}

/// Whether anything of deployment `id` was extracted (or checked out) on `agent`'s host.
fn extracted(agent: &Agent, id: &str) -> bool {
    let dir = deployment_dir(agent, id);
    dir.join("archive").exists()
        || dir
            .join("download")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
}

fn hook_log(agent: &Agent, id: &str) -> String {
    fs::read_to_string(deployment_dir(agent, id).join("logs/hooks.log")).unwrap_or_default()
}

fn trust(keys: &[&Path], require: bool) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
    format!(
        "trust:\n  keys: [{}]\n  require_signature: {require}\n",
        keys.join(", ")
    )
}

fn start(s: &Scratch, name: &str, c: &Coordinator, token: &str, yaml: &str) -> Agent {
    let options = AgentOptions {
        extra_yaml: yaml,
        ..AgentOptions::default()
    };
    Agent::start_with(s, name, c, token, "role: web", options)
}

#[test]
fn hosts_deploy_what_a_trusted_key_signed_and_refuse_the_rest_before_extraction() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let (a_dir, b_dir) = (s.join("key-a"), s.join("key-b"));
    let (a, b) = (generate(&c, &a_dir), generate(&c, &b_dir));
    let (a_pub, b_pub) = (a_dir.join("hoist.pub"), b_dir.join("hoist.pub"));
    let (a_key, b_key) = (a_dir.join("hoist.key"), b_dir.join("hoist.key"));

    let strict = start(&s, "strict", &c, &token, &trust(&[&a_pub], true));
    let rotating = start(&s, "rotating", &c, &token, &trust(&[&a_pub, &b_pub], true));
    let lenient = start(&s, "lenient", &c, &token, &trust(&[&a_pub], false));
    let plain = start(&s, "plain", &c, &token, "");
    wait_for("four hosts online", Duration::from_secs(30), || {
        let text = c.hoist_ok(&["hosts", "list", "--json"]);
        ["strict", "rotating", "lenient", "plain"]
            .iter()
            .all(|h| text.contains(h))
    });

    // Signed by a trusted key: every host deploys it.
    let v1 = s.join("v1");
    bundle(&v1, "v1");
    let signed = push(&c, &v1, "shop", Some(&a_key));
    let (id, hosts) = deploy(&c, &["--revision", signed["id"].as_str().expect("id")]);
    for (name, state, message) in &hosts {
        assert_eq!(state, "succeeded", "{name}: {message}");
    }
    for agent in [&strict, &rotating, &lenient, &plain] {
        assert!(
            extracted(agent, &id),
            "the success is seen where the helpers look"
        );
    }
    assert!(hook_log(&strict, &id).contains(&format!("signature by trusted key {a} verified")));
    assert_eq!(strict.events(), ["v1 BeforeInstall", "v1 ApplicationStart"]);

    // Signed by another key: only the host that trusts it too (a rotation) and the host
    // that trusts nothing run it.
    let v2 = s.join("v2");
    bundle(&v2, "v2");
    let by_b = push(&c, &v2, "shop", Some(&b_key));
    let (id, hosts) = deploy(&c, &["--revision", by_b["id"].as_str().expect("id")]);
    assert_eq!(on(&hosts, "rotating").0, "succeeded");
    assert_eq!(on(&hosts, "plain").0, "succeeded");
    for name in ["strict", "lenient"] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(
            message.contains("unknown key")
                && message.contains(&b)
                && message.contains(&format!("trusted keys: {a}")),
            "{name}: {message}"
        );
    }
    assert!(!extracted(&strict, &id) && !extracted(&lenient, &id));
    assert!(
        !strict.events().iter().any(|e| e.starts_with("v2")),
        "{:?}",
        strict.events()
    );

    // Unsigned: refused where a signature is required, a warning where it is not.
    let v3 = s.join("v3");
    bundle(&v3, "v3");
    let unsigned = push(&c, &v3, "shop", None);
    assert!(unsigned.get("signature").is_none());
    let (id, hosts) = deploy(&c, &["--revision", unsigned["id"].as_str().expect("id")]);
    for name in ["strict", "rotating"] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(message.contains("no signature"), "{name}: {message}");
    }
    assert!(!extracted(&strict, &id) && !extracted(&rotating, &id));
    assert_eq!(on(&hosts, "lenient").0, "succeeded");
    assert!(
        hook_log(&lenient, &id).contains("warning: no signature"),
        "{}",
        hook_log(&lenient, &id)
    );
    assert!(lenient.events().contains(&"v3 ApplicationStart".to_owned()));
    assert_eq!(on(&hosts, "plain").0, "succeeded");
    assert!(plain.events().contains(&"v3 ApplicationStart".to_owned()));

    // Signed elsewhere (a CI job) with an expiry that has passed by the time hosts look.
    let sha = unsigned["revision"]["sha256"].as_str().expect("sha256");
    let sig = s.join("expiring.json");
    c.hoist_ok(&[
        "sign",
        "--app",
        "shop",
        "--sha256",
        sha,
        "--key",
        a_key.to_str().expect("utf-8"),
        "--expires",
        "1s",
        "--out",
        sig.to_str().expect("utf-8"),
    ]);
    std::thread::sleep(Duration::from_millis(2100));
    let (id, hosts) = deploy(
        &c,
        &[
            "--revision",
            unsigned["id"].as_str().expect("id"),
            "--signature",
            sig.to_str().expect("utf-8"),
        ],
    );
    for name in ["strict", "rotating", "lenient"] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(message.contains("expired"), "{name}: {message}");
        assert!(!extracted(
            if name == "strict" {
                &strict
            } else if name == "rotating" {
                &rotating
            } else {
                &lenient
            },
            &id
        ));
    }
    assert_eq!(on(&hosts, "plain").0, "succeeded");
}

/// `UPDATE revisions SET revision_json = ... WHERE id = ...` in the coordinator's database,
/// behind its back.
fn tamper(c: &Coordinator, sql: &str, params: &[&str]) {
    let db = c.data_dir.join("hoist.db");
    let conn = rusqlite::Connection::open(&db).expect("open the coordinator's database");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let changed = conn
        .execute(sql, rusqlite::params_from_iter(params.iter()))
        .expect("tamper");
    assert_eq!(changed, 1, "{sql}");
}

#[test]
fn a_compromised_coordinator_cannot_make_a_trusting_host_run_what_nobody_signed() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    c.hoist_ok(&["app", "create", "billing"]);
    let key_dir = s.join("key");
    let id = generate(&c, &key_dir);
    let (public, secret) = (key_dir.join("hoist.pub"), key_dir.join("hoist.key"));
    let strict = start(&s, "strict", &c, &token, &trust(&[&public], true));
    let lenient = start(&s, "lenient", &c, &token, &trust(&[&public], false));
    wait_for("two hosts online", Duration::from_secs(30), || {
        let text = c.hoist_ok(&["hosts", "list", "--json"]);
        ["strict", "lenient"].iter().all(|h| text.contains(h))
    });

    // A signed revision, and an evil bundle pushed unsigned (so it is in the bundle store
    // under its own sha256).
    let good = s.join("good");
    bundle(&good, "good");
    let signed = push(&c, &good, "shop", Some(&secret));
    let evil = s.join("evil");
    bundle(&evil, "evil");
    let evil = push(&c, &evil, "shop", None);
    let (evil_sha, evil_size) = (
        evil["revision"]["sha256"]
            .as_str()
            .expect("sha256")
            .to_owned(),
        evil["revision"]["size"].as_u64().expect("size").to_string(),
    );
    // The signed revision now names the evil bundle; its signature is left as it was.
    tamper(
        &c,
        "UPDATE revisions SET revision_json = json_set(revision_json, '$.sha256', ?1, '$.size', \
         json(?2)) WHERE id = ?3",
        &[&evil_sha, &evil_size, signed["id"].as_str().expect("id")],
    );
    let (dep, hosts) = deploy(&c, &["--revision", signed["id"].as_str().expect("id")]);
    for (name, agent) in [("strict", &strict), ("lenient", &lenient)] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(
            message.contains("wrong bundle")
                && message.contains(&evil_sha)
                && message.contains(signed["revision"]["sha256"].as_str().expect("sha"))
                && message.contains(&id),
            "{name}: {message}"
        );
        assert!(!extracted(agent, &dep), "{name} extracted the evil bundle");
        assert!(agent.events().is_empty(), "{name}: {:?}", agent.events());
    }

    // A signature of another application's revision, swapped in.
    let billing = push(&c, &good, "billing", Some(&secret));
    let victim = push(&c, &good, "shop", None);
    tamper(
        &c,
        "UPDATE revisions SET revision_json = (SELECT revision_json FROM revisions WHERE id = ?1) \
         WHERE id = ?2",
        &[
            billing["id"].as_str().expect("id"),
            victim["id"].as_str().expect("id"),
        ],
    );
    let (dep, hosts) = deploy(&c, &["--revision", victim["id"].as_str().expect("id")]);
    for (name, agent) in [("strict", &strict), ("lenient", &lenient)] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(
            message.contains("wrong application") && message.contains("billing"),
            "{name}: {message}"
        );
        assert!(!extracted(agent, &dep));
    }

    // Git: a signature naming the commit deploys; the revision moved to another commit
    // behind the coordinator's back is refused before it is fetched.
    let git_root = s.join("git");
    fs::create_dir_all(&git_root).expect("mkdir");
    let record = record_script("git");
    let evil_record = record_script("evil-git");
    let commits = bare_repo(
        &git_root,
        "shop.git",
        &[
            &[
                ("appspec.yml", APPSPEC),
                ("scripts/record.sh", record.as_str()),
            ],
            &[("scripts/record.sh", evil_record.as_str())],
        ],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let daemon = rt.block_on(GitDaemon::start(&git_root));
    let repo = daemon.url("shop.git");
    let sig = s.join("commit.json");
    c.hoist_ok(&[
        "sign",
        "--app",
        "shop",
        "--commit",
        &commits[0],
        "--repository",
        &repo,
        "--key",
        secret.to_str().expect("utf-8"),
        "--out",
        sig.to_str().expect("utf-8"),
    ]);
    let (dep, hosts) = deploy(
        &c,
        &[
            "--git",
            &repo,
            "--commit",
            &commits[0],
            "--signature",
            sig.to_str().expect("utf-8"),
        ],
    );
    for (name, state, message) in &hosts {
        assert_eq!(state, "succeeded", "{name}: {message}");
    }
    assert!(hook_log(&strict, &dep).contains(&format!("commit {}", commits[0])));
    assert_eq!(
        strict.events(),
        ["git BeforeInstall", "git ApplicationStart"]
    );

    let git_revision = status(&c, &dep)["revision_id"]
        .as_str()
        .expect("revision id")
        .to_owned();
    tamper(
        &c,
        "UPDATE revisions SET revision_json = json_set(revision_json, '$.commit', ?1) WHERE id = ?2",
        &[&commits[1], &git_revision],
    );
    let (dep, hosts) = deploy(&c, &["--revision", &git_revision]);
    for (name, agent) in [("strict", &strict), ("lenient", &lenient)] {
        let (state, message) = on(&hosts, name);
        assert_eq!(state, "failed", "{name}");
        assert!(
            message.contains("wrong bundle") && message.contains(&commits[1]),
            "{name}: {message}"
        );
        assert!(!extracted(agent, &dep));
        assert!(
            !agent.events().iter().any(|e| e.starts_with("evil")),
            "{:?}",
            agent.events()
        );
    }
    drop(daemon);
}

/// `hoist ARGS` for the commands that need no coordinator (`key generate`, `sign`).
fn hoist_local(args: &[&str]) -> std::process::Output {
    hoist_tests::run(std::process::Command::new(hoist_tests::bin("hoist")).args(args))
}

#[test]
fn a_local_deploy_checks_the_signature_file_against_the_configs_keys() {
    let s = Scratch::new();
    let keys = s.join("keys");
    let out = hoist_local(&["key", "generate", "--out", keys.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = s.join("bundle");
    bundle(&dir, "local");
    let archive = s.join("bundle.tgz");
    let tar = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    let sha = hoist_tests::servers::sha256_hex(&fs::read(&archive).expect("archive"));
    let sig = s.join("bundle.sig.json");
    let sign = |app: &str| {
        hoist_local(&[
            "sign",
            "--app",
            app,
            "--sha256",
            &sha,
            "--key",
            keys.join("hoist.key").to_str().expect("utf-8"),
            "--out",
            sig.to_str().expect("utf-8"),
        ])
    };
    assert!(sign("shop").status.success());
    fs::create_dir_all(s.join("out")).expect("mkdir");
    fs::write(
        s.join("hook.env"),
        format!("OUT={}\n", s.join("out").display()),
    )
    .expect("env");
    let config = s.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "state_dir: {}\nhooks:\n  environment_file: {}\n{}",
            s.join("state").display(),
            s.join("hook.env").display(),
            trust(&[&keys.join("hoist.pub")], true)
        ),
    )
    .expect("config");
    let deploy = |bundle: &Path, extra: &[&str]| {
        hoist_tests::run(
            std::process::Command::new(hoist_tests::bin("hoist-agent"))
                .arg("deploy")
                .arg("--bundle")
                .arg(bundle)
                .arg("--config")
                .arg(&config)
                .args(["--app", "shop", "--group", "local"])
                .args(extra),
        )
    };
    let events = || fs::read_to_string(s.join("out/events.log")).unwrap_or_default();

    let unsigned = deploy(&archive, &[]);
    assert_eq!(unsigned.status.code(), Some(1));
    let text = String::from_utf8_lossy(&unsigned.stdout);
    assert!(
        text.contains("no signature") && text.contains(&id),
        "{text}"
    );
    let directory = deploy(&dir, &[]);
    assert_eq!(directory.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&directory.stdout).contains("a local directory"));
    assert_eq!(events(), "", "nothing ran");

    let signed = deploy(&archive, &["--signature", sig.to_str().expect("utf-8")]);
    assert_eq!(
        signed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&signed.stdout)
    );
    assert_eq!(events(), "local BeforeInstall\nlocal ApplicationStart\n");

    assert!(sign("billing").status.success());
    let other_app = deploy(&archive, &["--signature", sig.to_str().expect("utf-8")]);
    assert_eq!(other_app.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other_app.stdout).contains("wrong application"));

    // `status` says what this host trusts.
    let status = hoist_tests::run(
        std::process::Command::new(hoist_tests::bin("hoist-agent"))
            .args(["status", "--config"])
            .arg(&config),
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!(
            "trust:        trusted signing keys: {id}; a signature is required"
        )),
        "{text}"
    );

    // A key file that is not a key stops the command as a config error, naming the file.
    let junk = s.join("junk.pub");
    fs::write(&junk, "hello\n").expect("junk");
    fs::write(
        &config,
        format!(
            "state_dir: {}\n{}",
            s.join("state").display(),
            trust(&[&junk], true)
        ),
    )
    .expect("config");
    let bad = deploy(&archive, &[]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("junk.pub") && err.contains("trust.keys[0]"),
        "{err}"
    );
}

/// A bundle with `hoist.releases` (`current` under `srv`): `files/version.txt` into it, and
/// ApplicationStart appending `MARKER ApplicationStart` to `$OUT/events.log`.
fn release_bundle(dir: &Path, marker: &str, srv: &Path) {
    fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    fs::create_dir_all(dir.join("files")).expect("mkdir");
    fs::write(dir.join("files/version.txt"), marker).expect("file");
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {d}/current\n\
             hooks:\n  ApplicationStart:\n    - location: scripts/record.sh\n\
             hoist:\n  releases:\n    current: {d}/current\n",
            d = srv.display()
        ),
    )
    .expect("appspec");
    let p = dir.join("scripts/record.sh");
    fs::write(&p, record_script(marker)).expect("script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_kept_release_is_switched_back_to_only_under_a_trusted_signature() {
    let s = Scratch::new();
    let c = Coordinator::start(&s.join("coordinator"));
    let token = c.shop_web(&["--config", "AllAtOnce"]);
    let keys = s.join("keys");
    let key_id = generate(&c, &keys);
    let strict = start(
        &s,
        "strict",
        &c,
        &token,
        &trust(&[&keys.join("hoist.pub")], true),
    );
    wait_for("the host online", Duration::from_secs(30), || {
        c.hoist_ok(&["hosts", "list", "--json"]).contains("strict")
    });
    let srv = s.join("srv");
    let current = srv.join("current");
    let (v1, v2) = (s.join("v1"), s.join("v2"));
    release_bundle(&v1, "v1", &srv);
    release_bundle(&v2, "v2", &srv);
    let r1 = push(&c, &v1, "shop", Some(&keys.join("hoist.key")));
    let r2 = push(&c, &v2, "shop", Some(&keys.join("hoist.key")));
    let (r1, r2) = (
        r1["id"].as_str().expect("id").to_owned(),
        r2["id"].as_str().expect("id").to_owned(),
    );
    let (d1, hosts) = deploy(&c, &["--revision", &r1]);
    assert_eq!(on(&hosts, "strict").0, "succeeded", "{hosts:?}");
    let (d2, hosts) = deploy(&c, &["--revision", &r2]);
    assert_eq!(on(&hosts, "strict").0, "succeeded", "{hosts:?}");
    assert_eq!(
        fs::read_link(&current).expect("current is a link"),
        srv.join("releases").join(&d2)
    );

    // The first revision again, signed as pushed: switched back to, its signature checked.
    let (d3, hosts) = deploy(&c, &["--revision", &r1]);
    assert_eq!(on(&hosts, "strict").0, "succeeded", "{hosts:?}");
    assert_eq!(
        fs::read_link(&current).expect("current is a link"),
        srv.join("releases").join(&d1)
    );
    let log = hook_log(&strict, &d3);
    assert!(
        log.contains("is kept on this host as release")
            && log.contains(&format!("signature by trusted key {key_id} verified")),
        "{log}"
    );

    // The second revision's signature dropped behind the coordinator's back: the host does
    // not switch back to it, although it keeps it, and current stays where it was.
    tamper(
        &c,
        "UPDATE revisions SET revision_json = json_remove(revision_json, '$.signature') \
         WHERE id = ?1",
        &[&r2],
    );
    let (_, hosts) = deploy(&c, &["--revision", &r2]);
    let (state, message) = on(&hosts, "strict");
    assert_eq!(state, "failed");
    assert!(message.contains("no signature"), "{message}");
    assert_eq!(
        fs::read_link(&current).expect("current is a link"),
        srv.join("releases").join(&d1)
    );
    assert_eq!(
        fs::read_to_string(current.join("version.txt")).expect("version"),
        "v1"
    );
    assert_eq!(
        strict.events(),
        [
            "v1 ApplicationStart",
            "v2 ApplicationStart",
            "v1 ApplicationStart"
        ]
    );
}
