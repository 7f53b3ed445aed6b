//! Credentials checked: a host's secret against its stored hash (from the in-memory copy
//! of the hosts when it has one), a registration token's state, and the helpers that make
//! and compare secrets. Not here: where a credential comes from (the `api` extractors read
//! it from the request head) or what a registration does (`hosts`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hoist_protocol::operator::TokenStatus;
use sha2::{Digest, Sha256};

use super::{locked, now_ms, Result, Service, ServiceError};
use crate::store::{HostRow, RegistrationTokenRow};

/// A fresh secret: 32 random bytes, hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ (their lengths, fixed
/// by the token formats, are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths are compared first and are not secret (digests have one length).
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

impl Service {
    /// The host named by `host_id` when `secret` is its secret and it is not revoked: the
    /// credentials cache's own row, shared (a held poll keeps it, so it is not copied per
    /// request).
    pub fn authenticate_host(&self, host_id: &str, secret: &str) -> Result<Arc<HostRow>> {
        if let Some(known) = self.authenticate_known_host(host_id, secret) {
            return known;
        }
        let epoch = self.credentials_epoch.load(Ordering::SeqCst);
        let host = self.store.host(host_id)?.map(Arc::new);
        if let Some(h) = &host {
            // A revocation since the read has written its own entry: keep that one. One
            // dropped on another coordinator's word meanwhile: cache nothing.
            let mut credentials = locked(&self.credentials);
            if self.credentials_epoch.load(Ordering::SeqCst) == epoch {
                credentials.entry(h.id.clone()).or_insert_with(|| h.clone());
            }
        }
        check_host(host_id, secret, host)
    }

    /// [`Service::authenticate_host`] without the store: `None` when the host is not known
    /// here yet. Cheap enough for the async runtime.
    pub fn authenticate_known_host(
        &self,
        host_id: &str,
        secret: &str,
    ) -> Option<Result<Arc<HostRow>>> {
        let host = locked(&self.credentials).get(host_id).cloned()?;
        Some(check_host(host_id, secret, Some(host)))
    }

    /// Whether `token` is a registration token that may register a host now; the API calls
    /// it from the request head, before reading a registration's body. `register` checks
    /// again under the service lock, since a use may have been taken in between.
    pub fn check_registration_token(&self, token: &str) -> Result<()> {
        self.usable_registration_token(token, now_ms()).map(|_| ())
    }

    /// The registration token `token` if it may register a host at `now`: known, not
    /// revoked, not expired and not used up.
    pub(super) fn usable_registration_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<RegistrationTokenRow> {
        let t = self
            .store
            .registration_token(&sha256_hex(token))?
            .ok_or_else(|| ServiceError::Unauthorized("unknown registration token".into()))?;
        let refusal = match token_status(&t, now) {
            TokenStatus::Usable => return Ok(t),
            TokenStatus::Unknown => format!("registration token {} is not usable", t.id),
            TokenStatus::Revoked => format!("registration token {} was revoked", t.id),
            TokenStatus::Expired => format!(
                "registration token {} expired at {}",
                t.id,
                rfc3339(t.expires_ms.unwrap_or(now))
            ),
            TokenStatus::UsedUp => {
                let max = t.max_uses.unwrap_or(t.uses);
                format!(
                    "registration token {} is used up ({max} of {max} registrations)",
                    t.id
                )
            }
        };
        Err(ServiceError::Unauthorized(refusal))
    }
}

/// Whether `t` registers hosts at `now`: the one judgement of a token's usability, for
/// registration and for listing.
pub(super) fn token_status(t: &RegistrationTokenRow, now: u64) -> TokenStatus {
    if t.revoked {
        TokenStatus::Revoked
    } else if t.expires_ms.is_some_and(|e| now >= e) {
        TokenStatus::Expired
    } else if t.max_uses.is_some_and(|m| t.uses >= m) {
        TokenStatus::UsedUp
    } else {
        TokenStatus::Usable
    }
}

fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `host` (as stored under `host_id`) when `secret` is its secret and it is not revoked.
fn check_host(host_id: &str, secret: &str, host: Option<Arc<HostRow>>) -> Result<Arc<HostRow>> {
    match host {
        Some(h)
            if !h.revoked
                && constant_time_eq(h.secret_sha256.as_bytes(), sha256_hex(secret).as_bytes()) =>
        {
            Ok(h)
        }
        Some(h) if h.revoked => Err(ServiceError::Unauthorized(format!(
            "host {host_id} was revoked"
        ))),
        _ => Err(ServiceError::Unauthorized(
            "unknown host or wrong host secret".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        let hash = sha256_hex("s3cret");
        assert!(constant_time_eq(
            hash.as_bytes(),
            sha256_hex("s3cret").as_bytes()
        ));
        assert!(!constant_time_eq(
            hash.as_bytes(),
            sha256_hex("s3creT").as_bytes()
        ));
        assert!(!constant_time_eq(hash.as_bytes(), &hash.as_bytes()[..63]));
        assert!(!constant_time_eq(b"", hash.as_bytes()));
        assert!(constant_time_eq(b"", b""));
    }
}
