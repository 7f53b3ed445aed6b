//! The SQL of operator tokens (role, name, revocation). Not here: what a role may do (the
//! API's rule) or how a presented token is checked (the service hashes it and asks here).

use rusqlite::params;

use super::rows::{db, i};
use super::SqliteStore;
use crate::store::rows::{operator_token_row as row, OPERATOR_TOKEN_COLS as COLS};
use crate::store::{OperatorTokenRow, Result};

pub(super) fn insert(s: &SqliteStore, t: &OperatorTokenRow) -> Result<()> {
    s.conn()
        .execute(
            &format!("INSERT INTO operator_tokens ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                t.id,
                t.token_sha256,
                t.role.as_str(),
                t.name,
                i(t.created_ms),
                t.revoked
            ],
        )
        .map_err(db("inserting an operator token"))?;
    Ok(())
}

pub(super) fn by_hash(s: &SqliteStore, token_sha256: &str) -> Result<Option<OperatorTokenRow>> {
    s.query_one(
        "reading an operator token",
        &format!("SELECT {COLS} FROM operator_tokens WHERE token_sha256 = ?1"),
        [token_sha256],
        row,
    )
}

pub(super) fn all(s: &SqliteStore) -> Result<Vec<OperatorTokenRow>> {
    s.query(
        "listing operator tokens",
        &format!("SELECT {COLS} FROM operator_tokens ORDER BY created_ms, id"),
        [],
        row,
    )
}

pub(super) fn revoke(s: &SqliteStore, id: &str) -> Result<Option<OperatorTokenRow>> {
    s.conn()
        .execute("UPDATE operator_tokens SET revoked = 1 WHERE id = ?1", [id])
        .map_err(db("revoking an operator token"))?;
    s.query_one(
        "reading an operator token",
        &format!("SELECT {COLS} FROM operator_tokens WHERE id = ?1"),
        [id],
        row,
    )
}
