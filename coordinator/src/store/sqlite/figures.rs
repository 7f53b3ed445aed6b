//! The SQL of the fleet's figures (`GET /metrics`): deployments by state, and the commands
//! of deployments not ended by state, each one `GROUP BY`. Not here: what is made of them
//! (the service's figures, the metrics' encoding).

use hoist_protocol::operator::{CommandState, DeploymentState};

use super::SqliteStore;
use crate::store::rows::{command_state_count, deployment_state_count};
use crate::store::Result;

pub(super) fn deployment_state_counts(s: &SqliteStore) -> Result<Vec<(DeploymentState, u64)>> {
    s.query(
        "counting deployments",
        "SELECT state, count(*) FROM deployments GROUP BY state",
        [],
        deployment_state_count,
    )
}

pub(super) fn active_command_state_counts(s: &SqliteStore) -> Result<Vec<(CommandState, u64)>> {
    s.query(
        "counting commands",
        "SELECT c.state, count(*) FROM deployments d JOIN commands c ON c.deployment_id = d.id \
         WHERE d.state IN ('pending', 'in_progress') GROUP BY c.state",
        [],
        command_state_count,
    )
}
