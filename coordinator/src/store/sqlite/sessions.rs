//! The SQL of dashboard sessions (plain SQL, as every store method). Not here: cookies,
//! expiry rules or CSRF (the dashboard's `api::dashboard::session`).

use rusqlite::params;

use super::rows::{db, i};
use super::SqliteStore;
use crate::store::rows::{session_row as row, SESSION_COLS as COLS};
use crate::store::{Result, SessionRow};

pub(super) fn insert(s: &SqliteStore, t: &SessionRow, now_ms: u64) -> Result<()> {
    let conn = s.conn();
    conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [i(now_ms)])
        .map_err(db("deleting expired sessions"))?;
    conn.execute(
        &format!("INSERT INTO sessions ({COLS}) VALUES (?1, ?2, ?3, ?4)"),
        params![
            t.session_sha256,
            t.token_sha256,
            i(t.created_ms),
            i(t.expires_ms)
        ],
    )
    .map_err(db("inserting a session"))?;
    Ok(())
}

pub(super) fn by_hash(s: &SqliteStore, session_sha256: &str) -> Result<Option<SessionRow>> {
    s.query_one(
        "reading a session",
        &format!("SELECT {COLS} FROM sessions WHERE session_sha256 = ?1"),
        [session_sha256],
        row,
    )
}

pub(super) fn delete(s: &SqliteStore, session_sha256: &str) -> Result<()> {
    s.conn()
        .execute(
            "DELETE FROM sessions WHERE session_sha256 = ?1",
            [session_sha256],
        )
        .map_err(db("deleting a session"))?;
    Ok(())
}
