//! The rows of pipelines and releases: a pipeline with its stages and its source's
//! standing, a release with its stages (copied from the pipeline when it was made, so a
//! later `pipeline apply` never changes a release on its way).
//!
//! Deliberately not here: any rule (`service::pipelines`) or SQL (`store::sqlite`).

use std::collections::BTreeMap;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{PipelineSource, ReleaseState, SourceStatus, StageState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineStageRow {
    pub group: String,
    pub manual_approval: bool,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRow {
    pub name: String,
    pub application: String,
    pub source: Option<PipelineSource>,
    pub stages: Vec<PipelineStageRow>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Where the source stands; default for a pipeline without one.
    pub source_status: SourceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStageRow {
    pub group: String,
    pub manual_approval: bool,
    pub variables: BTreeMap<String, String>,
    pub state: StageState,
    pub deployment_id: Option<String>,
    pub message: Option<String>,
    pub approved_by: Option<String>,
    pub approved_ms: Option<u64>,
    pub rejected_by: Option<String>,
    pub rejected_ms: Option<u64>,
    pub comment: Option<String>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

impl ReleaseStageRow {
    /// A stage of a new release, pending.
    pub fn new(stage: &PipelineStageRow) -> ReleaseStageRow {
        ReleaseStageRow {
            group: stage.group.clone(),
            manual_approval: stage.manual_approval,
            variables: stage.variables.clone(),
            state: StageState::Pending,
            deployment_id: None,
            message: None,
            approved_by: None,
            approved_ms: None,
            rejected_by: None,
            rejected_ms: None,
            comment: None,
            started_ms: None,
            ended_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub id: String,
    pub pipeline: String,
    pub application: String,
    pub revision_id: String,
    pub revision: Revision,
    pub state: ReleaseState,
    /// `operator`, `git` or `s3`.
    pub creator: String,
    /// A source's release: the commit or object version it was made for.
    pub source_ref: Option<String>,
    pub message: Option<String>,
    pub created_ms: u64,
    pub ended_ms: Option<u64>,
    /// In order; the first that has not succeeded is where the release is.
    pub stages: Vec<ReleaseStageRow>,
}
