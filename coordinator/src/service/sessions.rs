//! Dashboard sessions: a browser that signed in with an operator token holds a random
//! session secret (its cookie); the store keeps its hash and the token's hash, so a session
//! survives a restart and its role follows its token (a revoked token ends its sessions at
//! once). The CSRF token of a session is derived from its secret. Not here: cookies and
//! forms (the dashboard in `api`), or which role a page needs (`api::roles`).

use std::time::Duration;

use super::{new_secret, now_ms, sha256_hex, Result, Service};
use crate::store::SessionRow;

/// How long a session lasts from its sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

impl Service {
    /// A new session for the operator token whose hex sha256 is `token_sha256` (checked by
    /// the caller); its secret, which only the browser keeps.
    pub fn create_session(&self, token_sha256: &str) -> Result<String> {
        let secret = format!("hss_{}", new_secret());
        let now = now_ms();
        let row = SessionRow {
            session_sha256: sha256_hex(&secret),
            token_sha256: token_sha256.to_owned(),
            created_ms: now,
            expires_ms: now + SESSION_LIFETIME.as_millis() as u64,
        };
        self.store.insert_session(&row, now)?;
        Ok(secret)
    }

    /// The hex sha256 of the token a live session signed in with; `None` for an unknown or
    /// expired session.
    pub fn session_token(&self, secret: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .session(&sha256_hex(secret))?
            .filter(|s| live(s, now_ms()))
            .map(|s| s.token_sha256))
    }

    pub fn end_session(&self, secret: &str) -> Result<()> {
        Ok(self.store.delete_session(&sha256_hex(secret))?)
    }
}

/// Whether a session is still good at `now_ms` (it ends at its `expires_ms`).
fn live(session: &SessionRow, now_ms: u64) -> bool {
    session.expires_ms > now_ms
}

/// The CSRF token of the session whose secret is `secret`: every state-changing form
/// carries it, and nothing but the session's holder can compute it.
pub fn csrf_token(secret: &str) -> String {
    sha256_hex(&format!("hoist-csrf\0{secret}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_expiry_and_csrf_tokens_differ_per_session() {
        let row = SessionRow {
            session_sha256: "a".into(),
            token_sha256: "b".into(),
            created_ms: 1_000,
            expires_ms: 1_000 + SESSION_LIFETIME.as_millis() as u64,
        };
        assert!(live(&row, 1_000));
        assert!(live(&row, row.expires_ms - 1));
        assert!(!live(&row, row.expires_ms));
        assert_eq!(SESSION_LIFETIME.as_secs(), 12 * 3600);
        assert_eq!(csrf_token("hss_1"), csrf_token("hss_1"));
        assert_ne!(csrf_token("hss_1"), csrf_token("hss_2"));
        assert_eq!(csrf_token("hss_1").len(), 64);
    }
}
