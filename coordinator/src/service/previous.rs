//! The group's previous successful revision, which `hoist deploy create --previous` deploys
//! (`RevisionSource::Previous`). It only picks the revision; the deployment is created like
//! any other (`deployments`).

use hoist_protocol::agent;
use hoist_protocol::operator::{Creator, DeploymentState};
use hoist_protocol::signature::SignedManifest;

use super::{Result, Service, ServiceError};
use crate::store::GroupRow;

/// How many of an application's latest deployments `--previous` looks through.
const PREVIOUS_LOOKBACK: u32 = 1000;

impl Service {
    /// The group's previous successful revision: the newest successful deployment of the
    /// group (not a catch-up, which repeats the target) whose revision is not the target's,
    /// with the signed manifest that deployment carried (or `signature`, checked, if given).
    pub(super) fn previous_revision(
        &self,
        group: &GroupRow,
        signature: Option<SignedManifest>,
    ) -> Result<(String, agent::Revision, Option<SignedManifest>)> {
        let target = match &group.target_deployment_id {
            Some(id) => self.store.deployment(id)?,
            None => None,
        };
        let none = || {
            ServiceError::Conflict(format!(
                "deployment group {} of application {} has no successful revision before its current one",
                group.name, group.application
            ))
        };
        let target = target.ok_or_else(none)?;
        let previous = self
            .store
            .deployments(Some(&group.application), PREVIOUS_LOOKBACK)?
            .into_iter()
            .filter(|d| {
                d.group_id == group.id
                    && d.state == DeploymentState::Succeeded
                    && d.creator != Creator::CatchUp
            })
            .find(|d| match (&d.revision_id, &target.revision_id) {
                (Some(a), Some(b)) => a != b,
                _ => d.revision != target.revision,
            })
            .ok_or_else(none)?;
        let signature = match signature {
            Some(signed) => {
                super::signatures::check(&group.application, &previous.revision, &signed)?;
                Some(signed)
            }
            None => previous.signature,
        };
        match previous.revision_id {
            Some(id) => Ok((id, previous.revision, signature)),
            None => {
                let info =
                    self.create_revision(&group.application, previous.revision, signature)?;
                Ok((info.id, info.revision, info.signature))
            }
        }
    }
}
