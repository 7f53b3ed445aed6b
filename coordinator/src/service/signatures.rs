//! What the coordinator checks of a revision's signed manifest when an operator registers
//! it (`hoist push --sign-key`) or attaches it to a deployment (`--signature`): its bounds,
//! that it is in minisign's format, and that the manifest names this application and this
//! revision's sha256 (or Git commit), so a mistake is caught when it is made, with a clear
//! error, rather than on every host.
//!
//! It deliberately verifies no signature and holds no key: the coordinator is not trusted.
//! Every host that trusts keys checks everything again (`hoist-agent`'s `trust` module), so
//! a coordinator that skipped this, or lied, still cannot make such a host run a bundle
//! nobody signed.

use hoist_protocol::agent::Revision;
use hoist_protocol::signature::{Manifest, SignedManifest, Subject};

use super::{Result, ServiceError};

/// Checks `signed` against the revision it is attached to (`revision`, already checked by
/// `check_revision`) and its application.
pub(super) fn check(application: &str, revision: &Revision, signed: &SignedManifest) -> Result<()> {
    let invalid = |what: String| Err(ServiceError::Invalid(format!("signature: {what}")));
    if let Err(e) = signed.check_bounds() {
        return invalid(e);
    }
    if signed.key_id().is_none() || signed.signature.lines().count() < 4 {
        return invalid(
            "the signature is not a minisign signature (four lines, as `hoist sign` writes)".into(),
        );
    }
    let manifest = match Manifest::parse(&signed.manifest) {
        Ok(m) => m,
        Err(e) => return invalid(e),
    };
    if manifest.application != application {
        return invalid(format!(
            "the manifest names application {:?}, but the revision is of application {application:?}",
            manifest.application
        ));
    }
    let actual = match revision {
        Revision::Coordinator { sha256, .. }
        | Revision::S3 { sha256, .. }
        | Revision::Url { sha256, .. } => Subject::Bundle { sha256 },
        Revision::Git { commit, .. } => Subject::Commit { commit },
        Revision::Unknown { kind } => {
            return invalid(format!("a revision of kind {kind:?} cannot be signed"))
        }
    };
    let same = match (manifest.subject(), actual) {
        (Subject::Bundle { sha256: a }, Subject::Bundle { sha256: b }) => a == b,
        (Subject::Commit { commit: a }, Subject::Commit { commit: b }) => a == b,
        _ => false,
    };
    if !same {
        return invalid(format!(
            "the manifest names {}, but the revision is {actual}",
            manifest.subject()
        ));
    }
    Ok(())
}
