//! The SQL of registration tokens and hosts: registration (a host and its token's use in
//! one transaction), operators' updates, and the batched write of hosts' last contacts. Not
//! here: credential checks or what a poll may change (the service's).

use super::rows::{host_row, i, pg, to_json, token_row, HOST_COLS, TOKEN_COLS};
use super::PgStore;
use crate::store::{HostContact, HostRow, RegistrationTokenRow, Result};

pub(super) fn insert_registration_token(s: &PgStore, t: &RegistrationTokenRow) -> Result<()> {
    s.execute(
        "inserting a registration token",
        &format!(
            "INSERT INTO registration_tokens ({TOKEN_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            &t.id,
            &t.token_sha256,
            &i(t.created_ms),
            &t.expires_ms.map(i),
            &t.max_uses.map(i64::from),
            &i64::from(t.uses),
            &t.revoked,
            &to_json(&t.allowed_tags),
        ],
    )?;
    Ok(())
}

pub(super) fn registration_token(
    s: &PgStore,
    token_sha256: &str,
) -> Result<Option<RegistrationTokenRow>> {
    s.query_one(
        "reading a registration token",
        &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE token_sha256 = $1"),
        &[&token_sha256],
        token_row,
    )
}

pub(super) fn registration_tokens(s: &PgStore) -> Result<Vec<RegistrationTokenRow>> {
    s.query(
        "listing registration tokens",
        &format!("SELECT {TOKEN_COLS} FROM registration_tokens ORDER BY created_ms, id"),
        &[],
        token_row,
    )
}

pub(super) fn revoke_registration_token(
    s: &PgStore,
    id: &str,
) -> Result<Option<RegistrationTokenRow>> {
    s.query_one(
        "revoking a registration token",
        &format!(
            "UPDATE registration_tokens SET revoked = TRUE WHERE id = $1 RETURNING {TOKEN_COLS}"
        ),
        &[&id],
        token_row,
    )
}

pub(super) fn register_host(s: &PgStore, h: &HostRow, token_id: &str) -> Result<()> {
    s.run(async {
        let mut client = s.client("registering a host").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        super::rows::insert_host(&tx, h)
            .await
            .map_err(pg("inserting a host"))?;
        tx.execute(
            "UPDATE registration_tokens SET uses = uses + 1 WHERE id = $1",
            &[&token_id],
        )
        .await
        .map_err(pg("counting a registration token's use"))?;
        tx.commit().await.map_err(pg("committing a registration"))
    })
}

pub(super) fn active_host_named(s: &PgStore, name: &str) -> Result<Option<HostRow>> {
    s.query_one(
        "reading a host by name",
        &format!("SELECT {HOST_COLS} FROM hosts WHERE name = $1 AND NOT revoked LIMIT 1"),
        &[&name],
        host_row,
    )
}

pub(super) fn insert_host(s: &PgStore, h: &HostRow) -> Result<()> {
    s.run(async {
        let mut client = s.client("inserting a host").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        super::rows::insert_host(&tx, h)
            .await
            .map_err(pg("inserting a host"))?;
        tx.commit().await.map_err(pg("committing a host"))
    })
}

pub(super) fn update_host(s: &PgStore, h: &HostRow) -> Result<()> {
    s.execute(
        "updating a host",
        "UPDATE hosts SET name = $2, tags_json = $3, agent_version = $4, \
         last_seen_ms = GREATEST(last_seen_ms, $5), revoked = $6, requested_name = $7, \
         requested_tags_json = $8 WHERE id = $1",
        &[
            &h.id,
            &h.name,
            &to_json(&h.tags),
            &h.agent_version,
            &i(h.last_seen_ms),
            &h.revoked,
            &h.requested_name,
            &h.requested_tags.as_ref().map(to_json),
        ],
    )?;
    Ok(())
}

pub(super) fn host(s: &PgStore, id: &str) -> Result<Option<HostRow>> {
    s.query_one(
        "reading a host",
        &format!("SELECT {HOST_COLS} FROM hosts WHERE id = $1"),
        &[&id],
        host_row,
    )
}

pub(super) fn hosts(s: &PgStore) -> Result<Vec<HostRow>> {
    s.query(
        "listing hosts",
        &format!("SELECT {HOST_COLS} FROM hosts ORDER BY name, id"),
        &[],
        host_row,
    )
}

pub(super) fn write_contacts(s: &PgStore, contacts: &[(String, HostContact)]) -> Result<()> {
    if contacts.is_empty() {
        return Ok(());
    }
    // A wave of commands makes a fleet's worth of contacts in one second: they go as one
    // statement per kind, over column arrays (`UNNEST`), not one statement per host.
    let mut sorted: Vec<&(String, HostContact)> = contacts.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<&str> = sorted.iter().map(|(id, _)| id.as_str()).collect();
    let mut seen = (Vec::new(), Vec::new());
    let mut told = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, c) in &sorted {
        match &c.details {
            None => {
                seen.0.push(id.as_str());
                seen.1.push(i(c.last_seen_ms));
            }
            Some(d) => {
                told.0.push(id.as_str());
                told.1.push(d.name.as_str());
                told.2.push(to_json(&d.tags));
                told.3.push(d.agent_version.as_str());
                told.4.push(i(c.last_seen_ms));
            }
        }
    }
    s.run(async {
        let mut client = s.client("writing hosts' last contacts").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        // The rows are locked in host order first, so two replicas writing the same hosts
        // never deadlock.
        let lock = tx
            .prepare_cached("SELECT 1 FROM hosts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .await
            .map_err(pg("locking hosts for their last contacts"))?;
        tx.execute(&lock, &[&ids])
            .await
            .map_err(pg("locking hosts for their last contacts"))?;
        if !seen.0.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "UPDATE hosts h SET last_seen_ms = GREATEST(h.last_seen_ms, u.ms) \
                     FROM UNNEST($1::text[], $2::bigint[]) AS u(id, ms) WHERE h.id = u.id",
                )
                .await
                .map_err(pg("updating hosts' last contacts"))?;
            tx.execute(&stmt, &[&seen.0, &seen.1])
                .await
                .map_err(pg("updating hosts' last contacts"))?;
        }
        if !told.0.is_empty() {
            // What the host says about itself is only a request: its name and tags are the
            // operator's. A request equal to what is set clears it.
            let stmt = tx
                .prepare_cached(
                    "UPDATE hosts h SET agent_version = u.agent_version, \
                     last_seen_ms = GREATEST(h.last_seen_ms, u.ms), \
                     requested_name = CASE WHEN u.name = h.name THEN NULL ELSE u.name END, \
                     requested_tags_json = \
                     CASE WHEN u.tags = h.tags_json THEN NULL ELSE u.tags END \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::bigint[]) AS u(id, name, tags, agent_version, ms) WHERE h.id = u.id",
                )
                .await
                .map_err(pg("updating hosts' last contacts"))?;
            tx.execute(&stmt, &[&told.0, &told.1, &told.2, &told.3, &told.4])
                .await
                .map_err(pg("updating hosts' last contacts"))?;
        }
        tx.commit()
            .await
            .map_err(pg("committing hosts' last contacts"))
    })
}
