//! Deployment variables and pipelines over the real `hoist server` and real agents: hooks
//! see a deployment's variables (the operator's environment file never overrides them), a
//! release moves stage by stage with its stage's variables, waits at a manual gate across a
//! coordinator restart, is superseded by a newer one, stops at a failing stage; a Git
//! branch served on loopback makes releases by itself; a bad pipeline file lists every
//! problem.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hoist_tests::fleet::{Agent, Coordinator};
use hoist_tests::{wait_for, Scratch};

/// A bundle whose hooks append `<event> DEPLOY_MODE=<value>` to `$OUT/events.log`; with
/// `fail`, ValidateService exits 3.
fn bundle(dir: &Path, fail: bool) {
    fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/record.sh\n  ValidateService:\n    - location: scripts/validate.sh\n",
    )
    .expect("appspec");
    let record =
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT DEPLOY_MODE=$DEPLOY_MODE\" >> \"$OUT/events.log\"\n";
    let validate = if fail {
        "#!/bin/sh\necho 'health check failed' >&2\nexit 3\n"
    } else {
        record
    };
    for (name, body) in [("record.sh", record), ("validate.sh", validate)] {
        let p = dir.join("scripts").join(name);
        fs::write(&p, body).expect("script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// The DEPLOY_MODE values an agent's hooks saw, one per hook run.
fn modes(agent: &Agent) -> Vec<String> {
    agent
        .events()
        .iter()
        .map(|l| l.split_once(' ').map_or("", |(_, m)| m).to_owned())
        .collect()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_deployments_variables_reach_its_hooks_and_the_environment_file_does_not_override_them() {
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    let token = coordinator.shop_web(&["--config", "AllAtOnce"]);
    let web1 = Agent::start(&s, "web-1", &coordinator, &token, "role: web");
    // The operator's file sets the same name: the deployment's value must win.
    let env_file = web1.dir.join("hook.env");
    let mut env = fs::read_to_string(&env_file).expect("hook.env");
    env.push_str("DEPLOY_MODE=from-the-file\n");
    fs::write(&env_file, env).expect("hook.env");
    wait_for("web-1 online", Duration::from_secs(30), || {
        coordinator.hoist_ok(&["hosts", "list"]).contains("web-1")
    });
    let dir = s.join("good");
    bundle(&dir, false);
    let revision = coordinator.push(&dir);
    let out = coordinator.hoist(&[
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--revision",
        &revision,
        "--var",
        "DEPLOY_MODE=destructive",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(modes(&web1), ["DEPLOY_MODE=destructive"; 2]);
    // Without --var the file's value is what hooks see.
    let (code, _) = coordinator.deploy(&revision, true);
    assert_eq!(code, Some(0));
    assert_eq!(modes(&web1)[2..], ["DEPLOY_MODE=from-the-file"; 2]);
}

const PIPELINE: &str = "pipeline: shop-release\napplication: shop\nstages:\n  - group: staging\n    variables: { DEPLOY_MODE: destructive }\n  - group: production\n    approval: manual\n    variables: { DEPLOY_MODE: normal }\n";

/// Application shop with groups staging (hosts tagged env=staging) and production
/// (env=prod), and a registration token.
fn shop_stages(c: &Coordinator) -> String {
    c.hoist_ok(&["app", "create", "shop"]);
    for (g, env) in [("staging", "staging"), ("production", "prod")] {
        c.hoist_ok(&[
            "group",
            "create",
            g,
            "--app",
            "shop",
            "--tag",
            &format!("env={env}"),
            "--config",
            "AllAtOnce",
        ]);
    }
    c.hoist_ok(&["token", "create"])
}

fn apply(c: &Coordinator, s: &Scratch, name: &str, yaml: &str) -> std::process::Output {
    let file = s.join(name);
    fs::write(&file, yaml).expect("pipeline file");
    c.hoist(&["pipeline", "apply", file.to_str().expect("utf-8")])
}

fn release_json(c: &Coordinator, id: &str) -> serde_json::Value {
    serde_json::from_slice(&c.hoist(&["release", "status", id, "--json"]).stdout)
        .expect("release --json")
}

/// `release create --pipeline shop-release --revision R --wait`: exit code and id.
fn release_wait(c: &Coordinator, revision: &str) -> (Option<i32>, String) {
    let out = c.hoist(&[
        "release",
        "create",
        "--pipeline",
        "shop-release",
        "--revision",
        revision,
        "--wait",
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        id.starts_with("rel-") && !id.contains('\n'),
        "the id alone on stdout: {}",
        text(&out)
    );
    (out.status.code(), id)
}

#[test]
fn a_release_goes_through_staging_waits_at_the_gate_across_a_restart_and_reaches_production() {
    let s = Scratch::new();
    let data = s.join("coordinator");
    let mut coordinator = Coordinator::start(&data);
    let token = shop_stages(&coordinator);
    let staging = Agent::start(&s, "stg-1", &coordinator, &token, "env: staging");
    let prod = Agent::start(&s, "prod-1", &coordinator, &token, "env: prod");
    wait_for("both hosts online", Duration::from_secs(30), || {
        let list = coordinator.hoist_ok(&["hosts", "list"]);
        list.contains("stg-1") && list.contains("prod-1")
    });
    let out = apply(&coordinator, &s, "pipeline.yml", PIPELINE);
    assert!(out.status.success(), "{}", text(&out));
    let good = s.join("good");
    bundle(&good, false);
    let revision = coordinator.push(&good);

    // Staging deploys with its variables, then the release waits at production's gate.
    let (code, id) = release_wait(&coordinator, &revision);
    assert_eq!(code, Some(3), "--wait exits 3 at a gate");
    assert_eq!(modes(&staging), ["DEPLOY_MODE=destructive"; 2]);
    assert!(prod.events().is_empty(), "production waits for approval");
    let status = coordinator.hoist_ok(&["release", "status", &id]);
    assert!(status.contains("production  awaiting_approval"), "{status}");

    // A restart keeps it waiting; approval afterwards works.
    let addr = coordinator.authority();
    coordinator.stop_with(nix::sys::signal::Signal::SIGTERM);
    let coordinator = Coordinator::start_on(&data, &addr);
    assert_eq!(
        release_json(&coordinator, &id)["state"],
        "awaiting_approval"
    );
    coordinator.hoist_ok(&["release", "approve", &id, "--comment", "ship it"]);
    wait_for("the release succeeds", Duration::from_secs(60), || {
        release_json(&coordinator, &id)["state"] == "succeeded"
    });
    assert_eq!(modes(&prod), ["DEPLOY_MODE=normal"; 2]);
    let r = release_json(&coordinator, &id);
    assert_eq!(r["stages"][1]["comment"], "ship it");
    assert!(
        r["stages"][1]["approved_by"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{r}"
    );
    let deployment = r["stages"][1]["deployment_id"]
        .as_str()
        .expect("production's deployment")
        .to_owned();
    let d = coordinator.hoist_ok(&["deploy", "status", &deployment]);
    assert!(d.contains("by pipeline") && d.contains(&id), "{d}");

    // A failing revision stops at staging; production is untouched.
    let bad = s.join("bad");
    bundle(&bad, true);
    let bad_revision = coordinator.push(&bad);
    let before = prod.events().len();
    let (code, failed) = release_wait(&coordinator, &bad_revision);
    assert_eq!(code, Some(1), "a failed release exits 1");
    let r = release_json(&coordinator, &failed);
    assert_eq!(
        (
            r["stages"][0]["state"].as_str(),
            r["stages"][1]["state"].as_str()
        ),
        (Some("failed"), Some("skipped"))
    );
    assert_eq!(prod.events().len(), before, "production untouched");

    // A newer release reaching the gate supersedes the one waiting there.
    let (code, older) = release_wait(&coordinator, &revision);
    assert_eq!(code, Some(3));
    let (code, newer) = release_wait(&coordinator, &revision);
    assert_eq!(code, Some(3));
    let r = release_json(&coordinator, &older);
    assert_eq!(r["state"], "superseded", "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| m.contains(&newer)),
        "{r}"
    );
    assert_eq!(
        release_json(&coordinator, &newer)["state"],
        "awaiting_approval"
    );
    let shown = coordinator.hoist_ok(&["pipeline", "show", "shop-release"]);
    assert!(
        shown.contains(&older) && shown.contains("superseded"),
        "{shown}"
    );
}

#[test]
fn an_invalid_pipeline_file_lists_all_its_problems() {
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    shop_stages(&coordinator);
    let out = apply(
        &coordinator,
        &s,
        "bad.yml",
        "pipeline: shop-release\napplication: shop\nsource: { git: { url: \"https://h/r.git\", branch: main, poll: 5 } }\nstages:\n  - group: staging\n    variables: { LIFECYCLE_EVENT: x }\n  - group: canary\n  - group: staging\n    approval: true\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    for needle in [
        "has 5 problem(s)",
        "source.git.poll: unknown key",
        "stages[0].variables: \"LIFECYCLE_EVENT\": is a reserved hook variable",
        "stages[1].group: no deployment group \"canary\" in application \"shop\"",
        "stages[2].approval: must be a string, found true",
        "stages[2].group: duplicate group \"staging\" (also stages[0])",
    ] {
        assert!(t.contains(needle), "{needle:?} not in:\n{t}");
    }
    assert!(
        coordinator.hoist_ok(&["pipeline", "list"]).lines().count() <= 1,
        "nothing applied"
    );
}

/// The bundle files of [`bundle`] as one commit's (path, contents).
fn bundle_files(s: &Scratch, name: &str) -> Vec<(String, String)> {
    let dir = s.join(name);
    bundle(&dir, false);
    ["appspec.yml", "scripts/record.sh", "scripts/validate.sh"]
        .iter()
        .map(|p| {
            (
                (*p).to_owned(),
                fs::read_to_string(dir.join(p)).expect("bundle file"),
            )
        })
        .collect()
}

/// Releases of shop-release, newest first.
fn releases(c: &Coordinator) -> Vec<serde_json::Value> {
    let out = c.hoist(&["release", "list", "--pipeline", "shop-release", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("release list --json");
    list["releases"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_commit_pushed_to_the_branch_becomes_a_release_and_a_restart_makes_no_duplicate() {
    let s = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let git_root = s.join("git");
    let files = bundle_files(&s, "tree");
    let first: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let commits = hoist_tests::servers::bare_repo(&git_root, "shop.git", &[&first]);
    let daemon = rt.block_on(hoist_tests::servers::GitDaemon::start(&git_root));

    let data = s.join("coordinator");
    let mut coordinator = Coordinator::start(&data);
    let token = shop_stages(&coordinator);
    let staging = Agent::start(&s, "stg-1", &coordinator, &token, "env: staging");
    wait_for("the host is online", Duration::from_secs(30), || {
        coordinator.hoist_ok(&["hosts", "list"]).contains("stg-1")
    });
    let yaml = format!(
        "pipeline: shop-release\napplication: shop\nsource:\n  git: {{ url: \"{}\", branch: main, poll_secs: 1 }}\nstages:\n  - group: staging\n    variables: {{ DEPLOY_MODE: destructive }}\n",
        daemon.url("shop.git")
    );
    let out = apply(&coordinator, &s, "pipeline.yml", &yaml);
    assert!(out.status.success(), "{}", text(&out));
    // The branch's head when the source is applied is its first release.
    wait_for(
        "the first commit's release",
        Duration::from_secs(30),
        || {
            releases(&coordinator)
                .first()
                .is_some_and(|r| r["state"] == "succeeded")
        },
    );
    assert_eq!(releases(&coordinator)[0]["source_ref"], commits[0].as_str());

    // A new commit on the branch: a new release within poll_secs plus a few seconds.
    let work = git_root.join("shop.git.work");
    fs::write(work.join("CHANGELOG"), "second\n").expect("write");
    hoist_tests::servers::git(&work, &["add", "."]);
    hoist_tests::servers::git(&work, &["commit", "-q", "-m", "second"]);
    let second = hoist_tests::servers::git(&work, &["rev-parse", "HEAD"]);
    let bare = git_root.join("shop.git");
    hoist_tests::servers::git(
        &work,
        &["push", "-q", bare.to_str().expect("utf-8"), "HEAD:main"],
    );
    wait_for(
        "the second commit's release reaches staging",
        Duration::from_secs(20),
        || {
            releases(&coordinator)
                .first()
                .is_some_and(|r| r["source_ref"] == second.as_str() && r["state"] == "succeeded")
        },
    );
    assert_eq!(releases(&coordinator).len(), 2);
    assert_eq!(modes(&staging), ["DEPLOY_MODE=destructive"; 4]);
    let r = &releases(&coordinator)[0];
    assert_eq!(r["creator"], "git");
    assert_eq!(r["revision"]["commit"], second.as_str());

    // After a restart the source resumes from that commit: no duplicate release.
    let addr = coordinator.authority();
    coordinator.stop_with(nix::sys::signal::Signal::SIGTERM);
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let coordinator = Coordinator::start_on(&data, &addr);
    wait_for(
        "the source is looked at after the restart",
        Duration::from_secs(20),
        || {
            let p: serde_json::Value = serde_json::from_slice(
                &coordinator
                    .hoist(&["pipeline", "show", "shop-release", "--json"])
                    .stdout,
            )
            .expect("pipeline show --json");
            p["source_status"]["checked_ms"].as_u64() > Some(restarted_ms)
        },
    );
    assert_eq!(
        releases(&coordinator).len(),
        2,
        "no duplicate release after a restart"
    );
    let shown = coordinator.hoist_ok(&["pipeline", "show", "shop-release"]);
    assert!(
        shown.contains(&format!("last released: {second}")),
        "{shown}"
    );
}

#[test]
fn an_unreachable_git_source_is_retried_and_shows_its_error() {
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    shop_stages(&coordinator);
    // A port nothing listens on.
    let port = hoist_tests::servers::free_port();
    let yaml = format!(
        "pipeline: shop-release\napplication: shop\nsource:\n  git: {{ url: \"git://127.0.0.1:{port}/shop.git\", branch: main, poll_secs: 1 }}\nstages:\n  - group: staging\n"
    );
    let out = apply(&coordinator, &s, "pipeline.yml", &yaml);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("two failed looks", Duration::from_secs(30), || {
        let p: serde_json::Value = serde_json::from_slice(
            &coordinator
                .hoist(&["pipeline", "show", "shop-release", "--json"])
                .stdout,
        )
        .expect("pipeline show --json");
        p["source_status"]["failures"].as_u64() >= Some(2)
    });
    let shown = coordinator.hoist_ok(&["pipeline", "show", "shop-release"]);
    assert!(
        shown.contains("error:") && shown.contains("git ls-remote"),
        "{shown}"
    );
    assert!(
        releases(&coordinator).is_empty(),
        "no release from an unreachable source"
    );
}

#[test]
#[ignore = "needs moto_server (HOIST_TEST_MOTO)"]
fn each_new_version_of_an_s3_object_becomes_a_release_copied_into_the_bundle_store() {
    let moto_server = hoist_tests::servers::need_moto();
    let s = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let moto = rt.block_on(hoist_tests::servers::Moto::start(&moto_server));
    rt.block_on(moto.versioned_bucket("artifacts"));
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let data = s.join("coordinator");
    let mut coordinator = Coordinator::start_env(&data, "127.0.0.1:0", &env);
    let token = shop_stages(&coordinator);
    let staging = Agent::start(&s, "stg-1", &coordinator, &token, "env: staging");
    wait_for("the host is online", Duration::from_secs(30), || {
        coordinator.hoist_ok(&["hosts", "list"]).contains("stg-1")
    });
    let push = |name: &str| -> String {
        let dir = s.join(name);
        bundle(&dir, false);
        let out = coordinator.hoist_env(
            &[
                "push",
                dir.to_str().expect("utf-8"),
                "--app",
                "shop",
                "--s3",
                "s3://artifacts/shop/latest.tgz",
                "--json",
            ],
            &env,
        );
        assert!(out.status.success(), "{}", text(&out));
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("push --json");
        info["revision"]["version_id"]
            .as_str()
            .expect("a version id")
            .to_owned()
    };
    let v1 = push("v1");
    let yaml = "pipeline: shop-release\napplication: shop\nsource:\n  s3: { bucket: artifacts, key: shop/latest.tgz, poll_secs: 1 }\nstages:\n  - group: staging\n    variables: { DEPLOY_MODE: destructive }\n";
    let out = apply(&coordinator, &s, "pipeline.yml", yaml);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "the first version's release",
        Duration::from_secs(30),
        || {
            releases(&coordinator)
                .first()
                .is_some_and(|r| r["state"] == "succeeded")
        },
    );
    let r = &releases(&coordinator)[0];
    assert_eq!(
        (r["creator"].as_str(), r["source_ref"].as_str()),
        (Some("s3"), Some(v1.as_str()))
    );
    // Copied into the coordinator's store, hashed on the way.
    assert_eq!(r["revision"]["kind"], "coordinator", "{r}");
    assert!(
        r["revision"]["sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{r}"
    );

    let v2 = push("v2");
    assert_ne!(v1, v2);
    wait_for(
        "the second version's release",
        Duration::from_secs(20),
        || {
            releases(&coordinator)
                .first()
                .is_some_and(|r| r["source_ref"] == v2.as_str() && r["state"] == "succeeded")
        },
    );
    assert_eq!(modes(&staging), ["DEPLOY_MODE=destructive"; 4]);

    let addr = coordinator.authority();
    coordinator.stop_with(nix::sys::signal::Signal::SIGTERM);
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let coordinator = Coordinator::start_env(&data, &addr, &env);
    wait_for(
        "the source is looked at after the restart",
        Duration::from_secs(20),
        || {
            let p: serde_json::Value = serde_json::from_slice(
                &coordinator
                    .hoist(&["pipeline", "show", "shop-release", "--json"])
                    .stdout,
            )
            .expect("pipeline show --json");
            p["source_status"]["checked_ms"].as_u64() > Some(restarted_ms)
        },
    );
    assert_eq!(
        releases(&coordinator).len(),
        2,
        "no duplicate release after a restart"
    );
}

#[test]
fn an_s3_object_read_only_in_part_makes_no_release_until_it_is_read_whole() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hoist_tests::servers::{sha256_hex, HttpServer, Reply};

    let s = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let object: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let body = object.clone();
    let gets = Arc::new(AtomicUsize::new(0));
    let seen = gets.clone();
    // An S3 endpoint whose first two reads of the object break off after 1 KiB.
    let server = rt.block_on(HttpServer::start(move |_, req| {
        let reply = Reply::status(200).header("ETag", "\"e1\"");
        if req.method == "HEAD" {
            return Reply {
                body: Vec::new(),
                ..reply
            };
        }
        let n = seen.fetch_add(1, Ordering::SeqCst);
        Reply {
            body: body.clone(),
            cut_after: (n < 2).then_some(1024),
            ..reply
        }
    }));
    let endpoint = server.url("");
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let coordinator = Coordinator::start_env(&s.join("coordinator"), "127.0.0.1:0", &env);
    shop_stages(&coordinator);
    let yaml = "pipeline: shop-release\napplication: shop\nsource:\n  s3: { bucket: artifacts, key: shop.tgz, poll_secs: 1 }\nstages:\n  - group: staging\n";
    let out = apply(&coordinator, &s, "pipeline.yml", yaml);
    assert!(out.status.success(), "{}", text(&out));
    let show = || -> serde_json::Value {
        serde_json::from_slice(
            &coordinator
                .hoist(&["pipeline", "show", "shop-release", "--json"])
                .stdout,
        )
        .expect("pipeline show --json")
    };
    wait_for("a failed read", Duration::from_secs(20), || {
        show()["source_status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("copying s3://artifacts/shop.tgz"))
    });
    assert!(
        releases(&coordinator).is_empty(),
        "no release from a half-read object"
    );
    // The third read is whole: one release, of exactly the object's bytes.
    wait_for("the release", Duration::from_secs(30), || {
        !releases(&coordinator).is_empty()
    });
    assert!(gets.load(Ordering::SeqCst) >= 3);
    let r = &releases(&coordinator)[0];
    assert_eq!(r["source_ref"], "\"e1\"");
    assert_eq!(r["revision"]["sha256"], sha256_hex(&object).as_str(), "{r}");
    assert_eq!(r["revision"]["size"], object.len() as u64);
    assert!(show()["source_status"]["error"].is_null());
    assert_eq!(releases(&coordinator).len(), 1);
}
