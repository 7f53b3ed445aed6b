//! The whole system: the real `hoist server`, real `hoist-agent run` daemons with their own
//! state directories and tags, and the operator CLI.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hoist_tests::fleet::{Agent, Coordinator};
use hoist_tests::{wait_for, Scratch};

/// A bundle whose hooks append `<event>` to `$OUT/events.log`; `fail_after_install` makes
/// AfterInstall exit 3 after printing a line.
fn bundle(dir: &Path, fail_after_install: bool) {
    fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/record.sh\n  BeforeInstall:\n    - location: scripts/record.sh\n  AfterInstall:\n    - location: scripts/after.sh\n  ApplicationStart:\n    - location: scripts/record.sh\n  ValidateService:\n    - location: scripts/record.sh\n",
    )
    .expect("appspec");
    let record = "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\necho \"recorded $LIFECYCLE_EVENT of $DEPLOYMENT_ID\"\n";
    let after = if fail_after_install {
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT\" >> \"$OUT/events.log\"\necho 'database migration failed: no such table' >&2\nexit 3\n"
    } else {
        record
    };
    for (name, body) in [("record.sh", record), ("after.sh", after)] {
        let p = dir.join("scripts").join(name);
        fs::write(&p, body).expect("script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn a_deployment_reaches_the_tagged_hosts_and_a_failing_hook_is_reported_everywhere() {
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    let token = coordinator.shop_web(&["--config", "OneAtATime"]);
    assert!(!token.is_empty() && !token.contains('\n'), "{token:?}");

    let web1 = Agent::start(&s, "web-1", &coordinator, &token, "role: web");
    let web2 = Agent::start(&s, "web-2", &coordinator, &token, "role: web");
    let db = Agent::start(&s, "db-1", &coordinator, &token, "role: db");
    wait_for("three hosts online", Duration::from_secs(30), || {
        let out = coordinator.hoist(&["hosts", "list", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        ["web-1", "web-2", "db-1"].iter().all(|h| text.contains(h))
    });

    // A good revision reaches both web hosts and not the db host.
    let good = s.join("good");
    bundle(&good, false);
    let revision = coordinator.push(&good);
    let t0 = Instant::now();
    let (code, _) = coordinator.deploy(&revision, true);
    eprintln!("first deployment took {:?}", t0.elapsed());
    assert_eq!(code, Some(0), "deployment failed");
    let expected = [
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ];
    assert_eq!(web1.events(), expected);
    assert_eq!(web2.events(), expected);
    assert!(db.events().is_empty(), "the db host is not in the group");

    // A failing AfterInstall fails the deployment; OneAtATime stops after the first host.
    let bad = s.join("bad");
    bundle(&bad, true);
    let revision = coordinator.push(&bad);
    let (code, id) = coordinator.deploy(&revision, true);
    assert_eq!(code, Some(1), "a failed deployment exits 1");
    let status = coordinator.hoist(&["deploy", "status", &id]);
    let text = String::from_utf8_lossy(&status.stdout).to_string()
        + &String::from_utf8_lossy(&status.stderr);
    for needle in [
        "AfterInstall",
        "scripts/after.sh",
        "3",
        "database migration failed",
    ] {
        assert!(
            text.contains(needle),
            "deploy status lacks {needle:?}:\n{text}"
        );
    }
    let second_run = |a: &Agent| a.events().len() > expected.len();
    let touched: Vec<&Agent> = [&web1, &web2]
        .into_iter()
        .filter(|a| second_run(a))
        .collect();
    assert_eq!(
        touched.len(),
        1,
        "OneAtATime must stop after the first failed host"
    );
    let failed_host = touched[0];
    assert_eq!(
        failed_host.events()[expected.len()..],
        ["ApplicationStop", "BeforeInstall", "AfterInstall"]
    );
    let st = failed_host.status();
    assert_eq!(st["running"], true);
    let last = &st["groups"][0]["deployments"][0];
    assert_eq!(last["status"], "failed", "{st}");
    assert_eq!(last["failed_event"], "AfterInstall");
    assert_eq!(last["failed_script"], "scripts/after.sh");
    assert_eq!(last["exit_code"], 3);
    assert!(last["log_tail"]
        .as_str()
        .is_some_and(|t| t.contains("database migration failed")));
}

#[test]
fn a_host_whose_config_asks_for_new_tags_joins_the_group_only_once_an_operator_accepts() {
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    let token = coordinator.shop_web(&["--config", "AllAtOnce"]);
    let mut host = Agent::start(&s, "db-1", &coordinator, &token, "role: db");
    let listed = || -> serde_json::Value {
        let out = coordinator.hoist(&["hosts", "list", "--json"]);
        serde_json::from_slice(&out.stdout).expect("hosts --json")
    };
    wait_for("the host polls", Duration::from_secs(30), || {
        listed()["hosts"][0]["online"] == true
    });
    let good = s.join("good");
    bundle(&good, false);
    let revision = coordinator.push(&good);

    // Its config now says role=web: the agent's polls ask for it, nothing more.
    host.stop_with(nix::sys::signal::Signal::SIGTERM);
    let config = fs::read_to_string(&host.config).expect("config");
    fs::write(&host.config, config.replace("role: db", "role: web")).expect("config");
    host.restart();
    wait_for(
        "the tag request is recorded",
        Duration::from_secs(30),
        || listed()["hosts"][0]["requested_tags"]["role"] == "web",
    );
    assert_eq!(listed()["hosts"][0]["tags"]["role"], "db");
    let (code, _) = coordinator.deploy(&revision, true);
    assert_eq!(code, Some(1), "the host is not in the group yet");
    assert!(host.events().is_empty());

    coordinator.hoist_ok(&["hosts", "tag", "db-1", "--accept"]);
    let (code, _) = coordinator.deploy(&revision, true);
    assert_eq!(code, Some(0), "the accepted host gets the deployment");
    assert!(host.events().contains(&"ApplicationStart".to_owned()));
}
