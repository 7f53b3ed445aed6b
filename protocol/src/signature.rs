//! Signed revisions: the manifest a release key signs, and the signed manifest that travels
//! with a revision from the operator's CLI (or a CI job) through the coordinator to the host.
//!
//! A manifest is one line of JSON, written by [`Manifest::to_text`] (fields in this order,
//! no spaces):
//!
//! ```text
//! {"format":"hoist-manifest/1","application":"shop","sha256":"<64 hex>","signed_at":1764633600,"expires_at":1767225600}
//! ```
//!
//! It names the application and either the bundle's `sha256` (archives: coordinator store,
//! S3, URL) or a Git `commit` (with the `repository`, for people: a commit id names the
//! content whatever serves it); `signed_at` and the optional `expires_at` are seconds since
//! the epoch. The signature is a minisign signature (Ed25519, prehashed) over the exact
//! manifest bytes, in minisign's own text format, so `minisign -Vm` checks it too. A
//! [`SignedManifest`] (manifest text and signature text) is what `hoist sign --out` writes,
//! what `hoist deploy create --signature` reads, and what a command carries.
//!
//! This module decodes and bounds; it deliberately verifies nothing cryptographic (the agent
//! does, with the keys it trusts) and trusts nothing a coordinator says.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: &str = "hoist-manifest/1";
/// Bound of a manifest's text.
pub const MAX_MANIFEST_BYTES: usize = 4096;
/// Bound of a signature's text (a minisign signature with Hoist's comments is under 400).
pub const MAX_SIGNATURE_BYTES: usize = 2048;
/// Bound of a signature file (`hoist deploy create --signature FILE`).
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 16 * 1024;

/// A manifest and a minisign signature over its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest's text, exactly as signed.
    pub manifest: String,
    /// The minisign signature (four lines: comment, signature, trusted comment, global
    /// signature).
    pub signature: String,
}

/// What a release key vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    pub application: String,
    /// Hex sha256 of the bundle archive (archives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Full commit id (Git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The Git repository, for people; not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// When it was signed, seconds since the epoch.
    pub signed_at: u64,
    /// Refused from this time on, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// What a manifest is about: a bundle's bytes or a Git commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Bundle { sha256: &'a str },
    Commit { commit: &'a str },
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Bundle { sha256 } => write!(f, "bundle sha256 {sha256}"),
            Subject::Commit { commit } => write!(f, "commit {commit}"),
        }
    }
}

impl Manifest {
    /// The canonical text: one line of JSON, fields in declaration order.
    pub fn to_text(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a manifest's text: the format, the bounds, exactly one of `sha256`
    /// and `commit`, each well formed (lowercase hex).
    pub fn parse(text: &str) -> Result<Manifest, String> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the manifest is {} bytes, at most {MAX_MANIFEST_BYTES} are allowed",
                text.len()
            ));
        }
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!(
                "the manifest's format is {:?}; this version reads {MANIFEST_FORMAT:?}",
                m.format
            ));
        }
        if m.application.is_empty() || m.application.len() > 255 {
            return Err("the manifest's application must be 1 to 255 bytes".into());
        }
        match (&m.sha256, &m.commit) {
            (Some(sha), None) if is_lower_hex(sha, &[64]) => {}
            (Some(sha), None) => {
                return Err(format!(
                    "the manifest's sha256 {sha:?} is not 64 lowercase hex digits"
                ))
            }
            (None, Some(c)) if is_lower_hex(c, &[40, 64]) => {}
            (None, Some(c)) => {
                return Err(format!(
                    "the manifest's commit {c:?} is not a full commit id (40 or 64 lowercase hex digits)"
                ))
            }
            _ => return Err("the manifest must name either a sha256 or a commit".into()),
        }
        Ok(m)
    }

    /// The bundle or commit it names ([`Manifest::parse`] checked there is exactly one).
    pub fn subject(&self) -> Subject<'_> {
        match (&self.sha256, &self.commit) {
            (Some(sha256), _) => Subject::Bundle { sha256 },
            (None, Some(commit)) => Subject::Commit { commit },
            (None, None) => Subject::Bundle { sha256: "" },
        }
    }
}

impl SignedManifest {
    /// Parses a signature file's text (what `hoist sign --out` writes: this type as JSON),
    /// bounded; the error says what is wrong, for the caller to prefix with the file.
    pub fn from_file_text(text: &str) -> Result<SignedManifest, String> {
        if text.len() as u64 > MAX_SIGNATURE_FILE_BYTES {
            return Err(format!(
                "over {MAX_SIGNATURE_FILE_BYTES} bytes, not a signature file"
            ));
        }
        let signed: SignedManifest = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a signature file (JSON with \"manifest\" and \"signature\", as `hoist sign \
                 --out` writes): {e}"
            )
        })?;
        signed.check_bounds()?;
        Ok(signed)
    }

    /// The text of a signature file: this type as pretty JSON, with a final newline.
    pub fn to_file_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Both texts within their bounds.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.manifest.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the manifest is {} bytes, at most {MAX_MANIFEST_BYTES} are allowed",
                self.manifest.len()
            ));
        }
        if self.signature.len() > MAX_SIGNATURE_BYTES {
            return Err(format!(
                "the signature is {} bytes, at most {MAX_SIGNATURE_BYTES} are allowed",
                self.signature.len()
            ));
        }
        Ok(())
    }

    /// The id of the key that made the signature, as minisign prints it (16 uppercase hex
    /// digits); `None` when the signature is not in minisign's format.
    pub fn key_id(&self) -> Option<String> {
        let line = self.signature.lines().nth(1)?;
        key_id_in(line, 74)
    }
}

/// The key id of a minisign public key file's text (its second line), as minisign prints it.
pub fn public_key_id(public_key_text: &str) -> Option<String> {
    key_id_in(public_key_text.lines().nth(1)?, 42)
}

/// Bytes 2..10 of a base64 line of `len` bytes, as the little-endian number minisign shows.
fn key_id_in(line: &str, len: usize) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    if bytes.len() != len {
        return None;
    }
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

fn is_lower_hex(s: &str, lengths: &[usize]) -> bool {
    lengths.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            application: "shop".into(),
            sha256: Some("ab".repeat(32)),
            commit: None,
            repository: None,
            signed_at: 1_764_633_600,
            expires_at: Some(1_767_225_600),
        }
    }

    #[test]
    fn the_canonical_text_is_one_line_in_field_order_and_parses_back() {
        let text = manifest().to_text();
        assert_eq!(
            text,
            format!(
                "{{\"format\":\"hoist-manifest/1\",\"application\":\"shop\",\"sha256\":\"{}\",\"signed_at\":1764633600,\"expires_at\":1767225600}}",
                "ab".repeat(32)
            )
        );
        assert_eq!(Manifest::parse(&text).unwrap(), manifest());
    }

    #[test]
    fn bad_manifests_are_refused_naming_the_problem() {
        let with = |f: &dyn Fn(&mut Manifest)| {
            let mut m = manifest();
            f(&mut m);
            Manifest::parse(&m.to_text()).unwrap_err()
        };
        assert!(with(&|m| m.format = "hoist-manifest/2".into()).contains("format"));
        assert!(with(&|m| m.sha256 = Some("AB".repeat(32))).contains("sha256"));
        assert!(with(&|m| m.commit = Some("a".repeat(40))).contains("either"));
        assert!(with(&|m| m.sha256 = None).contains("either"));
        assert!(with(&|m| {
            m.sha256 = None;
            m.commit = Some("abc".into());
        })
        .contains("commit"));
        assert!(with(&|m| m.application.clear()).contains("application"));
        let unknown = r#"{"format":"hoist-manifest/1","application":"a","commit":"0000000000000000000000000000000000000000","signed_at":1,"extra":1}"#;
        assert!(Manifest::parse(unknown).unwrap_err().contains("extra"));
        assert!(Manifest::parse(&" ".repeat(MAX_MANIFEST_BYTES + 1))
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn key_ids_are_read_as_minisign_prints_them() {
        // minisign's own test key: "untrusted comment: minisign public key E7620F1842B4E81F".
        let public = "untrusted comment: minisign public key E7620F1842B4E81F\n\
                      RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n";
        assert_eq!(public_key_id(public).as_deref(), Some("E7620F1842B4E81F"));
        assert_eq!(public_key_id("one line only"), None);
        let signed = SignedManifest {
            manifest: String::new(),
            signature: "c\nnot base64!\nt\ng\n".into(),
        };
        assert_eq!(signed.key_id(), None);
    }
}
