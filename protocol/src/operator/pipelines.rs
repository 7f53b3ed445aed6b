//! Pipelines and releases on the wire: a pipeline applied from its YAML file, its stages and
//! source, releases and their stages, approvals.
//!
//! Routes (operator token; under [`crate::API_PREFIX`]):
//! - `POST /v1/pipelines` [`ApplyPipeline`] → [`Pipeline`] (create or update by name);
//!   `GET /v1/pipelines?application=APP` → [`PipelineList`];
//!   `GET /v1/pipelines/{name}` → [`Pipeline`] (with its recent releases);
//!   `DELETE /v1/pipelines/{name}` → [`Pipeline`].
//! - `POST /v1/pipelines/{name}/releases` [`CreateRelease`] → [`Release`];
//!   `GET /v1/releases?pipeline=NAME` → [`ReleaseList`];
//!   `GET /v1/releases/{id}?since=SEQ&wait_secs=N` → [`Release`] (held until a change);
//!   `POST /v1/releases/{id}/approve` and `/reject` [`Decision`] → [`Release`].
//!
//! Not here: the YAML file's rules (the coordinator parses it, so that every problem,
//! unknown groups included, is listed by the one parser).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::RevisionSource;
use crate::agent::Revision;

/// A pipeline file, as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPipeline {
    pub yaml: String,
}

/// Where a pipeline's releases come from by themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineSource {
    /// A branch of a Git repository: each new head commit makes a release.
    Git {
        url: String,
        branch: String,
        poll_secs: u64,
    },
    /// An S3 object: each new version (or ETag) makes a release.
    S3 {
        bucket: String,
        key: String,
        poll_secs: u64,
    },
}

impl PipelineSource {
    pub fn poll_secs(&self) -> u64 {
        match self {
            PipelineSource::Git { poll_secs, .. } | PipelineSource::S3 { poll_secs, .. } => {
                *poll_secs
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PipelineSource::Git { url, branch, .. } => format!("git {url} branch {branch}"),
            PipelineSource::S3 { bucket, key, .. } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// How a pipeline's source is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The last commit, or object version/ETag, turned into a release.
    #[serde(default)]
    pub last: Option<String>,
    /// The last look's error, while it keeps failing.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub checked_ms: Option<u64>,
    /// Failed looks in a row (the wait before the next one grows with them).
    #[serde(default)]
    pub failures: u32,
    /// The next look is not before this time (ms since the epoch).
    #[serde(default)]
    pub next_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStage {
    pub group: String,
    /// `approval: manual`: the stage waits for an operator before it starts.
    #[serde(default)]
    pub manual_approval: bool,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub application: String,
    #[serde(default)]
    pub source: Option<PipelineSource>,
    #[serde(default)]
    pub source_status: Option<SourceStatus>,
    pub stages: Vec<PipelineStage>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Newest first; only in the answer for one pipeline.
    #[serde(default)]
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineList {
    pub pipelines: Vec<Pipeline>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRelease {
    pub revision: RevisionSource,
}

/// An operator's approval or rejection at a gate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(default)]
    pub comment: Option<String>,
    /// Who decides, as the CLI gives it (the login name unless `--by`).
    #[serde(default)]
    pub by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    InProgress,
    AwaitingApproval,
    Succeeded,
    Failed,
    Rejected,
    Superseded,
    #[serde(other)]
    Unknown,
}

impl ReleaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::InProgress => "in_progress",
            ReleaseState::AwaitingApproval => "awaiting_approval",
            ReleaseState::Succeeded => "succeeded",
            ReleaseState::Failed => "failed",
            ReleaseState::Rejected => "rejected",
            ReleaseState::Superseded => "superseded",
            ReleaseState::Unknown => "unknown",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ReleaseState::Succeeded
                | ReleaseState::Failed
                | ReleaseState::Rejected
                | ReleaseState::Superseded
        )
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Pending,
    Deploying,
    AwaitingApproval,
    Succeeded,
    Failed,
    Skipped,
    #[serde(other)]
    Unknown,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Deploying => "deploying",
            StageState::AwaitingApproval => "awaiting_approval",
            StageState::Succeeded => "succeeded",
            StageState::Failed => "failed",
            StageState::Skipped => "skipped",
            StageState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for StageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStage {
    pub group: String,
    #[serde(default)]
    pub manual_approval: bool,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub state: StageState,
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// Why it waits, failed or was skipped.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub approved_ms: Option<u64>,
    #[serde(default)]
    pub rejected_by: Option<String>,
    #[serde(default)]
    pub rejected_ms: Option<u64>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub pipeline: String,
    pub application: String,
    pub revision_id: String,
    pub revision: Revision,
    pub state: ReleaseState,
    /// `operator`, or the source that made it (`git`, `s3`).
    pub creator: String,
    /// For a source's release: the commit or object version it was made for.
    #[serde(default)]
    pub source_ref: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    pub stages: Vec<ReleaseStage>,
    /// As for a deployment: pass it back as `since` to wait for the next change.
    #[serde(default)]
    pub change_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_wire_names_and_tolerate_newer_ones() {
        for s in [ReleaseState::AwaitingApproval, ReleaseState::Superseded] {
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{s}\""));
        }
        assert_eq!(
            serde_json::from_str::<StageState>("\"paused\"").expect("parses"),
            StageState::Unknown
        );
        let src = PipelineSource::Git {
            url: "https://git.example/shop.git".into(),
            branch: "main".into(),
            poll_secs: 30,
        };
        let json = serde_json::to_string(&src).expect("serializes");
        assert_eq!(
            json,
            r#"{"git":{"url":"https://git.example/shop.git","branch":"main","poll_secs":30}}"#
        );
    }
}
