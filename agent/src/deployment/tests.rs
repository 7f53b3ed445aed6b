use super::*;
use crate::state::{RecordStatus, SCHEMA_VERSION};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use LifecycleEvent::*;

struct Quiet;
impl Observer for Quiet {
    fn event_started(&self, _: LifecycleEvent) {}
    fn event_ended(&self, _: &EventResult) {}
}

fn engine(state: &Path) -> Deployer {
    Deployer::new(
        StateDir::open(state).unwrap(),
        DeployerSettings {
            kill_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            environment_file: None,
            limits: ExtractLimits::default(),
            keep: 5,
            fetch: None,
        },
    )
}

/// A bundle installing `name.txt` into `dest`, whose ApplicationStop appends `name` to
/// `dest/stops.log`.
fn bundle(dir: &Path, name: &str, dest: &Path) {
    fs::create_dir_all(dir.join("files")).unwrap();
    fs::write(dir.join("files").join(format!("{name}.txt")), name).unwrap();
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {}\nhooks:\n  ApplicationStop:\n    - location: stop.sh\n",
            dest.display()
        ),
    )
    .unwrap();
    let stop = dir.join("stop.sh");
    fs::write(
        &stop,
        format!("#!/bin/sh\necho {name} >> {}/stops.log\n", dest.display()),
    )
    .unwrap();
    fs::set_permissions(&stop, fs::Permissions::from_mode(0o755)).unwrap();
}

fn request(id: &str, app: &str, group: &str, group_id: &str, src: &Path) -> DeploymentRequest {
    DeploymentRequest {
        deployment_id: id.to_string(),
        command_id: (!group_id.starts_with("local-")).then(|| format!("cmd-{id}")),
        application: app.to_string(),
        group: group.to_string(),
        group_id: group_id.to_string(),
        source: Source::Local(src.to_path_buf()),
        revision_description: src.display().to_string(),
        appspec_path: None,
        events: LifecycleEvent::ALL.to_vec(),
        file_exists_behavior: None,
        ignore_application_stop_failures: false,
        bundle_env: Vec::new(),
    }
}

async fn deploy(engine: &Deployer, req: &DeploymentRequest) -> DeploymentRecord {
    let record = engine.run(req, &Quiet, &Stop::default()).await.unwrap();
    assert_eq!(record.status, RecordStatus::Succeeded, "{record:?}");
    record
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// Writes the state `groups/web/` exactly as the layout keyed by group name left it
/// after deployment `old-1` of `app` (local when `command_id` is null) installed
/// `dest/old.txt` from a revision whose ApplicationStop appends "old" to
/// `dest/stops.log`.
fn old_layout(state: &Path, app: &str, command_id: &str, dest: &Path) {
    let group = state.join("groups/web");
    let dep = group.join("deployments/old-1");
    let root = dep.join("archive");
    bundle(&root, "old", dest);
    fs::create_dir_all(dest).unwrap();
    fs::write(dest.join("old.txt"), "old").unwrap();
    let log = dep.join("logs/hooks.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, "").unwrap();
    fs::write(
        group.join("last-successful-install.json"),
        format!(
            r#"{{
  "schema_version": 1,
  "deployment_id": "old-1",
  "application": "{app}",
  "bundle_root": "{root}",
  "appspec": "{root}/appspec.yml",
  "revision": "old",
  "installed_at_ms": 1000
}}
"#,
            root = root.display()
        ),
    )
    .unwrap();
    fs::write(
        group.join("installed-files.json"),
        format!(
            "{{\n  \"entries\": [\n    {{\n      \"path\": \"{}/old.txt\",\n      \"kind\": \"file\"\n    }}\n  ]\n}}\n",
            dest.display()
        ),
    )
    .unwrap();
    fs::write(
        dep.join("result.json"),
        format!(
            r#"{{
  "schema_version": 1,
  "deployment_id": "old-1",
  "command_id": {command_id},
  "application": "{app}",
  "group": "web",
  "revision": "old",
  "started_at_ms": 900,
  "ended_at_ms": 1100,
  "status": "succeeded",
  "events": [],
  "failed_event": null,
  "error": null,
  "log_path": "{}",
  "log_tail": null
}}
"#,
            log.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn two_applications_with_groups_of_one_name_keep_their_own_files_and_stop_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let (shop_dest, billing_dest) = (tmp.path().join("shop"), tmp.path().join("billing"));
    let (shop, billing) = (tmp.path().join("b-shop"), tmp.path().join("b-billing"));
    bundle(&shop, "shop", &shop_dest);
    bundle(&billing, "billing", &billing_dest);
    let engine = engine(&tmp.path().join("state"));
    deploy(&engine, &request("s1", "shop", "web", "g-shop", &shop)).await;
    deploy(
        &engine,
        &request("b1", "billing", "web", "g-billing", &billing),
    )
    .await;
    assert_eq!(
        read(&shop_dest.join("shop.txt")),
        "shop",
        "billing removed shop's files"
    );
    assert_eq!(
        read(&shop_dest.join("stops.log")),
        "",
        "billing ran shop's stop script"
    );
    deploy(&engine, &request("s2", "shop", "web", "g-shop", &shop)).await;
    deploy(
        &engine,
        &request("b2", "billing", "web", "g-billing", &billing),
    )
    .await;
    assert_eq!(read(&shop_dest.join("stops.log")), "shop\n");
    assert_eq!(read(&billing_dest.join("stops.log")), "billing\n");
    assert_eq!(read(&billing_dest.join("billing.txt")), "billing");
    let groups: Vec<(String, String)> = engine
        .state
        .groups()
        .unwrap()
        .into_iter()
        .map(|(_, g)| (g.group, g.application))
        .collect();
    assert_eq!(
        groups,
        [
            ("web".into(), "billing".into()),
            ("web".into(), "shop".into())
        ]
    );
}

#[tokio::test]
async fn state_of_the_layout_keyed_by_group_name_is_migrated_for_a_local_group() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dest = tmp.path().join("dest");
    old_layout(&state, "shop", "null", &dest);
    let engine = engine(&state);
    let moved = engine.state.migrate().unwrap();
    assert_eq!(moved.len(), 1);
    assert!(engine.state.migrate().unwrap().is_empty(), "idempotent");
    assert!(!state.join("groups").exists());
    let id = state::local_group_id("shop", "web");
    let last: LastSuccess = state::read_json(&engine.state.group(&id).last_success_path())
        .unwrap()
        .expect("last success moved");
    assert!(
        last.appspec.starts_with(engine.state.group(&id).path()),
        "{last:?}"
    );

    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&engine, &request("n1", "shop", "web", &id, &new)).await;
    assert_eq!(
        read(&dest.join("stops.log")),
        "old\n",
        "the old revision's ApplicationStop ran"
    );
    assert!(
        !dest.join("old.txt").exists(),
        "the old revision's files were removed"
    );
    assert_eq!(read(&dest.join("new.txt")), "new");
    let status = crate::status::Status::read(&engine.state).unwrap();
    assert_eq!(status.groups.len(), 1);
    let ids: Vec<&str> = status.groups[0]
        .deployments
        .iter()
        .map(|d| d.deployment_id.as_str())
        .collect();
    assert_eq!(ids, ["n1", "old-1"]);
    assert!(status.groups[0].deployments[1]
        .log_path
        .starts_with(engine.state.group(&id).path()));
}

#[tokio::test]
async fn old_coordinator_group_state_is_claimed_by_the_first_command_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dest = tmp.path().join("dest");
    old_layout(&state, "shop", "\"cmd-old\"", &dest);
    let engine = engine(&state);
    engine.state.migrate().unwrap();
    let unclaimed = engine
        .state
        .group(&state::unclaimed_group_id("shop", "web"));
    let unclaimed = unclaimed.path();
    assert!(unclaimed.is_dir());

    // Another application's group of the same name does not take it.
    let other = tmp.path().join("other");
    let other_dest = tmp.path().join("other-dest");
    bundle(&other, "other", &other_dest);
    deploy(
        &engine,
        &request("o1", "billing", "web", "g-billing", &other),
    )
    .await;
    assert!(unclaimed.is_dir());
    assert_eq!(read(&dest.join("stops.log")), "");

    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&engine, &request("n1", "shop", "web", "g-shop", &new)).await;
    assert!(!unclaimed.exists());
    assert_eq!(read(&dest.join("stops.log")), "old\n");
    assert!(!dest.join("old.txt").exists());
}

#[tokio::test]
async fn a_migration_interrupted_after_rewriting_paths_is_finished_on_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dest = tmp.path().join("dest");
    old_layout(&state, "shop", "null", &dest);
    let engine = engine(&state);
    let id = state::local_group_id("shop", "web");
    // The first half of a move, as a crash before the rename leaves it.
    let info = state::GroupInfo {
        schema_version: SCHEMA_VERSION,
        group_id: Some(id.clone()),
        application: "shop".into(),
        group: "web".into(),
    };
    state::rewrite_group_paths(
        &engine.state.legacy_group("web"),
        &engine.state.group(&id),
        &info,
    )
    .unwrap();
    engine.state.migrate().unwrap();
    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&engine, &request("n1", "shop", "web", &id, &new)).await;
    assert_eq!(read(&dest.join("stops.log")), "old\n");
    assert!(!dest.join("old.txt").exists());
}

#[test]
fn events_run_in_lifecycle_order_with_download_when_needed() {
    assert_eq!(
        plan_events(&[ApplicationStart, ApplicationStop, Install]),
        vec![ApplicationStop, DownloadBundle, Install, ApplicationStart]
    );
    assert_eq!(plan_events(&[ApplicationStop]), vec![ApplicationStop]);
    assert_eq!(
        plan_events(&LifecycleEvent::ALL),
        LifecycleEvent::ALL.to_vec()
    );
}
