//! Signed revisions on the host: the keys this host trusts (`trust:` in the config) and the
//! one check of a revision's signed manifest against them, [`check`].
//!
//! The threat is a coordinator (or its database) that lies: it can name any bundle, any
//! sha256 and any signature. So nothing here takes the coordinator's word: the signature
//! must be by a key listed in this host's config, over a manifest whose application is the
//! deployment's and whose sha256 is the one computed from the downloaded bytes (or whose
//! commit is the one checked out), and not expired by this host's clock. DownloadBundle calls
//! [`check`] after the sha256 is verified and before anything is extracted; it takes no
//! download state, so a path that reuses a revision already on the host can call it too.
//!
//! It deliberately does not fetch, extract, log or report: it answers with a [`Verdict`] or
//! a [`TrustError`] naming the trusted key ids and what was wrong.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist_protocol::signature::{public_key_id, Manifest, SignedManifest, Subject};

use crate::config::TrustConfig;

/// A public key file is a comment line and a base64 line; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The keys this host trusts, read from their files at start.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<TrustedKey>,
    require_signature: bool,
}

#[derive(Debug, Clone)]
struct TrustedKey {
    /// As minisign prints it: 16 uppercase hex digits.
    id: String,
    path: PathBuf,
    key: minisign_verify::PublicKey,
}

impl Trust {
    /// Reads and parses every key file of `config`; an error names the file and the problem.
    /// No `trust:` section: nothing is trusted and signatures are not looked at.
    pub fn load(config: Option<&TrustConfig>) -> anyhow::Result<Trust> {
        let Some(config) = config else {
            return Ok(Trust::default());
        };
        let mut keys: Vec<TrustedKey> = Vec::new();
        for (i, path) in config.keys.iter().enumerate() {
            let key = read_key(path)
                .map_err(|e| anyhow::anyhow!("trust.keys[{i}] {}: {e}", path.display()))?;
            if let Some(twin) = keys.iter().find(|k| k.id == key.id) {
                anyhow::bail!(
                    "trust.keys[{i}] {}: key {} is already listed as {}",
                    path.display(),
                    key.id,
                    twin.path.display()
                );
            }
            keys.push(key);
        }
        Ok(Trust {
            keys,
            require_signature: config.require_signature,
        })
    }

    /// Whether any key is trusted (else [`check`] always answers [`Verdict::NotConfigured`]).
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn require_signature(&self) -> bool {
        self.require_signature
    }

    /// The trusted key ids, in config order.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// One line for `validate`, `status` and the event log.
    pub fn describe(&self) -> String {
        if !self.is_configured() {
            return "no signing keys trusted; signatures are not checked".into();
        }
        format!(
            "trusted signing keys: {}; {}",
            self.key_ids().join(", "),
            if self.require_signature {
                "a signature is required"
            } else {
                "an unsigned revision is let through with a warning"
            }
        )
    }
}

fn read_key(path: &Path) -> Result<TrustedKey, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "is over {MAX_KEY_FILE_BYTES} bytes, not a minisign public key"
        ));
    }
    let key = minisign_verify::PublicKey::decode(&text)
        .map_err(|e| format!("is not a minisign public key ({e})"))?;
    let id = public_key_id(&text).ok_or("is not a minisign public key (no key id)")?;
    Ok(TrustedKey {
        id,
        path: path.to_path_buf(),
        key,
    })
}

/// What [`check`] found acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This host trusts no key: signatures are not looked at.
    NotConfigured,
    /// Signed by a trusted key over a manifest that matches.
    Signed { key_id: String, manifest: Manifest },
    /// No signature, and `trust.require_signature` is false: allowed, with a warning.
    Unsigned,
}

/// Why a revision is refused. Its text names the problem and the keys this host trusts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature refused: {problem} (trusted keys: {})", trusted.join(", "))]
pub struct TrustError {
    pub problem: Refusal,
    pub trusted: Vec<String>,
}

/// What was wrong with a revision's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature: the revision carries none and trust.require_signature is on")]
    NoSignature,
    #[error("bad signature: {0}")]
    Malformed(String),
    #[error("unknown key: signed by key {key_id}, which this host does not trust")]
    UnknownKey { key_id: String },
    #[error("bad signature: the manifest's signature by key {key_id} does not verify")]
    BadSignature { key_id: String },
    #[error("bad manifest: {0}")]
    BadManifest(String),
    #[error("wrong application: the manifest names application {signed:?}, the deployment is of {actual:?}")]
    WrongApplication { signed: String, actual: String },
    #[error("wrong bundle: the manifest names {signed}, the revision is {actual}")]
    WrongBundle { signed: String, actual: String },
    #[error("expired: the manifest expired at {at}")]
    Expired { at: String },
}

/// Checks `signed` (the revision's signed manifest, if any) for a deployment of
/// `application` whose bundle is `subject`: for an archive the sha256 computed from the
/// downloaded bytes, for Git the commit checked out. `now` is this host's clock.
pub fn check(
    trust: &Trust,
    application: &str,
    subject: Subject<'_>,
    signed: Option<&SignedManifest>,
    now: SystemTime,
) -> Result<Verdict, TrustError> {
    if !trust.is_configured() {
        return Ok(Verdict::NotConfigured);
    }
    let refuse = |problem: Refusal| TrustError {
        problem,
        trusted: trust.key_ids(),
    };
    let Some(signed) = signed else {
        return if trust.require_signature {
            Err(refuse(Refusal::NoSignature))
        } else {
            Ok(Verdict::Unsigned)
        };
    };
    signed
        .check_bounds()
        .map_err(|e| refuse(Refusal::Malformed(e)))?;
    let signature = minisign_verify::Signature::decode(&signed.signature).map_err(|e| {
        refuse(Refusal::Malformed(format!(
            "it is not a minisign signature ({e})"
        )))
    })?;
    let key_id = signed.key_id().ok_or_else(|| {
        refuse(Refusal::Malformed(
            "it is not a minisign signature (no key id)".into(),
        ))
    })?;
    let Some(key) = trust.keys.iter().find(|k| k.id == key_id) else {
        return Err(refuse(Refusal::UnknownKey { key_id }));
    };
    // Prehashed signatures only (minisign's default since 0.8): legacy ones are refused.
    if key
        .key
        .verify(signed.manifest.as_bytes(), &signature, false)
        .is_err()
    {
        return Err(refuse(Refusal::BadSignature { key_id }));
    }
    // Only now is the manifest's text worth reading: a trusted key vouches for it.
    let manifest =
        Manifest::parse(&signed.manifest).map_err(|e| refuse(Refusal::BadManifest(e)))?;
    if manifest.application != application {
        return Err(refuse(Refusal::WrongApplication {
            signed: manifest.application,
            actual: application.to_owned(),
        }));
    }
    if !same_subject(manifest.subject(), subject) {
        return Err(refuse(Refusal::WrongBundle {
            signed: manifest.subject().to_string(),
            actual: subject.to_string(),
        }));
    }
    if let Some(expires) = manifest.expires_at {
        let at = UNIX_EPOCH + Duration::from_secs(expires);
        if now >= at {
            return Err(refuse(Refusal::Expired {
                at: humantime::format_rfc3339_seconds(at).to_string(),
            }));
        }
    }
    Ok(Verdict::Signed { key_id, manifest })
}

fn same_subject(signed: Subject<'_>, actual: Subject<'_>) -> bool {
    match (signed, actual) {
        (Subject::Bundle { sha256: a }, Subject::Bundle { sha256: b }) => a.eq_ignore_ascii_case(b),
        (Subject::Commit { commit: a }, Subject::Commit { commit: b }) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
