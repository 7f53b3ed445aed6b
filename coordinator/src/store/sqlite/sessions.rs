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

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore;
    use crate::store::{SessionRow, Store};

    fn session(name: &str, expires_ms: u64) -> SessionRow {
        SessionRow {
            session_sha256: name.into(),
            token_sha256: "t".into(),
            created_ms: 1,
            expires_ms,
        }
    }

    #[test]
    fn a_new_session_deletes_the_expired_ones_and_sign_out_deletes_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("hoist.db")).unwrap();
        s.insert_session(&session("old", 100), 50).unwrap();
        s.insert_session(&session("keep", 10_000), 60).unwrap();
        assert!(s.session("old").unwrap().is_some(), "not expired at 60");
        s.insert_session(&session("new", 10_000), 100).unwrap();
        assert_eq!(s.session("old").unwrap(), None, "expired at 100");
        assert_eq!(s.session("keep").unwrap(), Some(session("keep", 10_000)));
        s.delete_session("keep").unwrap();
        assert_eq!(s.session("keep").unwrap(), None);
        s.delete_session("nothing").unwrap();
        assert!(s.session("new").unwrap().is_some());
    }
}
