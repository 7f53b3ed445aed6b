//! Per-group state across layouts: creating a group's state before a deployment, the
//! deterministic ids of local and not yet claimed groups, and the migration of the layout
//! keyed by group name (`groups/<name>/`) to the one keyed by group id.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{
    create_dir, decode_name, read_json, write_json, DeploymentRecord, GroupInfo, GroupState,
    LastSuccess, StateDir, SCHEMA_VERSION,
};

impl StateDir {
    /// Makes sure the state of group `group_id` is in place before a deployment to it:
    /// `group.json` names it, and a coordinator's group (`claim_legacy`) takes over the state
    /// [`StateDir::migrate`] set aside for its application and group name, if any.
    pub fn prepare_group(
        &self,
        group_id: &str,
        application: &str,
        group: &str,
        claim_legacy: bool,
    ) -> anyhow::Result<GroupState> {
        let dir = self.group(group_id);
        let info = GroupInfo {
            schema_version: SCHEMA_VERSION,
            group_id: Some(group_id.to_string()),
            application: application.to_string(),
            group: group.to_string(),
        };
        if !dir.path().exists() && claim_legacy {
            let unclaimed = self.group(&unclaimed_group_id(application, group));
            if unclaimed.path().is_dir() {
                move_group(&unclaimed, &dir, &info)?;
                tracing::info!(
                    deployment_group = group,
                    application,
                    "state of group {group} kept from the previous layout now keyed by its id {group_id}"
                );
                return Ok(dir);
            }
        }
        create_dir(dir.path(), 0o755)?;
        if read_json::<GroupInfo>(&dir.info_path())
            .ok()
            .flatten()
            .as_ref()
            != Some(&info)
        {
            write_json(&dir.info_path(), &info)?;
        }
        Ok(dir)
    }

    /// Moves per-group state written by earlier versions (`groups/<group name>/`) into the
    /// layout keyed by group id. Run on start, under the host lock, before recovery.
    ///
    /// The old layout does not know the group's id. The owner of an old group directory is
    /// the application of its last successful install (else of its newest deployment):
    /// - when that deployment was local, the directory becomes [`local_group_id`] of that
    ///   application and the group name, final;
    /// - when it came from a coordinator, it becomes `unclaimed-…` ([`unclaimed_group_id`]),
    ///   and the first command for the same application and group name takes it over under
    ///   the command's group id ([`StateDir::prepare_group`]).
    ///
    /// Each move rewrites the paths recorded inside (last successful install, logs) to the
    /// new place first, then renames the directory: a crash at any point leaves either the
    /// old directory (done again next start, to the same result) or the new one. A finished
    /// claim interrupted before its rename is completed here too. Idempotent.
    pub fn migrate(&self) -> anyhow::Result<Vec<GroupInfo>> {
        let mut moved = Vec::new();
        let legacy_root = self.legacy_groups_root();
        if let Ok(entries) = fs::read_dir(&legacy_root) {
            for entry in entries.flatten() {
                let old = GroupState { dir: entry.path() };
                if !old.path().is_dir() {
                    continue;
                }
                let name = entry
                    .file_name()
                    .to_str()
                    .map(decode_name)
                    .unwrap_or_default();
                let (application, local) = legacy_owner(&old);
                let target_id = if local {
                    local_group_id(&application, &name)
                } else {
                    unclaimed_group_id(&application, &name)
                };
                let info = GroupInfo {
                    schema_version: SCHEMA_VERSION,
                    group_id: local.then(|| target_id.clone()),
                    application,
                    group: name,
                };
                let new = self.group(&target_id);
                if new.path().exists() {
                    tracing::warn!(
                        "not moving {} to {}: it exists already; remove one of them",
                        old.path().display(),
                        new.path().display()
                    );
                    continue;
                }
                create_dir(&self.groups_root(), 0o755)?;
                move_group(&old, &new, &info)?;
                tracing::info!(
                    "moved group state {} to {} (keyed by group id)",
                    old.path().display(),
                    new.path().display()
                );
                moved.push(info);
            }
            // Empty once everything moved; a left-over directory stays for the operator.
            let _ = fs::remove_dir(&legacy_root);
        }
        // A claim that wrote its group.json but crashed before renaming.
        if let Ok(entries) = fs::read_dir(self.groups_root()) {
            for entry in entries.flatten() {
                let dir = GroupState { dir: entry.path() };
                let Ok(Some(info)) = read_json::<GroupInfo>(&dir.info_path()) else {
                    continue;
                };
                let Some(id) = &info.group_id else { continue };
                let wanted = self.group(id);
                if wanted != dir && !wanted.path().exists() {
                    move_group(&dir, &wanted, &info)?;
                    moved.push(info);
                }
            }
        }
        Ok(moved)
    }
}

/// The deployment group id of a local deployment: `local-` and the first 16 hex digits of
/// the SHA-256 of `application`, a NUL byte and `group`. Deterministic (every local deploy of
/// the same application and group shares its state) and unambiguous for any two names.
pub fn local_group_id(application: &str, group: &str) -> String {
    format!("local-{}", name_hash(application, group))
}

/// Where [`StateDir::migrate`] keeps an old group directory written by coordinator
/// deployments until a command names its id.
pub fn unclaimed_group_id(application: &str, group: &str) -> String {
    format!("unclaimed-{}", name_hash(application, group))
}

fn name_hash(application: &str, group: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(application.as_bytes());
    h.update([0u8]);
    h.update(group.as_bytes());
    let digest = hex::encode(h.finalize());
    digest[..16].to_string()
}

/// The application owning an old-layout group directory, and whether that deployment was
/// local: its last successful install's deployment, else its newest deployment.
fn legacy_owner(dir: &GroupState) -> (String, bool) {
    // A damaged file names no owner; it must not keep the agent from starting.
    let last = read_json::<LastSuccess>(&dir.last_success_path())
        .ok()
        .flatten();
    let records = dir.records();
    let owner = last
        .as_ref()
        .and_then(|l| records.iter().find(|r| r.deployment_id == l.deployment_id))
        .or(records.first());
    let application = last
        .map(|l| l.application)
        .or_else(|| owner.map(|r| r.application.clone()))
        .unwrap_or_default();
    let local = owner.map(|r| r.command_id.is_none()).unwrap_or(true);
    (application, local)
}

/// Moves a group directory from `from` to `to`: first `group.json` and every path recorded
/// under `from` rewritten to `to`, each file atomically, then one rename. Repeating it after
/// a crash gives the same result (paths already rewritten are left alone).
fn move_group(from: &GroupState, to: &GroupState, info: &GroupInfo) -> anyhow::Result<()> {
    rewrite_group_paths(from, to, info)?;
    let (from, to) = (from.path(), to.path());
    fs::rename(from, to)
        .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    if let Some(parent) = to.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", parent.display()))?;
    }
    Ok(())
}

/// The first half of [`move_group`]: `group.json` and every path recorded under `from`
/// rewritten to `to`, nothing renamed.
pub(crate) fn rewrite_group_paths(
    from: &GroupState,
    to: &GroupState,
    info: &GroupInfo,
) -> anyhow::Result<()> {
    let moved = |p: &Path| -> Option<PathBuf> {
        p.strip_prefix(from.path())
            .ok()
            .map(|rest| to.path().join(rest))
    };
    let last_path = from.last_success_path();
    // A damaged record cannot be rewritten; it moves as it is.
    if let Ok(Some(mut last)) = read_json::<LastSuccess>(&last_path) {
        if let (Some(root), Some(appspec)) = (moved(&last.bundle_root), moved(&last.appspec)) {
            last.bundle_root = root;
            last.appspec = appspec;
            write_json(&last_path, &last)?;
        }
    }
    for deployment in from.deployment_dirs().unwrap_or_default() {
        let path = deployment.record_path();
        if let Ok(Some(mut r)) = read_json::<DeploymentRecord>(&path) {
            if let Some(log) = moved(&r.log_path) {
                r.log_path = log;
                write_json(&path, &r)?;
            }
        }
    }
    write_json(&from.info_path(), info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_of_the_name_keyed_layout_does_not_stop_the_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("groups/web");
        fs::create_dir_all(&old).expect("mkdir");
        fs::write(old.join("last-successful-install.json"), "{").expect("write");
        let state = StateDir::open(dir.path()).expect("open");
        let moved = state.migrate().expect("migrate");
        assert_eq!(moved.len(), 1);
        assert!(!dir.path().join("groups").exists());
        let groups = state.groups().expect("groups");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1.group, "web");
    }
}
