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
