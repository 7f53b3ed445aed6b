//! The SQL of dashboard sessions. Not here: cookies, expiry rules or CSRF (the dashboard's
//! `api::dashboard::session`).

use super::rows::{i, pg};
use super::PgStore;
use crate::store::rows::{session_row, SESSION_COLS};
use crate::store::{Result, SessionRow};

/// Inserts a session, deleting the expired ones in the same transaction.
pub(super) fn insert(s: &PgStore, t: &SessionRow, now_ms: u64) -> Result<()> {
    s.run(async {
        let mut client = s.client("inserting a session").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        tx.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[&i(now_ms)])
            .await
            .map_err(pg("deleting expired sessions"))?;
        tx.execute(
            &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4)"),
            &[
                &t.session_sha256,
                &t.token_sha256,
                &i(t.created_ms),
                &i(t.expires_ms),
            ],
        )
        .await
        .map_err(pg("inserting a session"))?;
        tx.commit().await.map_err(pg("committing a session"))
    })
}

pub(super) fn by_hash(s: &PgStore, session_sha256: &str) -> Result<Option<SessionRow>> {
    s.query_one(
        "reading a session",
        &format!("SELECT {SESSION_COLS} FROM sessions WHERE session_sha256 = $1"),
        &[&session_sha256],
        session_row,
    )
}

pub(super) fn delete(s: &PgStore, session_sha256: &str) -> Result<()> {
    s.execute(
        "deleting a session",
        "DELETE FROM sessions WHERE session_sha256 = $1",
        &[&session_sha256],
    )?;
    Ok(())
}
