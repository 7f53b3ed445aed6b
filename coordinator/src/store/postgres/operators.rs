//! The SQL of operator tokens (role, name, revocation) and of the fleet's figures
//! (`GET /metrics`: deployments by state, the commands of deployments not ended by state).
//! Not here: what a role may do (the API's rule), how a presented token is checked (the
//! service hashes it and asks here), or what is made of the figures.

use hoist_protocol::operator::{CommandState, DeploymentState};

use super::rows::i;
use super::PgStore;
use crate::store::rows::{
    command_state_count, deployment_state_count, operator_token_row, OPERATOR_TOKEN_COLS,
};
use crate::store::{OperatorTokenRow, Result};

pub(super) fn insert(s: &PgStore, t: &OperatorTokenRow) -> Result<()> {
    s.execute(
        "inserting an operator token",
        &format!(
            "INSERT INTO operator_tokens ({OPERATOR_TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ),
        &[
            &t.id,
            &t.token_sha256,
            &t.role.as_str(),
            &t.name,
            &i(t.created_ms),
            &t.revoked,
        ],
    )?;
    Ok(())
}

pub(super) fn by_hash(s: &PgStore, token_sha256: &str) -> Result<Option<OperatorTokenRow>> {
    s.query_one(
        "reading an operator token",
        &format!("SELECT {OPERATOR_TOKEN_COLS} FROM operator_tokens WHERE token_sha256 = $1"),
        &[&token_sha256],
        operator_token_row,
    )
}

pub(super) fn all(s: &PgStore) -> Result<Vec<OperatorTokenRow>> {
    s.query(
        "listing operator tokens",
        &format!("SELECT {OPERATOR_TOKEN_COLS} FROM operator_tokens ORDER BY created_ms, id"),
        &[],
        operator_token_row,
    )
}

pub(super) fn revoke(s: &PgStore, id: &str) -> Result<Option<OperatorTokenRow>> {
    s.query_one(
        "revoking an operator token",
        &format!(
            "UPDATE operator_tokens SET revoked = TRUE WHERE id = $1 RETURNING {OPERATOR_TOKEN_COLS}"
        ),
        &[&id],
        operator_token_row,
    )
}

pub(super) fn deployment_state_counts(s: &PgStore) -> Result<Vec<(DeploymentState, u64)>> {
    s.query(
        "counting deployments",
        "SELECT state, count(*) FROM deployments GROUP BY state",
        &[],
        deployment_state_count,
    )
}

pub(super) fn active_command_state_counts(s: &PgStore) -> Result<Vec<(CommandState, u64)>> {
    s.query(
        "counting commands",
        "SELECT c.state, count(*) FROM deployments d JOIN commands c ON c.deployment_id = d.id \
         WHERE d.state IN ('pending', 'in_progress') GROUP BY c.state",
        &[],
        command_state_count,
    )
}
