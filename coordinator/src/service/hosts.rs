//! Registration tokens, host registration, what a poll says about its host (kept in memory
//! and written by the timer), operators' changes of tags, revocation and the host views.
//! Not here: credentials checked (`auth`), command leases and heartbeats (`leases`).

use std::collections::BTreeMap;

use hoist_protocol::agent::{self, PollRequest, RegisterRequest, RegisterResponse};
use hoist_protocol::operator as op;

use super::auth::{new_secret, sha256_hex};
use super::deployments::agent_command;
use super::{locked, new_id, now_ms, Result, Service, ServiceError};
use crate::bounds::{self, shown};
use crate::store::{HostContact, HostDetails, HostRow, RegistrationTokenRow};

impl Service {
    // ---- registration tokens and hosts ----

    pub fn create_registration_token(
        &self,
        req: op::CreateRegistrationToken,
    ) -> Result<op::RegistrationToken> {
        if req.max_uses == Some(0) {
            return Err(ServiceError::Invalid("max_uses: must be at least 1".into()));
        }
        if req.expires_secs == Some(0) {
            return Err(ServiceError::Invalid(
                "expires_secs: must be at least 1".into(),
            ));
        }
        for (k, values) in &req.allowed_tags {
            if values.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "allowed_tags.{k}: give at least one allowed value"
                )));
            }
            for v in values {
                bounds::check_tag(k, v)
                    .map_err(|e| ServiceError::Invalid(format!("allowed_tags: {e}")))?;
            }
        }
        let now = now_ms();
        let token = format!("hrt_{}", new_secret());
        let row = RegistrationTokenRow {
            id: new_id("t"),
            token_sha256: sha256_hex(&token),
            created_ms: now,
            expires_ms: req
                .expires_secs
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            max_uses: req.max_uses,
            uses: 0,
            revoked: false,
            allowed_tags: req.allowed_tags,
        };
        self.store.insert_registration_token(&row)?;
        tracing::info!(token_id = %row.id, "registration token created");
        Ok(op::RegistrationToken { token, id: row.id })
    }

    pub fn registration_tokens(&self) -> Result<op::RegistrationTokenList> {
        Ok(op::RegistrationTokenList {
            tokens: self
                .store
                .registration_tokens()?
                .into_iter()
                .map(token_info)
                .collect(),
        })
    }

    pub fn revoke_registration_token(&self, id: &str) -> Result<op::RegistrationTokenInfo> {
        let t = self.store.revoke_registration_token(id)?.ok_or_else(|| {
            ServiceError::NotFound(format!("no registration token {}", shown(id)))
        })?;
        tracing::info!(token_id = %t.id, "registration token revoked");
        Ok(token_info(t))
    }

    /// Registers a host with a registration token that is known, not revoked, not expired
    /// and not used up, whose tag scope allows the host's tags, under a name no active host
    /// has (a host of that name that never polled is revoked instead). The host counts as
    /// seen only from its first poll.
    pub fn register(&self, token: &str, req: RegisterRequest) -> Result<RegisterResponse> {
        let now = now_ms();
        // A token's use count and the uniqueness of names are read, then written.
        let _lock = self.lock()?;
        let t = self.usable_registration_token(token, now)?;
        bounds::check_host_name(&req.name).map_err(ServiceError::Invalid)?;
        bounds::check_tags(&req.tags).map_err(ServiceError::Invalid)?;
        bounds::check_agent_version(&req.agent_version).map_err(ServiceError::Invalid)?;
        if !t.allowed_tags.is_empty() {
            for (k, v) in &req.tags {
                if !t.allowed_tags.get(k).is_some_and(|vs| vs.contains(v)) {
                    return Err(ServiceError::Unauthorized(format!(
                        "registration token {} does not allow tag {k}={v} (it allows {})",
                        t.id,
                        describe_scope(&t.allowed_tags)
                    )));
                }
            }
        }
        // Whether a host of that name has polled: its last poll may not be written yet.
        self.flush_contacts()?;
        if let Some(mut orphan) = self
            .store
            .active_host_named(&req.name)?
            .filter(|h| h.last_seen_ms == 0)
        {
            // Registered but never polled: its agent lost the answer (it could not write
            // host.json, say) and registers again. The orphan never was a target.
            orphan.revoked = true;
            self.store.update_host(&orphan)?;
            self.host_written(&orphan);
            tracing::info!(host_id = %orphan.id, name = ?orphan.name,
                "host that never polled revoked: its name registers again");
        }
        if let Some(taken) = self.store.active_host_named(&req.name)? {
            return Err(ServiceError::Conflict(format!(
                "host name {} is taken by active host {}; if that host is gone, revoke it \
                 with `hoist hosts revoke {}` and register again",
                req.name, taken.id, taken.id
            )));
        }
        let secret = new_secret();
        let host = HostRow {
            id: new_id("h"),
            name: req.name,
            tags: req.tags,
            agent_version: req.agent_version,
            secret_sha256: sha256_hex(&secret),
            first_seen_ms: now,
            last_seen_ms: 0,
            revoked: false,
            requested_name: None,
            requested_tags: None,
        };
        self.store.register_host(&host, &t.id)?;
        tracing::info!(host_id = %host.id, name = ?host.name, token_id = %t.id, "host registered");
        Ok(RegisterResponse {
            host_id: host.id,
            host_secret: secret,
        })
    }

    /// Resolves a host by id, or else by the name of an active host.
    pub(super) fn host_by_id_or_name(&self, key: &str) -> Result<HostRow> {
        if let Some(h) = self.store.host(key)? {
            return Ok(h);
        }
        self.store.active_host_named(key)?.ok_or_else(|| {
            ServiceError::NotFound(format!("no host with id or name {}", shown(key)))
        })
    }

    /// An operator's change of a host's tags (and, on accept, its name): the host's own
    /// requests take effect only through here.
    pub fn set_host_tags(&self, key: &str, req: op::SetHostTags) -> Result<op::HostInfo> {
        if !req.accept && req.set.is_empty() && req.remove.is_empty() {
            return Err(ServiceError::Invalid(
                "nothing to change: give KEY=VALUE tags, --remove KEY or --accept".into(),
            ));
        }
        // The host's latest requests.
        self.flush_contacts()?;
        let _lock = self.lock()?;
        let mut host = self.host_by_id_or_name(key)?;
        if host.revoked {
            return Err(ServiceError::Conflict(format!(
                "host {} ({}) was revoked",
                host.name, host.id
            )));
        }
        if req.accept {
            if host.requested_name.is_none() && host.requested_tags.is_none() {
                return Err(ServiceError::Conflict(format!(
                    "host {} ({}) asks for no change to accept",
                    host.name, host.id
                )));
            }
            if let Some(name) = host.requested_name.take() {
                bounds::check_host_name(&name).map_err(ServiceError::Invalid)?;
                if let Some(taken) = self
                    .store
                    .active_host_named(&name)?
                    .filter(|t| t.id != host.id)
                {
                    return Err(ServiceError::Conflict(format!(
                        "host {} asks for the name {name}, which active host {} has",
                        host.id, taken.id
                    )));
                }
                host.name = name;
            }
            if let Some(tags) = host.requested_tags.take() {
                host.tags = tags;
            }
        }
        for (k, v) in req.set {
            host.tags.insert(k, v);
        }
        for k in &req.remove {
            host.tags.remove(k);
        }
        bounds::check_tags(&host.tags).map_err(ServiceError::Invalid)?;
        if host.requested_tags.as_ref() == Some(&host.tags) {
            host.requested_tags = None;
        }
        self.store.update_host(&host)?;
        self.host_written(&host);
        tracing::info!(host_id = %host.id, name = ?host.name, tags = ?host.tags, "host tags set");
        self.host_info(host, now_ms())
    }

    /// Notes what a poll says about its host: name, tags, agent version, last seen. Kept
    /// in memory until the next write of contacts (at most a second or so).
    /// A name or tags that differ from the host's are recorded as a request for an
    /// operator; a request that breaks the limits of [`bounds`] is not recorded at all.
    pub fn host_polled(&self, host_id: &str, req: &PollRequest) {
        let valid = bounds::check_host_name(&req.name)
            .and_then(|()| bounds::check_tags(&req.tags))
            .and_then(|()| bounds::check_agent_version(&req.agent_version));
        let details = match valid {
            Ok(()) => Some(HostDetails {
                name: req.name.clone(),
                tags: req.tags.clone(),
                agent_version: req.agent_version.clone(),
            }),
            Err(why) => {
                tracing::warn!(host_id = ?host_id, problem = ?why,
                    "ignoring what a poll says about its host");
                None
            }
        };
        self.note_contact(
            host_id,
            HostContact {
                last_seen_ms: now_ms(),
                details,
            },
        );
    }

    pub(super) fn note_contact(&self, host_id: &str, contact: HostContact) {
        let mut contacts = locked(&self.contacts);
        match contacts.get_mut(host_id) {
            Some(c) => c.merge(contact),
            None => {
                contacts.insert(host_id.to_owned(), contact);
            }
        }
    }

    /// The contacts noted, and their table with them: a burst of polls (a fleet coming
    /// back) leaves no table sized for it behind, while the next second's polls fill a
    /// new one.
    fn take_contacts(&self) -> Vec<(String, HostContact)> {
        std::mem::take(&mut *locked(&self.contacts))
            .into_iter()
            .collect()
    }

    /// Puts back contacts whose write failed, under any noted since.
    fn restore_contacts(&self, taken: Vec<(String, HostContact)>) {
        let mut contacts = locked(&self.contacts);
        for (id, mut c) in taken {
            if let Some(newer) = contacts.remove(&id) {
                c.merge(newer);
            }
            contacts.insert(id, c);
        }
    }

    /// Writes the hosts' contacts noted since the last write, in one transaction, then the
    /// commands' hand-outs and heartbeats (their leases). A host's last contact is a
    /// liveness hint: one lost in a crash is renewed by its next poll.
    pub fn flush_contacts(&self) -> Result<()> {
        let contacts = self.take_contacts();
        if !contacts.is_empty() {
            if let Err(e) = self.store.write_contacts(&contacts) {
                self.restore_contacts(contacts);
                return Err(e.into());
            }
        }
        // Commands' hand-outs and heartbeats, the commands' own contacts, go with them.
        self.flush_leases()
    }

    pub fn revoke_host(&self, host_id: &str) -> Result<op::HostInfo> {
        self.flush_contacts()?;
        let mut host = self
            .store
            .host(host_id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no host {host_id}")))?;
        host.revoked = true;
        self.store.update_host(&host)?;
        // Overwrites whatever the credentials held, so its next request is refused (here,
        // and on other coordinators, which drop theirs).
        self.host_written(&host);
        self.host_info(host, now_ms())
    }

    pub(super) fn host_info(&self, h: HostRow, now: u64) -> Result<op::HostInfo> {
        let groups = self.one_host_groups(&h)?;
        self.host_view(h, groups, now)
    }

    fn host_view(
        &self,
        h: HostRow,
        groups: Vec<op::HostGroupSync>,
        now: u64,
    ) -> Result<op::HostInfo> {
        let mut deployed: Vec<op::HostRevision> = Vec::new();
        for (d, c) in self.store.succeeded_commands_of_host(&h.id)? {
            if deployed
                .iter()
                .any(|r| r.application == d.application && r.deployment_group == d.group_name)
            {
                continue;
            }
            deployed.push(op::HostRevision {
                application: d.application,
                deployment_group: d.group_name,
                deployment_id: d.id,
                revision: d.revision,
                ended_ms: c.ended_ms.unwrap_or(0),
            });
        }
        Ok(op::HostInfo {
            online: !h.revoked && self.online(&h, now),
            id: h.id,
            name: h.name,
            tags: h.tags,
            agent_version: h.agent_version,
            first_seen_ms: h.first_seen_ms,
            last_seen_ms: h.last_seen_ms,
            revoked: h.revoked,
            requested_tags: h.requested_tags,
            requested_name: h.requested_name,
            deployed,
            groups,
        })
    }

    pub fn hosts(&self) -> Result<op::HostList> {
        self.flush_contacts()?;
        let now = now_ms();
        let hosts = self.store.hosts()?;
        let mut groups = self.all_host_groups(&hosts)?;
        let hosts = hosts
            .into_iter()
            .map(|h| {
                let g = groups.remove(&h.id).unwrap_or_default();
                self.host_view(h, g, now)
            })
            .collect::<Result<_>>()?;
        Ok(op::HostList { hosts })
    }

    /// The command the host should work on: its oldest command in progress (handed out
    /// again after an agent restart; the agent dedupes by command id), else a catch-up it
    /// is due.
    pub fn next_command(&self, host: &HostRow) -> Result<Option<agent::Command>> {
        let Some(cmd) = self.store.in_progress_command_for_host(&host.id)? else {
            return self.catch_up_for(host);
        };
        let Some(d) = self.store.deployment(&cmd.deployment_id)? else {
            return Ok(None);
        };
        Ok(Some(agent_command(&cmd, &d)))
    }
}

/// `env=prod, role=web|db`
fn describe_scope(scope: &BTreeMap<String, Vec<String>>) -> String {
    scope
        .iter()
        .map(|(k, vs)| format!("{k}={}", vs.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn token_info(t: RegistrationTokenRow) -> op::RegistrationTokenInfo {
    op::RegistrationTokenInfo {
        status: super::auth::token_status(&t, now_ms()),
        id: t.id,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        max_uses: t.max_uses,
        uses: t.uses,
        revoked: t.revoked,
        allowed_tags: t.allowed_tags,
    }
}
