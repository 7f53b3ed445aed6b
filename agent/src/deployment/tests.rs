use super::*;
use crate::state::{EventRecord, RecordStatus, SCHEMA_VERSION};
use hoist_protocol::agent::{ErrorCode, EventStatus, ReportBody};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use LifecycleEvent::*;

struct Quiet;
impl Observer for Quiet {
    fn event_started(&self, _: LifecycleEvent) {}
    fn event_ended(&self, _: &EventResult) {}
}

fn deployer(state: &Path) -> Deployer {
    Deployer::new(
        StateDir::open(state).unwrap(),
        DeployerSettings {
            kill_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            environment_file: None,
            limits: ExtractLimits::default(),
            keep: 5,
            install_sync: crate::install::SyncMode::Auto,
            fetch: None,
            trust: crate::trust::Trust::default(),
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
        variables: Vec::new(),
        signature: None,
    }
}

async fn deploy(deployer: &Deployer, req: &DeploymentRequest) -> DeploymentRecord {
    let record = deployer.run(req, &Quiet, &Stop::default()).await.unwrap();
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
    let deployer = deployer(&tmp.path().join("state"));
    deploy(&deployer, &request("s1", "shop", "web", "g-shop", &shop)).await;
    deploy(
        &deployer,
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
    deploy(&deployer, &request("s2", "shop", "web", "g-shop", &shop)).await;
    deploy(
        &deployer,
        &request("b2", "billing", "web", "g-billing", &billing),
    )
    .await;
    assert_eq!(read(&shop_dest.join("stops.log")), "shop\n");
    assert_eq!(read(&billing_dest.join("stops.log")), "billing\n");
    assert_eq!(read(&billing_dest.join("billing.txt")), "billing");
    let groups: Vec<(String, String)> = deployer
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
    let deployer = deployer(&state);
    let moved = deployer.state.migrate().unwrap();
    assert_eq!(moved.len(), 1);
    assert!(deployer.state.migrate().unwrap().is_empty(), "idempotent");
    assert!(!state.join("groups").exists());
    let id = state::local_group_id("shop", "web");
    let last: LastSuccess = state::read_json(&deployer.state.group(&id).last_success_path())
        .unwrap()
        .expect("last success moved");
    assert!(
        last.appspec.starts_with(deployer.state.group(&id).path()),
        "{last:?}"
    );

    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&deployer, &request("n1", "shop", "web", &id, &new)).await;
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
    let status = crate::status::Status::read(&deployer.state).unwrap();
    assert_eq!(status.groups.len(), 1);
    let ids: Vec<&str> = status.groups[0]
        .deployments
        .iter()
        .map(|d| d.deployment_id.as_str())
        .collect();
    assert_eq!(ids, ["n1", "old-1"]);
    assert!(status.groups[0].deployments[1]
        .log_path
        .starts_with(deployer.state.group(&id).path()));
}

#[tokio::test]
async fn old_coordinator_group_state_is_claimed_by_the_first_command_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dest = tmp.path().join("dest");
    old_layout(&state, "shop", "\"cmd-old\"", &dest);
    let deployer = deployer(&state);
    deployer.state.migrate().unwrap();
    let unclaimed = deployer
        .state
        .group(&state::unclaimed_group_id("shop", "web"));
    let unclaimed = unclaimed.path();
    assert!(unclaimed.is_dir());

    // Another application's group of the same name does not take it.
    let other = tmp.path().join("other");
    let other_dest = tmp.path().join("other-dest");
    bundle(&other, "other", &other_dest);
    deploy(
        &deployer,
        &request("o1", "billing", "web", "g-billing", &other),
    )
    .await;
    assert!(unclaimed.is_dir());
    assert_eq!(read(&dest.join("stops.log")), "");

    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&deployer, &request("n1", "shop", "web", "g-shop", &new)).await;
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
    let deployer = deployer(&state);
    let id = state::local_group_id("shop", "web");
    // The first half of a move, as a crash before the rename leaves it.
    let info = state::GroupInfo {
        schema_version: SCHEMA_VERSION,
        group_id: Some(id.clone()),
        application: "shop".into(),
        group: "web".into(),
    };
    state::rewrite_group_paths(
        &deployer.state.legacy_group("web"),
        &deployer.state.group(&id),
        &info,
    )
    .unwrap();
    deployer.state.migrate().unwrap();
    let new = tmp.path().join("new");
    bundle(&new, "new", &dest);
    deploy(&deployer, &request("n1", "shop", "web", &id, &new)).await;
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

/// The events of a [`Phase::PreviousRevision`], or `None` for another phase.
fn previous_revision(phase: &Phase) -> Option<(Vec<LifecycleEvent>, Option<Vec<LifecycleEvent>>)> {
    match phase {
        Phase::PreviousRevision { events, then } => Some((
            events.iter().copied().collect(),
            then.as_ref().map(|t| t.iter().copied().collect()),
        )),
        _ => None,
    }
}

#[test]
fn a_deployment_starts_with_the_previous_revisions_events_then_downloads_for_the_new_ones() {
    assert_eq!(
        previous_revision(&Phase::start(&[ApplicationStart, ApplicationStop, Install])),
        Some((vec![ApplicationStop], Some(vec![Install, ApplicationStart])))
    );
    // Only previous-revision events: nothing is downloaded.
    assert_eq!(
        previous_revision(&Phase::start(&[ApplicationStop, BeforeBlockTraffic])),
        Some((vec![BeforeBlockTraffic, ApplicationStop], None))
    );
    // DownloadBundle alone still downloads.
    assert_eq!(
        previous_revision(&Phase::start(&[DownloadBundle])),
        Some((vec![], Some(vec![])))
    );
}

/// Remembers every event result the deployment told it.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<EventResult>>);
impl Observer for Recorder {
    fn event_started(&self, _: LifecycleEvent) {}
    fn event_ended(&self, r: &EventResult) {
        self.0.lock().unwrap().push(r.clone());
    }
}

/// A bundle whose ApplicationStop exits 3.
fn failing_stop_bundle(dir: &Path, dest: &Path) {
    bundle(dir, "bad", dest);
    fs::write(dir.join("stop.sh"), "#!/bin/sh\nexit 3\n").unwrap();
}

#[tokio::test]
async fn a_deployment_asked_to_stop_before_its_first_event_ends_stopped_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("b");
    bundle(&src, "a", &tmp.path().join("dest"));
    let deployer = deployer(&tmp.path().join("state"));
    let stop = Stop::default();
    stop.abort.cancel();
    let record = deployer
        .run(&request("d1", "shop", "web", "g", &src), &Quiet, &stop)
        .await
        .unwrap();
    assert_eq!(record.status, RecordStatus::Stopped);
    assert!(record.events.is_empty(), "{record:?}");
    assert_eq!(record.failed_event, None);
    assert_eq!(
        record.error.as_deref(),
        Some("deployment stopped before BeforeBlockTraffic")
    );
    assert!(!deployer.state.in_flight_log_path().exists());
}

#[tokio::test]
async fn a_failed_application_stop_is_ignored_only_when_the_deployment_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let (bad, good) = (tmp.path().join("bad"), tmp.path().join("good"));
    failing_stop_bundle(&bad, &dest);
    bundle(&good, "good", &dest);
    let deployer = deployer(&tmp.path().join("state"));
    deploy(&deployer, &request("d1", "shop", "web", "g", &bad)).await;

    let failed = deployer
        .run(
            &request("d2", "shop", "web", "g", &good),
            &Quiet,
            &Stop::default(),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, RecordStatus::Failed);
    assert_eq!(failed.failed_event.as_deref(), Some("ApplicationStop"));
    assert_eq!(
        failed.error.as_deref(),
        Some("script stop.sh exited with code 3")
    );
    let last = failed.events.last().unwrap();
    assert_eq!(
        (last.status, last.exit_code),
        (EventStatus::Failed, Some(3))
    );
    assert!(
        !dest.join("good.txt").exists(),
        "nothing after the failure ran"
    );

    let mut req = request("d3", "shop", "web", "g", &good);
    req.ignore_application_stop_failures = true;
    let seen = Recorder::default();
    let record = deployer.run(&req, &seen, &Stop::default()).await.unwrap();
    assert_eq!(record.status, RecordStatus::Succeeded, "{record:?}");
    let stop = record
        .events
        .iter()
        .find(|e| e.event == "ApplicationStop")
        .unwrap();
    assert_eq!(stop.status, EventStatus::FailedIgnored);
    assert_eq!(read(&dest.join("good.txt")), "good");
    // What the observer was told (and so reported) is what the record keeps.
    let told: Vec<EventRecord> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .map(EventResult::record)
        .collect();
    assert_eq!(told, record.events);
}

#[tokio::test]
async fn download_bundle_alone_prepares_the_revision_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("b");
    let dest = tmp.path().join("dest");
    bundle(&src, "a", &dest);
    let deployer = deployer(&tmp.path().join("state"));
    let mut req = request("d1", "shop", "web", "g", &src);
    req.events = vec![DownloadBundle];
    let record = deploy(&deployer, &req).await;
    let events: Vec<(&str, EventStatus)> = record
        .events
        .iter()
        .map(|e| (e.event.as_str(), e.status))
        .collect();
    assert_eq!(events, [("DownloadBundle", EventStatus::Succeeded)]);
    let deployment = deployer.state.group("g").deployment("d1");
    assert!(deployment.archive_dir().join("appspec.yml").is_file());
    assert!(!dest.exists());
    assert!(!deployer.state.group("g").last_success_path().exists());
}

#[test]
fn a_scripts_exit_code_or_signal_becomes_one_failure_each() {
    use crate::hooks::{HookOutcome, ScriptExit};
    use records::{Halt, Problem, Step};
    let exited = Step::of_script("a.sh", HookOutcome::Failed(ScriptExit::Code(3)));
    assert_eq!(
        exited,
        Step::Halted(Halt::Failed(Problem {
            code: ErrorCode::ScriptFailed,
            message: "script a.sh exited with code 3".into(),
            script: Some("a.sh".into()),
            exit_code: Some(3),
        }))
    );
    let killed = Step::of_script("a.sh", HookOutcome::Failed(ScriptExit::Signal(9)));
    assert_eq!(
        killed,
        Step::Halted(Halt::Failed(Problem {
            code: ErrorCode::ScriptFailed,
            message: "script a.sh was killed by signal 9".into(),
            script: Some("a.sh".into()),
            exit_code: None,
        }))
    );
    assert!(matches!(
        Step::of_script("a.sh", HookOutcome::Interrupted),
        Step::Halted(Halt::Stopped(Problem {
            code: ErrorCode::Aborted,
            ..
        }))
    ));
}

#[test]
fn an_events_report_carries_exactly_what_its_record_keeps() {
    let result = EventResult {
        event: ValidateService,
        status: EventStatus::Failed,
        duration: Duration::from_millis(1234),
        error_code: Some(ErrorCode::ScriptTimedOut),
        message: Some("script check.sh timed out after 5 s".into()),
        script: Some("check.sh".into()),
        exit_code: None,
        log_tail: Some("waiting\n".into()),
    };
    let record = result.record();
    assert_eq!(
        record,
        EventRecord {
            event: "ValidateService".into(),
            status: EventStatus::Failed,
            duration_ms: 1234,
            error_code: Some(ErrorCode::ScriptTimedOut),
            message: Some("script check.sh timed out after 5 s".into()),
            script: Some("check.sh".into()),
            exit_code: None,
        }
    );
    assert_eq!(
        result.report(),
        ReportBody::EventEnded {
            event: "ValidateService".into(),
            status: EventStatus::Failed,
            error_code: Some(ErrorCode::ScriptTimedOut),
            message: Some("script check.sh timed out after 5 s".into()),
            script: Some("check.sh".into()),
            exit_code: None,
            log_tail: Some("waiting\n".into()),
            duration_ms: 1234,
        }
    );
}

/// What a restarted agent finds while a script runs: the marker written durably at the
/// event's start, carrying the record of the events before it (so `result.json` need not be
/// synced between events), and the script with its process group in the part written
/// without a sync.
#[tokio::test]
async fn the_marker_carries_the_record_and_the_running_script_is_kept_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let dest = tmp.path().join("dest");
    let seen = tmp.path().join("seen");
    let src = tmp.path().join("bundle");
    fs::create_dir_all(src.join("files")).unwrap();
    fs::create_dir_all(&seen).unwrap();
    fs::write(src.join("files/a.txt"), "a").unwrap();
    fs::write(
        src.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {}\nhooks:\n  AfterInstall:\n    - location: look.sh\n      timeout: 20\n",
            dest.display()
        ),
    )
    .unwrap();
    let d = deployer(&state_dir);
    let marker_path = d.state.in_flight_log_path();
    let part_path = d.state.in_flight_script_path();
    // The agent records the process group once the script runs: wait for it, then copy
    // both parts as they are.
    let look = src.join("look.sh");
    fs::write(
        &look,
        format!(
            "#!/bin/sh\nuntil grep -q '\"pgid\": [0-9]' {part}; do sleep 0.05; done\ncp {marker} {part} {seen}/\n",
            part = part_path.display(),
            marker = marker_path.display(),
            seen = seen.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&look, fs::Permissions::from_mode(0o755)).unwrap();

    deploy(&d, &request("d-1", "app", "web", "local-abc", &src)).await;

    let marker = state::read_marker_log(&seen.join("in-flight.log"))
        .unwrap()
        .expect("an intact marker");
    assert_eq!(marker.event, "AfterInstall");
    assert_eq!((marker.script, marker.pgid), (None, None));
    let record = marker.record.expect("the marker carries the record");
    assert_eq!(record.status, RecordStatus::InProgress);
    let events: Vec<&str> = record.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "BeforeBlockTraffic",
            "AfterBlockTraffic",
            "ApplicationStop",
            "DownloadBundle",
            "BeforeInstall",
            "Install"
        ]
    );
    let part: state::InFlight = state::read_json(&seen.join("in-flight-script.json"))
        .unwrap()
        .unwrap();
    assert_eq!(part.event, "AfterInstall");
    assert_eq!(part.script.as_deref(), Some("look.sh"));
    assert!(
        part.pgid.is_some() && part.pgid_start_time.is_some(),
        "{part:?}"
    );
    assert!(part.record.is_none(), "the record is not repeated unsynced");
    // Both parts are gone once the deployment's end is recorded.
    assert!(!marker_path.exists() && !part_path.exists());
}

/// Extraction leaves a revision unsynced; once it is the last successful install, what the
/// next deployment runs from it (appspec, the stop scripts) must survive a crash of the host,
/// and nothing else of it is synced.
#[test]
fn what_the_next_deployment_runs_from_a_revision_is_what_gets_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let deployments = tmp.path().join("g/deployments");
    let root = deployments.join("d-1/archive");
    fs::create_dir_all(root.join("scripts/stop")).unwrap();
    fs::create_dir_all(root.join("site")).unwrap();
    let appspec = "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop/stop.sh\n    - location: missing.sh\n    - location: ../../outside.sh\n  BeforeBlockTraffic:\n    - location: /scripts/drain.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n";
    fs::write(root.join("appspec.yml"), appspec).unwrap();
    for f in [
        "scripts/stop/stop.sh",
        "scripts/drain.sh",
        "scripts/start.sh",
        "site/index.html",
    ] {
        fs::write(root.join(f), "#!/bin/sh\n").unwrap();
    }
    fs::write(deployments.join("d-1/outside.sh"), "#!/bin/sh\n").unwrap();
    let revision = Prepared {
        root: root.clone(),
        appspec_path: root.join("appspec.yml"),
        spec: hoist_appspec::parse(appspec).unwrap().spec,
        kept: None,
    };
    let (files, dirs) = needed_by_next(&revision).unwrap();
    let root = fs::canonicalize(&root).unwrap();
    let deployments = fs::canonicalize(&deployments).unwrap();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        [
            root.join("appspec.yml"),
            root.join("scripts/drain.sh"),
            root.join("scripts/stop/stop.sh"),
        ]
    );
    assert_eq!(
        dirs.into_iter().collect::<Vec<_>>(),
        [
            deployments.clone(),
            deployments.join("d-1"),
            root.clone(),
            root.join("scripts"),
            root.join("scripts/stop"),
        ]
    );
    sync_what_the_next_deployment_runs(&revision).unwrap();
}

/// A bundle with `hoist.releases` (current `dest/current`, `keep`): `files/<name>.txt` into
/// current and `conf/<name>.conf` into `dest/etc` (outside the release); ApplicationStop and
/// ApplicationStart append "stop <name>" / "start <name>" to `dest/hooks.log`.
fn release_bundle(dir: &Path, name: &str, dest: &Path, keep: usize) {
    fs::create_dir_all(dir.join("files")).unwrap();
    fs::create_dir_all(dir.join("conf")).unwrap();
    fs::write(dir.join("files").join(format!("{name}.txt")), name).unwrap();
    fs::write(dir.join("conf").join(format!("{name}.conf")), name).unwrap();
    fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {d}/current\n  - source: conf\n    destination: {d}/etc\n\
             permissions:\n  - object: {d}/current\n    pattern: \"*.txt\"\n    mode: 640\n\
             hooks:\n  ApplicationStop:\n    - location: stop.sh\n  ApplicationStart:\n    - location: start.sh\n\
             hoist:\n  releases:\n    current: {d}/current\n    keep: {keep}\n",
            d = dest.display()
        ),
    )
    .unwrap();
    for hook in ["stop", "start"] {
        let script = dir.join(format!("{hook}.sh"));
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho {hook} {name} >> {}/hooks.log\n",
                dest.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn event_status(record: &DeploymentRecord, event: LifecycleEvent) -> (EventStatus, String) {
    let e = record
        .events
        .iter()
        .find(|e| e.event == event.as_str())
        .unwrap_or_else(|| panic!("no {event} in {record:?}"));
    (e.status, e.message.clone().unwrap_or_default())
}

#[tokio::test]
async fn a_release_bundle_installs_into_releases_and_switches_current_keeping_a_plain_current() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, dest) = (tmp.path().join("state"), tmp.path().join("srv"));
    let d = deployer(&state);
    let group_id = state::local_group_id("shop", "web");
    // An install before the layout: current is a plain directory.
    let plain = tmp.path().join("plain");
    bundle(&plain, "old", &dest.join("current"));
    deploy(&d, &request("dep-0", "shop", "web", &group_id, &plain)).await;
    assert!(dest.join("current/old.txt").is_file());

    let v1 = tmp.path().join("v1");
    release_bundle(&v1, "v1", &dest, 5);
    let record = deploy(&d, &request("dep-1", "shop", "web", &group_id, &v1)).await;
    let current = dest.join("current");
    assert_eq!(
        fs::read_link(&current).unwrap(),
        dest.join("releases/dep-1")
    );
    assert_eq!(read(&current.join("v1.txt")), "v1");
    let mode = fs::metadata(dest.join("releases/dep-1/v1.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "permissions apply in the release");
    // The plain directory is kept as a release of the deployment that installed it.
    assert_eq!(read(&dest.join("releases/dep-0/old.txt")), "old");
    assert_eq!(listing(&dest.join("releases")), ["dep-0", "dep-1"]);
    assert_eq!(read(&dest.join("etc/v1.conf")), "v1");
    let (_, message) = event_status(&record, Install);
    assert!(message.is_empty(), "{message}");

    let v2 = tmp.path().join("v2");
    release_bundle(&v2, "v2", &dest, 5);
    deploy(&d, &request("dep-2", "shop", "web", &group_id, &v2)).await;
    assert_eq!(
        fs::read_link(&current).unwrap(),
        dest.join("releases/dep-2")
    );
    assert_eq!(
        listing(&dest.join("releases/dep-1")),
        ["v1.txt"],
        "the first release is kept whole"
    );
    // Outside the release, the previous deployment's files are removed as before.
    assert_eq!(listing(&dest.join("etc")), ["v2.conf"]);
    assert_eq!(
        read(&dest.join("hooks.log")),
        "start v1\nstop v1\nstart v2\n"
    );

    // Back to the first release by the host's own command: no copy, v2's stop, v1's start.
    let mut back = request("rb-1", "shop", "web", &group_id, &v1);
    back.source = Source::Kept("dep-1".into());
    fs::remove_dir_all(&v1).unwrap();
    let record = deploy(&d, &back).await;
    assert_eq!(
        fs::read_link(&current).unwrap(),
        dest.join("releases/dep-1")
    );
    assert_eq!(
        read(&dest.join("hooks.log")),
        "start v1\nstop v1\nstart v2\nstop v2\nstart v1\n"
    );
    let (status, message) = event_status(&record, DownloadBundle);
    assert_eq!(status, EventStatus::Skipped);
    assert!(
        message.contains("is kept on this host as release"),
        "{message}"
    );
    let (status, message) = event_status(&record, BeforeInstall);
    assert_eq!(status, EventStatus::Skipped);
    assert!(
        message.starts_with("instant rollback to release"),
        "{message}"
    );
    assert_eq!(event_status(&record, Install).0, EventStatus::Succeeded);
    assert_eq!(
        event_status(&record, ApplicationStart).0,
        EventStatus::Succeeded
    );
    let releases = d.state.group(&group_id).releases().unwrap().unwrap();
    assert_eq!(releases.current_release().unwrap().deployment_id, "dep-1");
    // Rolling back to the current release is refused, naming why.
    let mut again = back.clone();
    again.deployment_id = "rb-2".into();
    let record = d.run(&again, &Quiet, &Stop::default()).await.unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
    assert!(record.error.unwrap().contains("no such kept release"));

    // A later install without the layout removes the link, never the releases.
    let plain2 = tmp.path().join("plain2");
    bundle(&plain2, "new", &current);
    deploy(&d, &request("dep-3", "shop", "web", &group_id, &plain2)).await;
    assert!(fs::symlink_metadata(&current).unwrap().is_dir());
    assert_eq!(listing(&current), ["new.txt"]);
    assert_eq!(listing(&dest.join("releases")), ["dep-0", "dep-1", "dep-2"]);
    assert_eq!(listing(&dest.join("releases/dep-2")), ["v2.txt"]);
}

#[tokio::test]
async fn old_releases_are_pruned_to_keep_and_their_revisions_kept_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, dest) = (tmp.path().join("state"), tmp.path().join("srv"));
    let mut d = deployer(&state);
    d.settings.keep = 1;
    let group_id = state::local_group_id("shop", "web");
    for i in 1..=4 {
        let b = tmp.path().join(format!("v{i}"));
        release_bundle(&b, &format!("v{i}"), &dest, 2);
        deploy(
            &d,
            &request(&format!("dep-{i}"), "shop", "web", &group_id, &b),
        )
        .await;
    }
    assert_eq!(listing(&dest.join("releases")), ["dep-3", "dep-4"]);
    let group = d.state.group(&group_id);
    let kept: Vec<String> = group
        .releases()
        .unwrap()
        .unwrap()
        .releases
        .into_iter()
        .map(|r| r.deployment_id)
        .collect();
    assert_eq!(kept, ["dep-3", "dep-4"]);
    // Deployment directories: the last one, and the kept releases' revisions.
    assert_eq!(listing(&group.deployments_dir()), ["dep-3", "dep-4"]);
}

#[tokio::test]
async fn a_release_that_fails_to_install_is_removed_and_current_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, dest) = (tmp.path().join("state"), tmp.path().join("srv"));
    let d = deployer(&state);
    let group_id = state::local_group_id("shop", "web");
    let v1 = tmp.path().join("v1");
    release_bundle(&v1, "v1", &dest, 5);
    deploy(&d, &request("dep-1", "shop", "web", &group_id, &v1)).await;
    let v2 = tmp.path().join("v2");
    release_bundle(&v2, "v2", &dest, 5);
    let appspec = read(&v2.join("appspec.yml"))
        .replace("mode: 640", "mode: 640\n    owner: no-such-user-hoist");
    fs::write(v2.join("appspec.yml"), appspec).unwrap();
    let record = d
        .run(
            &request("dep-2", "shop", "web", &group_id, &v2),
            &Quiet,
            &Stop::default(),
        )
        .await
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed, "{record:?}");
    assert_eq!(record.failed_event.as_deref(), Some("Install"));
    assert_eq!(
        fs::read_link(dest.join("current")).unwrap(),
        dest.join("releases/dep-1")
    );
    assert_eq!(listing(&dest.join("releases")), ["dep-1"]);
}
