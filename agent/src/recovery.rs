//! What a starting agent (or local deploy) does about a deployment that was in flight when
//! the previous process died: kill the orphaned hook's process group, record the interrupted
//! event as failed ("agent restarted during <event>"), and queue the reports that tell the
//! coordinator, so no deployment is left hanging.
//!
//! Runs only while holding the host lock, so the process that wrote `in-flight.json` is gone.
//!
//! A process group id alone does not name a process group for long: after a reboot, or once
//! the orphan died and its id was reused, it may be anyone's. The marker therefore records
//! the boot id and the group leader's start time with it, and recovery signals the group only
//! when both still match; otherwise it kills nothing and reports the event interrupted all
//! the same.

use std::time::{Duration, Instant};

use hoist_protocol::agent::{ErrorCode, EventStatus};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::hooks::identity;
use crate::outbox::Outbox;
use crate::state::{self, DeploymentRecord, Ending, EventRecord, InFlight, RecordStatus, StateDir};

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub deployment_id: String,
    pub command_id: Option<String>,
    pub event: String,
    pub killed_pgid: Option<i32>,
}

/// Recovers an interrupted deployment, if any. Reports go to `outbox` when the deployment
/// came from a coordinator (`command_id` set) and an outbox is given.
pub async fn recover(
    state: &StateDir,
    outbox: Option<&Outbox>,
    kill_grace: Duration,
) -> anyhow::Result<Option<Recovered>> {
    let Some(in_flight) = state.in_flight()? else {
        // A log whose only line was torn by a power loss names no deployment: removed, so
        // nothing (the packages' upgrade scripts) takes it for one in flight.
        state.clear_in_flight()?;
        return Ok(None);
    };
    warn!(
        deployment_id = %in_flight.deployment_id,
        lifecycle_event = %in_flight.event,
        "found a deployment interrupted by an agent restart"
    );
    let killed_pgid = match in_flight.pgid {
        Some(pgid) if pgid > 1 => match same_group(&in_flight, pgid) {
            Ok(()) => {
                kill_group(pgid, kill_grace).await;
                Some(pgid)
            }
            Err(why) => {
                warn!(
                    deployment_id = %in_flight.deployment_id,
                    pgid, "not signalling process group {pgid}: {why}"
                );
                None
            }
        },
        _ => None,
    };
    let mut message = format!("agent restarted during {}", in_flight.event);
    if let Some(note) = in_flight
        .group_id
        .as_deref()
        .and_then(|id| releases_after_crash(state, id, &in_flight.deployment_id))
    {
        message = format!("{message}; {note}");
    }
    // One record of the interrupted event and of the deployment's end: what the host keeps
    // and what the coordinator is told are made from them.
    let event = EventRecord {
        event: in_flight.event.clone(),
        status: EventStatus::Failed,
        duration_ms: state::now_ms().saturating_sub(in_flight.event_started_at_ms),
        error_code: Some(ErrorCode::AgentRestarted),
        message: Some(message.clone()),
        script: in_flight.script.clone(),
        exit_code: None,
    };
    let ending = Ending::failed(Some(in_flight.event.clone()), message.clone());

    let dir = in_flight
        .group_id
        .as_deref()
        .map(|id| state.group(id).deployment(&in_flight.deployment_id))
        .filter(|d| d.path().is_dir())
        .or_else(|| state.find_deployment(&in_flight.deployment_id));
    let record_path = dir.map(|d| d.record_path());
    let on_disk = match &record_path {
        // `result.json` is written unsynced between events: after a crash of the host it
        // may be torn, missing or behind the marker, which carries the record durably.
        Some(p) => state::read_json::<DeploymentRecord>(p).unwrap_or_else(|e| {
            warn!(
                "rebuilding {} from the in-flight marker: {e:#}",
                p.display()
            );
            None
        }),
        None => None,
    };
    let record = furthest(on_disk, in_flight.record.clone());
    if let (Some(mut record), Some(record_path)) = (record, record_path) {
        if record.status == RecordStatus::InProgress {
            record.events.push(event.clone());
            record.end(ending.clone(), state::now_ms());
            state::write_json(&record_path, &record)?;
        }
    }
    if let (Some(command_id), Some(outbox)) = (&in_flight.command_id, outbox) {
        outbox.push(command_id, event.report(None))?;
        outbox.push(command_id, ending.report())?;
    }
    state.clear_in_flight()?;
    info!(deployment_id = %in_flight.deployment_id, "{message}; reported as failed");
    Ok(Some(Recovered {
        deployment_id: in_flight.deployment_id,
        command_id: in_flight.command_id,
        event: in_flight.event,
        killed_pgid,
    }))
}

/// For a group with releases (`hoist.releases`): which complete release `current` points at
/// after the crash, and the interrupted deployment's release directory removed when it never
/// became a recorded release (it may be partly written; a recorded one was complete).
fn releases_after_crash(state: &StateDir, group_id: &str, deployment_id: &str) -> Option<String> {
    let record = state.group(group_id).releases().ok().flatten()?;
    let releases_dir = record.current.parent()?.join("releases");
    let own = releases_dir.join(state::encode_name(deployment_id));
    let target = std::fs::read_link(&record.current).ok();
    if target.as_deref() != Some(own.as_path())
        && record.find(deployment_id).is_none()
        && own.is_dir()
    {
        match std::fs::remove_dir_all(&own) {
            Ok(()) => info!("removed the unfinished release {}", own.display()),
            Err(e) => warn!("removing the unfinished release {}: {e}", own.display()),
        }
    }
    Some(match record.current_release() {
        Some(r) => format!(
            "{} points to the complete release {} (deployment {})",
            record.current.display(),
            r.dir.display(),
            r.deployment_id
        ),
        None => match target {
            Some(t) => format!(
                "{} points to {}, not a recorded release",
                record.current.display(),
                t.display()
            ),
            None if record.current.is_dir() => format!(
                "{} is still the directory it was before releases",
                record.current.display()
            ),
            None => format!("{} does not exist yet", record.current.display()),
        },
    })
}

/// The record that got further: `result.json` as found, or the one the marker carried at
/// the interrupted event's start. An ended record on disk wins (only the marker's removal
/// was lost); otherwise the one with more events, the file on a tie (it is never older).
fn furthest(
    on_disk: Option<DeploymentRecord>,
    from_marker: Option<DeploymentRecord>,
) -> Option<DeploymentRecord> {
    match (on_disk, from_marker) {
        (Some(disk), Some(marker))
            if disk.status == RecordStatus::InProgress
                && marker.events.len() > disk.events.len() =>
        {
            Some(marker)
        }
        (Some(disk), _) => Some(disk),
        (None, marker) => marker,
    }
}

/// Whether process group `pgid` is still the one the marker recorded: same boot, and its
/// leader started at the recorded time. Says why not otherwise.
fn same_group(in_flight: &InFlight, pgid: i32) -> Result<(), String> {
    let (Some(boot), Some(started)) = (&in_flight.boot_id, in_flight.pgid_start_time) else {
        return Err("the marker does not record which process led it".to_string());
    };
    match identity::boot_id() {
        Some(now) if now == *boot => {}
        Some(_) => return Err("the host rebooted since it was recorded".to_string()),
        None => return Err("the boot id cannot be read".to_string()),
    }
    match identity::process_start_time(pgid) {
        Some(t) if t == started => Ok(()),
        Some(_) => Err(format!("process {pgid} is another process than the hook")),
        None => Err(format!("the hook's leader, process {pgid}, is gone")),
    }
}

/// SIGTERM to the group, then SIGKILL if anything is left after `grace`.
async fn kill_group(pgid: i32, grace: Duration) {
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return; // Nothing left of it.
    }
    info!(pgid, "stopping the orphaned hook's process group");
    // A grace too large for the clock means "wait as long as it takes", capped at a day.
    let deadline = Instant::now()
        .checked_add(grace)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if killpg(group, None).is_err() {
            return;
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::identity::{boot_id, process_start_time};
    use hoist_protocol::agent::{CommandStatus, ReportBody};

    /// A `sleep` leading a process group of its own, as an unrelated service would.
    fn unrelated_group() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    fn alive(child: &mut std::process::Child) -> bool {
        child.try_wait().expect("try_wait").is_none()
    }

    /// Plants the in-flight marker for command `cmd-1` in ValidateService with `pgid`, as
    /// left by an agent that died.
    fn plant(state: &StateDir, pgid: i32, boot_id: Option<String>, start: Option<u64>) {
        let marker = InFlight {
            schema_version: state::SCHEMA_VERSION,
            deployment_id: "d-1".into(),
            command_id: Some("cmd-1".into()),
            application: "shop".into(),
            group: "web".into(),
            group_id: Some("g-1".into()),
            agent_pid: 1,
            started_at_ms: 1,
            event: "ValidateService".into(),
            event_started_at_ms: 1,
            script: Some("check.sh".into()),
            pgid: Some(pgid),
            boot_id,
            pgid_start_time: start,
            record: None,
        };
        // The event's durable line, then the running script's part with its group.
        let begun = InFlight {
            script: None,
            pgid: None,
            boot_id: None,
            pgid_start_time: None,
            ..marker.clone()
        };
        state.begin_in_flight(&begun, true).expect("plant marker");
        state
            .record_running_script(&marker)
            .expect("plant script part");
    }

    #[tokio::test]
    async fn an_unfinished_release_is_removed_and_the_message_says_where_current_points() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let group = state.prepare_group("g-1", "shop", "web", true).unwrap();
        let srv = dir.path().join("srv");
        let current = srv.join("current");
        let complete = srv.join("releases/d-0");
        std::fs::create_dir_all(&complete).unwrap();
        let unfinished = srv.join("releases/d-1");
        std::fs::create_dir_all(unfinished.join("half")).unwrap();
        let mut record = state::ReleasesRecord::new(&current);
        record.releases.push(state::KeptRelease {
            deployment_id: "d-0".into(),
            dir: complete.clone(),
            identity: None,
            revision_description: "v0".into(),
            bundle_root: None,
            appspec: None,
            installed_at_ms: 1,
        });
        group.write_releases(&record).unwrap();
        std::os::unix::fs::symlink(&complete, &current).unwrap();
        let marker = InFlight {
            schema_version: state::SCHEMA_VERSION,
            deployment_id: "d-1".into(),
            command_id: None,
            application: "shop".into(),
            group: "web".into(),
            group_id: Some("g-1".into()),
            agent_pid: 1,
            started_at_ms: 1,
            event: "Install".into(),
            event_started_at_ms: 1,
            script: None,
            pgid: None,
            boot_id: None,
            pgid_start_time: None,
            record: None,
        };
        state::write_json(&state.in_flight_path(), &marker).unwrap();
        let r = recover(&state, None, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(r.unwrap().event, "Install");
        assert!(!unfinished.exists(), "the unfinished release is removed");
        assert!(complete.is_dir());
        let note = releases_after_crash(&state, "g-1", "d-1").unwrap();
        assert_eq!(
            note,
            format!(
                "{} points to the complete release {} (deployment d-0)",
                current.display(),
                complete.display()
            )
        );
    }

    #[tokio::test]
    async fn a_marker_log_with_no_intact_line_is_nothing_to_recover_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        std::fs::write(state.in_flight_log_path(), "0123456789abcdef {\"schema_ver").unwrap();
        let r = recover(&state, None, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(r, None);
        assert!(!state.in_flight_log_path().exists());
    }

    fn reported(outbox: &Outbox) -> Vec<ReportBody> {
        outbox
            .pending()
            .expect("pending")
            .into_iter()
            .map(|p| p.report.body)
            .collect()
    }

    #[tokio::test]
    async fn a_recorded_process_group_now_led_by_an_unrelated_process_is_left_alive() {
        let mut sleep = unrelated_group();
        let pgid = sleep.id() as i32;
        let started = process_start_time(pgid).expect("start time");
        let cases = [
            // A marker of an earlier version: no identity recorded.
            (None, None),
            // The id was reused by another process since.
            (boot_id(), Some(started + 1)),
            // The host rebooted since.
            (Some("another-boot".to_string()), Some(started)),
        ];
        for (boot, start) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let state = StateDir::open(tmp.path()).expect("state");
            let outbox = Outbox::open(&state).expect("outbox");
            plant(&state, pgid, boot.clone(), start);
            let r = recover(&state, Some(&outbox), Duration::from_millis(200))
                .await
                .expect("recover")
                .expect("something to recover");
            assert_eq!(r.killed_pgid, None, "{boot:?} {start:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                alive(&mut sleep),
                "an unrelated process was killed ({boot:?} {start:?})"
            );
            let reports = reported(&outbox);
            assert!(
                matches!(&reports[..], [
                    ReportBody::EventEnded { event, status: EventStatus::Failed, error_code: Some(ErrorCode::AgentRestarted), .. },
                    ReportBody::Completed { status: CommandStatus::Failed, .. },
                ] if event == "ValidateService"),
                "{reports:?}"
            );
            assert!(!state.in_flight_log_path().exists());
        }
        let _ = sleep.kill();
        let _ = sleep.wait();
    }

    #[tokio::test]
    async fn a_recorded_process_group_that_is_still_the_hooks_is_killed() {
        let mut hook = unrelated_group();
        let pgid = hook.id() as i32;
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        plant(&state, pgid, boot_id(), process_start_time(pgid));
        let r = recover(&state, None, Duration::from_secs(2))
            .await
            .expect("recover")
            .expect("something to recover");
        assert_eq!(r.killed_pgid, Some(pgid));
        let status = hook.wait().expect("wait");
        assert!(!status.success(), "{status}");
    }

    #[tokio::test]
    async fn a_marker_and_record_of_the_name_keyed_layout_are_recovered_after_migration() {
        let mut sleep = unrelated_group();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        // As the previous layout wrote them: state under groups/<name>/, a marker with
        // neither a group id nor the process group's identity.
        let dep = root.join("groups/web/deployments/d-1");
        std::fs::create_dir_all(&dep).expect("mkdir");
        std::fs::write(
            dep.join("result.json"),
            format!(
                r#"{{"schema_version": 1, "deployment_id": "d-1", "command_id": "cmd-1",
  "application": "shop", "group": "web", "revision": "r", "started_at_ms": 1,
  "ended_at_ms": null, "status": "in_progress", "events": [], "failed_event": null,
  "error": null, "log_path": "{}/logs/hooks.log", "log_tail": null}}"#,
                dep.display()
            ),
        )
        .expect("record");
        std::fs::write(
            root.join("in-flight.json"),
            format!(
                r#"{{"schema_version": 1, "deployment_id": "d-1", "command_id": "cmd-1",
  "application": "shop", "group": "web", "agent_pid": 1, "started_at_ms": 1,
  "event": "ApplicationStart", "event_started_at_ms": 1, "script": "start.sh",
  "pgid": {}}}"#,
                sleep.id()
            ),
        )
        .expect("marker");
        let state = StateDir::open(root).expect("state");
        state.migrate().expect("migrate");
        let r = recover(&state, None, Duration::from_millis(200))
            .await
            .expect("recover")
            .expect("something to recover");
        assert_eq!(r.killed_pgid, None);
        assert!(
            alive(&mut sleep),
            "an unverifiable process group was signalled"
        );
        let dir = state.find_deployment("d-1").expect("the deployment moved");
        let record: DeploymentRecord = state::read_json(&dir.record_path())
            .expect("read")
            .expect("record");
        assert_eq!(record.status, RecordStatus::Failed);
        assert_eq!(
            record.error.as_deref(),
            Some("agent restarted during ApplicationStart")
        );
        let _ = sleep.kill();
        let _ = sleep.wait();
    }

    /// After a crash of the host, `result.json` (written unsynced between events) may be torn
    /// or behind: the record the marker carried durably is used instead, and the process
    /// group of the running script (its part is lost with the boot) is not needed.
    #[tokio::test]
    async fn a_torn_or_stale_record_is_rebuilt_from_the_marker() {
        let event = |name: &str| EventRecord {
            event: name.into(),
            status: EventStatus::Succeeded,
            duration_ms: 1,
            error_code: None,
            message: None,
            script: None,
            exit_code: None,
        };
        for on_disk in [
            Some(""),
            Some("{\"schema_version\": 1, \"depl"),
            None,
            Some("stale"),
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let state = StateDir::open(tmp.path()).expect("state");
            let dir = state.group("g-1").deployment("d-1");
            std::fs::create_dir_all(dir.path()).expect("mkdir");
            let record = DeploymentRecord {
                schema_version: state::SCHEMA_VERSION,
                deployment_id: "d-1".into(),
                command_id: Some("cmd-1".into()),
                application: "shop".into(),
                group: "web".into(),
                revision_description: "r".into(),
                started_at_ms: 1,
                ended_at_ms: None,
                status: RecordStatus::InProgress,
                events: vec![event("DownloadBundle"), event("Install")],
                failed_event: None,
                error: None,
                log_path: dir.path().join("logs/hooks.log"),
                log_tail: None,
            };
            match on_disk {
                Some("stale") => {
                    let behind = DeploymentRecord {
                        events: vec![event("DownloadBundle")],
                        ..record.clone()
                    };
                    state::write_json(&dir.record_path(), &behind).expect("record");
                }
                Some(text) => std::fs::write(dir.record_path(), text).expect("record"),
                None => {}
            }
            let marker = InFlight {
                schema_version: state::SCHEMA_VERSION,
                deployment_id: "d-1".into(),
                command_id: Some("cmd-1".into()),
                application: "shop".into(),
                group: "web".into(),
                group_id: Some("g-1".into()),
                agent_pid: 1,
                started_at_ms: 1,
                event: "AfterInstall".into(),
                event_started_at_ms: 2,
                script: None,
                pgid: None,
                boot_id: None,
                pgid_start_time: None,
                record: Some(record),
            };
            // As a version before `in-flight.log` wrote it: recovery still reads it.
            state::write_json(&state.in_flight_path(), &marker).expect("marker");
            // The script's part of an earlier event, left behind: it does not apply.
            let earlier = InFlight {
                event: "BeforeInstall".into(),
                script: Some("old.sh".into()),
                record: None,
                ..marker.clone()
            };
            state::write_json(&state.in_flight_script_path(), &earlier).expect("part");

            let r = recover(&state, None, Duration::from_millis(100))
                .await
                .expect("recover")
                .expect("something to recover");
            assert_eq!(r.event, "AfterInstall", "{on_disk:?}");
            let back: DeploymentRecord = state::read_json(&dir.record_path())
                .expect("read")
                .expect("record");
            let events: Vec<(&str, EventStatus)> = back
                .events
                .iter()
                .map(|e| (e.event.as_str(), e.status))
                .collect();
            assert_eq!(
                events,
                [
                    ("DownloadBundle", EventStatus::Succeeded),
                    ("Install", EventStatus::Succeeded),
                    ("AfterInstall", EventStatus::Failed),
                ],
                "{on_disk:?}"
            );
            assert_eq!(back.events[2].script, None, "{on_disk:?}");
            assert_eq!(back.status, RecordStatus::Failed);
            assert!(!state.in_flight_path().exists());
            assert!(!state.in_flight_script_path().exists());
        }
    }

    #[test]
    fn own_start_time_is_read_and_stable() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).expect("own start time");
        assert_eq!(process_start_time(me), Some(t));
        assert!(boot_id().is_some());
    }
}
