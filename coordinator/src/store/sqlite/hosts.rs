//! The SQL of registration tokens and hosts: registration (a host and its token's use in
//! one transaction), operators' updates, and the batched write of hosts' last contacts. Not
//! here: credential checks or what a poll may change (the service's).

use rusqlite::params;

use super::rows::{db, host_row, i, to_json, token_row, HOST_COLS, TOKEN_COLS};
use super::SqliteStore;
use crate::store::{HostContact, HostRow, RegistrationTokenRow, Result};

pub(super) fn insert_registration_token(s: &SqliteStore, t: &RegistrationTokenRow) -> Result<()> {
    s.conn()
        .execute(
            &format!(
                "INSERT INTO registration_tokens ({TOKEN_COLS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                t.id,
                t.token_sha256,
                i(t.created_ms),
                t.expires_ms.map(i),
                t.max_uses,
                t.uses,
                t.revoked,
                to_json(&t.allowed_tags)
            ],
        )
        .map_err(db("inserting a registration token"))?;
    Ok(())
}

pub(super) fn registration_token(
    s: &SqliteStore,
    token_sha256: &str,
) -> Result<Option<RegistrationTokenRow>> {
    s.query_one(
        "reading a registration token",
        &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE token_sha256 = ?1"),
        [token_sha256],
        token_row,
    )
}

pub(super) fn registration_tokens(s: &SqliteStore) -> Result<Vec<RegistrationTokenRow>> {
    s.query(
        "listing registration tokens",
        &format!("SELECT {TOKEN_COLS} FROM registration_tokens ORDER BY created_ms, id"),
        [],
        token_row,
    )
}

pub(super) fn revoke_registration_token(
    s: &SqliteStore,
    id: &str,
) -> Result<Option<RegistrationTokenRow>> {
    s.conn()
        .execute(
            "UPDATE registration_tokens SET revoked = 1 WHERE id = ?1",
            [id],
        )
        .map_err(db("revoking a registration token"))?;
    s.query_one(
        "reading a registration token",
        &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE id = ?1"),
        [id],
        token_row,
    )
}

pub(super) fn register_host(s: &SqliteStore, h: &HostRow, token_id: &str) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    super::rows::insert_host(&tx, h).map_err(db("inserting a host"))?;
    tx.execute(
        "UPDATE registration_tokens SET uses = uses + 1 WHERE id = ?1",
        [token_id],
    )
    .map_err(db("counting a registration token's use"))?;
    tx.commit().map_err(db("committing a registration"))
}

pub(super) fn active_host_named(s: &SqliteStore, name: &str) -> Result<Option<HostRow>> {
    s.query_one(
        "reading a host by name",
        &format!("SELECT {HOST_COLS} FROM hosts WHERE name = ?1 AND revoked = 0 LIMIT 1"),
        [name],
        host_row,
    )
}

pub(super) fn insert_host(s: &SqliteStore, h: &HostRow) -> Result<()> {
    super::rows::insert_host(&s.conn(), h).map_err(db("inserting a host"))?;
    Ok(())
}

pub(super) fn update_host(s: &SqliteStore, h: &HostRow) -> Result<()> {
    s.conn()
        .execute(
            "UPDATE hosts SET name = ?2, tags_json = ?3, agent_version = ?4, \
             last_seen_ms = max(last_seen_ms, ?5), revoked = ?6, requested_name = ?7, \
             requested_tags_json = ?8 WHERE id = ?1",
            params![
                h.id,
                h.name,
                to_json(&h.tags),
                h.agent_version,
                i(h.last_seen_ms),
                h.revoked,
                h.requested_name,
                h.requested_tags.as_ref().map(to_json)
            ],
        )
        .map_err(db("updating a host"))?;
    Ok(())
}

pub(super) fn host(s: &SqliteStore, id: &str) -> Result<Option<HostRow>> {
    s.query_one(
        "reading a host",
        &format!("SELECT {HOST_COLS} FROM hosts WHERE id = ?1"),
        [id],
        host_row,
    )
}

pub(super) fn hosts(s: &SqliteStore) -> Result<Vec<HostRow>> {
    s.query(
        "listing hosts",
        &format!("SELECT {HOST_COLS} FROM hosts ORDER BY name, id"),
        [],
        host_row,
    )
}

pub(super) fn write_contacts(s: &SqliteStore, contacts: &[(String, HostContact)]) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    for (id, c) in contacts {
        match &c.details {
            // What the host says about itself is only a request: its name and tags
            // are the operator's. A request equal to what is set clears it.
            Some(d) => tx
                .prepare_cached(
                    "UPDATE hosts SET agent_version = ?4, \
                     last_seen_ms = max(last_seen_ms, ?5), \
                     requested_name = CASE WHEN ?2 = name THEN NULL ELSE ?2 END, \
                     requested_tags_json = CASE WHEN ?3 = tags_json THEN NULL ELSE ?3 END \
                     WHERE id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        d.name,
                        to_json(&d.tags),
                        d.agent_version,
                        i(c.last_seen_ms)
                    ])
                }),
            None => tx
                .prepare_cached(
                    "UPDATE hosts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![id, i(c.last_seen_ms)])),
        }
        .map_err(db("updating a host's last contact"))?;
    }
    tx.commit().map_err(db("committing hosts' last contacts"))
}
