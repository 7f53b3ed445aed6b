//! What `hoist-agent status` shows, read from the state directory alone: the daemon needs
//! to cooperate only by keeping its state files current.
//!
//! [`Status`] is the stable `--json` shape; [`Status::render`] is the human block.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hoist_protocol::text::esc;
use serde::Serialize;

use crate::state::{
    self, AgentInfo, Contact, GroupSyncEntry, HostCredentials, HostLock, StateDir, SyncRecord,
};

/// How many deployments per group are shown.
const RECENT_PER_GROUP: usize = 3;
/// How many lines of a failed deployment's log tail are shown.
const TAIL_LINES: usize = 10;

#[derive(Debug, Serialize)]
pub struct Status {
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub version: Option<String>,
    pub state_dir: PathBuf,
    pub host_id: Option<String>,
    pub host_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub coordinator_url: Option<String>,
    pub last_contact_ms: Option<u64>,
    pub last_contact_error: Option<String>,
    pub in_flight: Option<InFlightStatus>,
    pub groups: Vec<GroupStatus>,
    /// Per deployment group the host matches, whether it runs the group's target revision,
    /// as the coordinator last said (`sync_at_ms`); empty before it said anything.
    pub sync: Vec<GroupSyncEntry>,
    pub sync_at_ms: Option<u64>,
    /// The config's `trust:` (keys and whether a signature is required), in words; filled
    /// by the caller from the config, since this module reads the state directory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InFlightStatus {
    pub deployment_id: String,
    pub application: String,
    pub group: String,
    pub event: String,
    pub script: Option<String>,
    pub elapsed_secs: u64,
    pub event_elapsed_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    /// The group's name, as operators know it.
    pub group: String,
    /// The application the group belongs to (groups of several applications may share a name).
    pub application: String,
    /// The group's id, the key of its state; `None` for state kept from an earlier layout
    /// that no command has claimed yet.
    pub group_id: Option<String>,
    pub deployments: Vec<DeploymentStatus>,
    /// With `hoist.releases`: the `current` link and the releases kept, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<ReleasesStatus>,
}

#[derive(Debug, Serialize)]
pub struct ReleasesStatus {
    pub current_path: PathBuf,
    /// The deployment whose release `current` points at; `None` when it points elsewhere.
    pub current: Option<String>,
    pub kept: Vec<KeptReleaseStatus>,
}

#[derive(Debug, Serialize)]
pub struct KeptReleaseStatus {
    pub deployment_id: String,
    pub dir: PathBuf,
    pub revision: String,
}

#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    pub deployment_id: String,
    pub application: String,
    pub revision: String,
    pub status: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub failed_event: Option<String>,
    pub failed_script: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_tail: Option<String>,
    pub log_path: PathBuf,
}

impl Status {
    /// Reads everything from the state directory; missing files mean "not known".
    pub fn read(state: &StateDir) -> anyhow::Result<Status> {
        let now = state::now_ms();
        let pid = HostLock::holder(state);
        let info = state::read_json::<AgentInfo>(&state.agent_info_path())
            .ok()
            .flatten();
        // agent.json describes the daemon only while that very process holds the lock.
        let daemon = info.filter(|i| Some(i.pid) == pid);
        let host = state::read_json::<HostCredentials>(&state.host_credentials_path())
            .ok()
            .flatten();
        let contact = state::read_json::<Contact>(&state.contact_path())
            .ok()
            .flatten();
        let sync = state::read_json::<SyncRecord>(&state.sync_path())
            .ok()
            .flatten();
        let in_flight = state.in_flight().ok().flatten().map(|f| InFlightStatus {
            elapsed_secs: now.saturating_sub(f.started_at_ms) / 1000,
            event_elapsed_secs: now.saturating_sub(f.event_started_at_ms) / 1000,
            deployment_id: f.deployment_id,
            application: f.application,
            group: f.group,
            event: f.event,
            script: f.script,
        });
        let mut groups = Vec::new();
        for (group, info) in state.groups()? {
            let deployments = group
                .records()
                .into_iter()
                .take(RECENT_PER_GROUP)
                .map(|r| {
                    let failed = r
                        .events
                        .iter()
                        .rev()
                        .find(|e| e.status == hoist_protocol::agent::EventStatus::Failed);
                    DeploymentStatus {
                        failed_script: failed.and_then(|e| e.script.clone()),
                        exit_code: failed.and_then(|e| e.exit_code),
                        deployment_id: r.deployment_id,
                        application: r.application,
                        revision: r.revision_description,
                        status: r.status.as_str().to_string(),
                        started_at_ms: r.started_at_ms,
                        ended_at_ms: r.ended_at_ms,
                        failed_event: r.failed_event,
                        error: r.error,
                        log_tail: r.log_tail.map(|t| last_lines(&t, TAIL_LINES)),
                        log_path: r.log_path,
                    }
                })
                .collect();
            let releases = group.releases().ok().flatten().map(|r| ReleasesStatus {
                current: r.current_release().map(|c| c.deployment_id.clone()),
                current_path: r.current.clone(),
                kept: r
                    .releases
                    .into_iter()
                    .map(|k| KeptReleaseStatus {
                        deployment_id: k.deployment_id,
                        dir: k.dir,
                        revision: k.revision_description,
                    })
                    .collect(),
            });
            groups.push(GroupStatus {
                group: info.group,
                application: info.application,
                group_id: info.group_id,
                deployments,
                releases,
            });
        }
        Ok(Status {
            running: daemon.is_some(),
            pid: daemon.as_ref().map(|d| d.pid),
            uptime_secs: daemon
                .as_ref()
                .map(|d| now.saturating_sub(d.started_at_ms) / 1000),
            version: daemon.as_ref().map(|d| d.version.clone()),
            state_dir: state.root().to_path_buf(),
            host_id: host.as_ref().map(|h| h.host_id.clone()),
            host_name: daemon.as_ref().map(|d| d.host_name.clone()),
            tags: daemon.as_ref().map(|d| d.tags.clone()).unwrap_or_default(),
            coordinator_url: daemon
                .as_ref()
                .map(|d| d.coordinator_url.clone())
                .or_else(|| host.as_ref().map(|h| h.coordinator_url.clone())),
            last_contact_ms: contact.as_ref().map(|c| c.at_ms).filter(|t| *t > 0),
            last_contact_error: contact.and_then(|c| c.last_error),
            in_flight,
            groups,
            sync: sync.as_ref().map(|s| s.groups.clone()).unwrap_or_default(),
            sync_at_ms: sync.map(|s| s.received_ms),
            trust: None,
        })
    }

    /// The compact human-readable block.
    pub fn render(&self) -> String {
        let now = state::now_ms();
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        match (self.running, self.pid) {
            (true, Some(pid)) => line(format!(
                "hoist-agent: running (pid {pid}, up {}, version {})",
                ago(self.uptime_secs.unwrap_or(0) * 1000),
                self.version.as_deref().unwrap_or("?")
            )),
            _ => line("hoist-agent: not running".to_string()),
        }
        line(format!("  state dir:    {}", self.state_dir.display()));
        line(format!(
            "  host:         {} ({})",
            self.host_name.as_deref().unwrap_or("-"),
            self.host_id.as_deref().unwrap_or("not registered")
        ));
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line(format!("  tags:         {}", tags.join(", ")));
        }
        if let Some(url) = &self.coordinator_url {
            let contact = match self.last_contact_ms {
                Some(t) => format!("last contact {} ago", ago(now.saturating_sub(t))),
                None => "never reached".to_string(),
            };
            line(format!("  coordinator:  {url} ({contact})"));
            if let Some(e) = &self.last_contact_error {
                line(format!("                last error: {}", esc(e)));
            }
        }
        if let Some(trust) = &self.trust {
            line(format!("  trust:        {trust}"));
        }
        match &self.in_flight {
            Some(f) => {
                line(format!(
                    "  in flight:    {} of {} to {}: {} for {}{}",
                    esc(&f.deployment_id),
                    esc(&f.application),
                    esc(&f.group),
                    f.event,
                    ago(f.event_elapsed_secs * 1000),
                    f.script
                        .as_deref()
                        .map(|s| format!(", running {}", esc(s)))
                        .unwrap_or_default()
                ));
            }
            None => line("  in flight:    nothing".to_string()),
        }
        for g in &self.groups {
            if g.application.is_empty() {
                line(format!("  group {}:", esc(&g.group)));
            } else {
                line(format!(
                    "  group {} of {}:",
                    esc(&g.group),
                    esc(&g.application)
                ));
            }
            if let Some(r) = &g.releases {
                line(format!(
                    "    current:    {} -> release of {}",
                    r.current_path.display(),
                    r.current
                        .as_deref()
                        .map_or("no kept release".to_string(), esc)
                ));
                let kept: Vec<String> = r.kept.iter().map(|k| esc(&k.deployment_id)).collect();
                line(format!("    kept:       {}", kept.join(", ")));
            }
            for d in &g.deployments {
                let when = d
                    .ended_at_ms
                    .map(|t| format!("{} ago", ago(now.saturating_sub(t))))
                    .unwrap_or_else(|| "not finished".to_string());
                line(format!(
                    "    {} {} ({}, {when}) {}",
                    esc(&d.deployment_id),
                    d.status,
                    esc(&d.application),
                    esc(&d.revision)
                ));
                if let Some(event) = &d.failed_event {
                    let mut what = format!("      failed in {event}");
                    if let Some(s) = &d.failed_script {
                        what.push_str(&format!(", script {}", esc(s)));
                    }
                    if let Some(c) = d.exit_code {
                        what.push_str(&format!(", exit code {c}"));
                    }
                    line(what);
                }
                if let Some(e) = &d.error {
                    line(format!("      error: {}", esc(e)));
                }
                if d.status != "succeeded" {
                    if let Some(tail) = &d.log_tail {
                        for l in tail.lines() {
                            line(format!("      | {}", esc(l)));
                        }
                    }
                    line(format!("      log: {}", d.log_path.display()));
                }
            }
        }
        if let Some(at) = self.sync_at_ms {
            line(format!("  sync ({} ago):", ago(now.saturating_sub(at))));
            if self.sync.is_empty() {
                line("    no deployment group matches this host".to_string());
            }
            for g in &self.sync {
                let mut s = format!(
                    "    {} of {}: {}",
                    esc(&g.group),
                    esc(&g.application),
                    esc(&g.sync)
                );
                if let Some(r) = &g.revision {
                    s.push_str(&format!(", runs {}", esc(r)));
                }
                line(s);
                if let Some(e) = &g.failed_event {
                    line(format!("      failed in {}", esc(e)));
                }
                if let Some(e) = &g.error {
                    line(format!("      error: {}", esc(e)));
                }
            }
        }
        out
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `3 s`, `4 min`, `2 h`, `5 d`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinators_sync_view_is_shown_per_group_with_its_reason_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let before = Status::read(&state).unwrap();
        assert!(before.sync.is_empty() && before.sync_at_ms.is_none());
        assert!(!before.render().contains("sync ("));
        let record = SyncRecord {
            schema_version: state::SCHEMA_VERSION,
            received_ms: state::now_ms(),
            groups: vec![
                GroupSyncEntry {
                    application: "shop".into(),
                    group: "web".into(),
                    group_id: "g-1".into(),
                    sync: "out_of_sync".into(),
                    revision: Some("git https://git.example/shop@0123456789ab".into()),
                    failed_event: Some("BeforeInstall".into()),
                    error: Some("script_failed: disk \u{1b}[31mfull".into()),
                },
                GroupSyncEntry {
                    application: "shop".into(),
                    group: "api".into(),
                    group_id: "g-2".into(),
                    sync: "in_sync".into(),
                    revision: None,
                    failed_event: None,
                    error: None,
                },
            ],
        };
        state::write_json(&state.sync_path(), &record).unwrap();
        let status = Status::read(&state).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["sync"][0]["sync"], "out_of_sync");
        assert_eq!(json["sync"][0]["failed_event"], "BeforeInstall");
        assert_eq!(json["sync"][1]["sync"], "in_sync");
        let text = status.render();
        assert!(
            text.contains("web of shop: out_of_sync, runs git"),
            "{text}"
        );
        assert!(text.contains("failed in BeforeInstall"), "{text}");
        assert!(text.contains("api of shop: in_sync"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "control characters escaped: {text}"
        );
    }

    #[test]
    fn a_group_with_releases_shows_where_current_points_and_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let group = state.prepare_group("g-1", "shop", "web", true).unwrap();
        let releases = dir.path().join("srv/releases");
        let current = dir.path().join("srv/current");
        let kept = |id: &str| state::KeptRelease {
            deployment_id: id.into(),
            dir: releases.join(id),
            identity: None,
            revision_description: format!("revision of {id}"),
            bundle_root: None,
            appspec: None,
            installed_at_ms: 1,
        };
        let mut record = state::ReleasesRecord::new(&current);
        record.releases = vec![kept("d-1"), kept("d-2\u{1b}[2J")];
        group.write_releases(&record).unwrap();
        std::fs::create_dir_all(releases.join("d-1")).unwrap();
        std::os::unix::fs::symlink(releases.join("d-1"), &current).unwrap();
        let status = Status::read(&state).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["groups"][0]["releases"]["current"], "d-1");
        assert_eq!(
            json["groups"][0]["releases"]["kept"][1]["revision"],
            "revision of d-2\u{1b}[2J"
        );
        let text = status.render();
        assert!(text.contains("current:    "), "{text}");
        assert!(text.contains("-> release of d-1"), "{text}");
        assert!(text.contains("kept:       d-1, d-2"), "{text}");
        assert!(!text.contains('\u{1b}'), "escaped: {text}");
    }
}
