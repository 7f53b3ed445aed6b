//! The releases of a group kept on this host (`deployment-groups/<id>/releases.json`): for
//! each release directory made under an appspec's `hoist.releases`, the deployment that made
//! it, the revision's identity (sha256 or Git commit), and where its extracted revision is
//! kept (whose start hooks an instant rollback runs).
//!
//! This is the record only: which release `current` points at is read from the symlink
//! itself (the truth after a crash), and the switching and pruning are `install::releases`'.

use std::path::{Path, PathBuf};

use hoist_protocol::agent::Revision;
use serde::{Deserialize, Serialize};

use super::{read_json, write_json, GroupState, SCHEMA_VERSION};

/// What makes two revisions the same: the sha256 of an archive (coordinator store, S3, URL)
/// or a Git commit id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RevisionIdentity {
    Sha256(String),
    Commit(String),
}

impl RevisionIdentity {
    /// The identity of a revision a command names; `None` for a kind it does not know.
    pub fn of(revision: &Revision) -> Option<RevisionIdentity> {
        match revision {
            Revision::Coordinator { sha256, .. }
            | Revision::S3 { sha256, .. }
            | Revision::Url { sha256, .. } => {
                Some(RevisionIdentity::Sha256(sha256.to_ascii_lowercase()))
            }
            Revision::Git { commit, .. } => {
                Some(RevisionIdentity::Commit(commit.to_ascii_lowercase()))
            }
            Revision::Unknown { .. } => None,
        }
    }
}

impl std::fmt::Display for RevisionIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevisionIdentity::Sha256(s) => write!(f, "sha256 {s}"),
            RevisionIdentity::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// One release directory kept on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRelease {
    /// The deployment that installed it (its directory's name), or for the plain directory
    /// an earlier deployment left at `current`, the deployment that installed that.
    pub deployment_id: String,
    /// `releases/<deployment id>/`.
    pub dir: PathBuf,
    /// `None` for a local deployment of a directory, or a revision of unknown identity.
    #[serde(default)]
    pub identity: Option<RevisionIdentity>,
    #[serde(rename = "revision")]
    pub revision_description: String,
    /// The extracted revision (in its deployment directory) and its appspec, whose hooks an
    /// instant rollback runs; `None` when no longer known.
    #[serde(default)]
    pub bundle_root: Option<PathBuf>,
    #[serde(default)]
    pub appspec: Option<PathBuf>,
    pub installed_at_ms: u64,
}

/// The releases of one group, oldest first, and the `current` path they are switched at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasesRecord {
    pub schema_version: u32,
    pub current: PathBuf,
    pub releases: Vec<KeptRelease>,
}

impl ReleasesRecord {
    pub fn new(current: &Path) -> ReleasesRecord {
        ReleasesRecord {
            schema_version: SCHEMA_VERSION,
            current: current.to_path_buf(),
            releases: Vec::new(),
        }
    }

    /// The release `current` points at now, read from the symlink.
    pub fn current_release(&self) -> Option<&KeptRelease> {
        let target = std::fs::read_link(&self.current).ok()?;
        self.releases.iter().find(|r| r.dir == target)
    }

    pub fn find(&self, deployment_id: &str) -> Option<&KeptRelease> {
        self.releases
            .iter()
            .find(|r| r.deployment_id == deployment_id)
    }
}

impl GroupState {
    /// `releases.json` ([`ReleasesRecord`]).
    pub fn releases_path(&self) -> PathBuf {
        self.dir.join("releases.json")
    }

    /// The group's kept releases, if it ever installed one.
    pub fn releases(&self) -> anyhow::Result<Option<ReleasesRecord>> {
        read_json(&self.releases_path())
    }

    /// Writes the record durably.
    pub fn write_releases(&self, record: &ReleasesRecord) -> anyhow::Result<()> {
        write_json(&self.releases_path(), record)
    }
}

/// A rollback made on the host (`hoist-agent rollback`) of a coordinator's group, kept until
/// the coordinator acknowledged it (`local-rollbacks/<rollback id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRollbackNote {
    pub schema_version: u32,
    pub group_id: String,
    /// The deployment that installed the release now current.
    pub deployment_id: String,
    pub rollback_id: String,
    pub at_ms: u64,
}

impl super::StateDir {
    /// `local-rollbacks/`: rollbacks made on the host, not yet acknowledged by the coordinator.
    pub fn local_rollbacks_dir(&self) -> PathBuf {
        self.root.join("local-rollbacks")
    }

    /// Keeps `note` durably until [`StateDir::local_rollback_sent`].
    pub fn note_local_rollback(&self, note: &LocalRollbackNote) -> anyhow::Result<()> {
        super::create_dir(&self.local_rollbacks_dir(), 0o755)?;
        write_json(&self.local_rollback_path(&note.rollback_id), note)
    }

    /// The notes not yet acknowledged, oldest first; unreadable ones are skipped.
    pub fn local_rollbacks(&self) -> Vec<LocalRollbackNote> {
        let mut notes: Vec<LocalRollbackNote> = std::fs::read_dir(self.local_rollbacks_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| read_json::<LocalRollbackNote>(&e.path()).ok().flatten())
                    .collect()
            })
            .unwrap_or_default();
        notes.sort_by_key(|n| n.at_ms);
        notes
    }

    /// The coordinator acknowledged `rollback_id`.
    pub fn local_rollback_sent(&self, rollback_id: &str) -> anyhow::Result<()> {
        super::remove_file(&self.local_rollback_path(rollback_id))
    }

    fn local_rollback_path(&self, rollback_id: &str) -> PathBuf {
        self.local_rollbacks_dir()
            .join(format!("{}.json", super::encode_name(rollback_id)))
    }
}
