//! Operator tokens of the store: created with a role and an optional name (shown once,
//! kept hashed), listed without their secrets, revoked, and a presented token looked up.
//! Not here: the configured operator token (the API's, always admin) or which route needs
//! which role (the API's one rule, `api::roles`).

use hoist_protocol::operator::{self as op, Role};

use super::{new_id, now_ms, Result, Service, ServiceError};
use crate::bounds::shown;
use crate::service::{new_secret, sha256_hex};
use crate::store::OperatorTokenRow;

/// Longest name of an operator token: that of an approval's `--by`.
pub const MAX_TOKEN_NAME: usize = super::pipelines::MAX_BY;

/// Who a request is from, once its operator token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The token's name; none for the configured token or an unnamed one.
    pub name: Option<String>,
    /// The token's id; none for the configured token.
    pub token_id: Option<String>,
}

impl Service {
    pub fn create_operator_token(&self, req: op::CreateOperatorToken) -> Result<op::OperatorToken> {
        if req.role == Role::Unknown {
            return Err(ServiceError::Invalid(
                "role: must be admin, deployer or viewer".into(),
            ));
        }
        if let Some(name) = &req.name {
            if name.is_empty() || name.len() > MAX_TOKEN_NAME || name.chars().any(char::is_control)
            {
                return Err(ServiceError::Invalid(format!(
                    "name {}: must be 1 to {MAX_TOKEN_NAME} bytes without control characters",
                    shown(name)
                )));
            }
        }
        let token = format!("hot_{}", new_secret());
        let row = OperatorTokenRow {
            id: new_id("op"),
            token_sha256: sha256_hex(&token),
            role: req.role,
            name: req.name,
            created_ms: now_ms(),
            revoked: false,
        };
        self.store.insert_operator_token(&row)?;
        tracing::info!(token_id = %row.id, role = %row.role, "operator token created");
        Ok(op::OperatorToken {
            token,
            id: row.id,
            role: row.role,
            name: row.name,
        })
    }

    pub fn operator_tokens(&self) -> Result<op::OperatorTokenList> {
        Ok(op::OperatorTokenList {
            tokens: self
                .store
                .operator_tokens()?
                .into_iter()
                .map(info)
                .collect(),
        })
    }

    pub fn revoke_operator_token(&self, id: &str) -> Result<op::OperatorTokenInfo> {
        let t = self
            .store
            .revoke_operator_token(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no operator token {}", shown(id))))?;
        tracing::info!(token_id = %t.id, "operator token revoked");
        Ok(info(t))
    }

    /// Who holds `token` when it is an operator token of the store; a revoked one is refused
    /// with a sentence saying so. `None` when the store knows no such token.
    pub fn authenticate_operator(&self, token: &str) -> Result<Option<Identity>> {
        self.authenticate_operator_digest(&sha256_hex(token))
    }

    /// [`Service::authenticate_operator`] from the token's hex sha256 (what a dashboard
    /// session keeps), so a session's role is its token's at each request.
    pub fn authenticate_operator_digest(&self, token_sha256: &str) -> Result<Option<Identity>> {
        match self.store.operator_token(token_sha256)? {
            None => Ok(None),
            Some(t) if t.revoked => Err(ServiceError::Unauthorized(format!(
                "operator token {} was revoked",
                t.id
            ))),
            Some(t) => Ok(Some(Identity {
                role: t.role,
                name: t.name,
                token_id: Some(t.id),
            })),
        }
    }
}

fn info(t: OperatorTokenRow) -> op::OperatorTokenInfo {
    op::OperatorTokenInfo {
        id: t.id,
        role: t.role,
        name: t.name,
        created_ms: t.created_ms,
        revoked: t.revoked,
    }
}
