//! Signing revisions: `hoist sign` (a signature file for a bundle's sha256 or a Git commit,
//! for CI jobs and `hoist deploy create --signature`), and what `hoist push --sign-key`
//! shares with it: loading a minisign secret key, making the manifest and signing its exact
//! bytes (`hoist_protocol::signature` defines both formats).
//!
//! It signs only what it is told: it neither uploads nor registers anything, and checks no
//! bundle (the manifest's sha256 is the caller's; hosts check it against the bytes they get).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use hoist_protocol::secret::Secret;
use hoist_protocol::signature::{
    Manifest, SignedManifest, MANIFEST_FORMAT, MAX_SIGNATURE_FILE_BYTES,
};

use super::UsageError;

/// A secret key file is two lines; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The application the revision is of.
    #[arg(long)]
    pub app: String,
    /// The bundle archive's sha256 (coordinator store, S3 or URL revisions).
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "commit",
        conflicts_with = "commit"
    )]
    pub sha256: Option<String>,
    /// The full Git commit id (Git revisions).
    #[arg(long, value_name = "ID")]
    pub commit: Option<String>,
    /// The Git repository, recorded in the manifest for people (with --commit).
    #[arg(long, value_name = "URL", requires = "commit")]
    pub repository: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Where to write the signature file (JSON: the manifest and its minisign signature).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The signing flags `hoist sign` and `hoist push` share.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The secret key (`hoist key generate`'s hoist.key).
    #[arg(long = "key", value_name = "KEY")]
    pub key: PathBuf,
    /// The key's passphrase, in this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Hosts refuse the signature from then on: a duration from now (30d, 12h) or a time
    /// (2027-01-31T00:00:00Z).
    #[arg(long, value_name = "IN|AT")]
    pub expires: Option<String>,
}

pub fn run(args: SignArgs) -> Result<ExitCode> {
    let subject = match (&args.sha256, &args.commit) {
        (Some(sha256), None) => Subject::Bundle(sha256.to_ascii_lowercase()),
        (None, Some(commit)) => {
            Subject::Commit(commit.to_ascii_lowercase(), args.repository.clone())
        }
        _ => return Err(UsageError("give --sha256 or --commit".into()).into()),
    };
    let key = SigningKey::load(&args.key.key, args.key.passphrase_file.as_deref())?;
    let manifest = manifest(
        &args.app,
        subject,
        args.key.expires.as_deref(),
        SystemTime::now(),
    )?;
    let signed = key.sign(&manifest)?;
    std::fs::write(&args.out, signed.to_file_text())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "signed {} of application {} with key {} into {}",
        manifest.subject(),
        manifest.application,
        key.id,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a manifest is to name.
pub enum Subject {
    Bundle(String),
    /// A commit id and, optionally, its repository.
    Commit(String, Option<String>),
}

/// The manifest for `application`'s `subject`, signed now, expiring as `--expires` says;
/// checked as a host will parse it, so a bad sha256 or commit is a usage error here.
pub fn manifest(
    application: &str,
    subject: Subject,
    expires: Option<&str>,
    now: SystemTime,
) -> Result<Manifest> {
    let signed_at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires_at = expires
        .map(|e| expiry(e, now))
        .transpose()
        .map_err(|e| UsageError(format!("--expires: {e}")))?;
    let (sha256, commit, repository) = match subject {
        Subject::Bundle(sha) => (Some(sha), None, None),
        Subject::Commit(commit, repository) => (None, Some(commit), repository),
    };
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        application: application.to_owned(),
        sha256,
        commit,
        repository,
        signed_at,
        expires_at,
    };
    Manifest::parse(&m.to_text()).map_err(UsageError)?;
    Ok(m)
}

/// `--expires`: a duration from `now` or an RFC 3339 time, as seconds since the epoch.
pub fn expiry(text: &str, now: SystemTime) -> Result<u64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(d) => now + d,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!("{text:?} is neither a duration (30d, 12h) nor a time (2027-01-31T00:00:00Z)")
        })?,
    };
    if at <= now {
        return Err(format!("{text:?} is not in the future"));
    }
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs())
}

/// A loaded secret key and its id.
pub struct SigningKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
    /// As minisign prints it (16 uppercase hex digits).
    pub id: String,
}

impl SigningKey {
    /// Reads a minisign secret key, decrypting it with the passphrase file when given.
    pub fn load(path: &Path, passphrase_file: Option<&Path>) -> Result<SigningKey> {
        let text = read_bounded(path, MAX_KEY_FILE_BYTES, "a minisign secret key")?;
        let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|e| {
            UsageError(format!(
                "{}: not a minisign secret key ({e})",
                path.display()
            ))
        })?;
        let secret = match passphrase_file {
            Some(file) => {
                let pass = read_passphrase(file)?;
                minisign::SecretKey::from_box(boxed, Some(pass.expose().to_owned())).map_err(
                    |e| {
                        UsageError(format!(
                            "{}: cannot be opened with the passphrase in {} ({e})",
                            path.display(),
                            file.display()
                        ))
                    },
                )?
            }
            None => minisign::SecretKey::from_unencrypted_box(boxed).map_err(|e| {
                UsageError(format!(
                    "{}: not an unencrypted minisign secret key ({e}); give --passphrase-file \
                     for a passphrase-protected one",
                    path.display()
                ))
            })?,
        };
        let public = minisign::PublicKey::from_secret_key(&secret)
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        let public_text = public
            .to_box()
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?
            .into_string();
        let id = hoist_protocol::signature::public_key_id(&public_text)
            .ok_or_else(|| UsageError(format!("{}: no key id", path.display())))?;
        Ok(SigningKey { secret, public, id })
    }

    /// A minisign signature over the manifest's exact text.
    pub fn sign(&self, manifest: &Manifest) -> Result<SignedManifest> {
        let text = manifest.to_text();
        // No operator text in the comments: they are single lines of the signature's format.
        let trusted = format!("timestamp:{} {MANIFEST_FORMAT}", manifest.signed_at);
        let untrusted = format!("hoist signature by key {}", self.id);
        let signature = minisign::sign(
            Some(&self.public),
            &self.secret,
            std::io::Cursor::new(text.as_bytes()),
            Some(&trusted),
            Some(&untrusted),
        )
        .map_err(|e| anyhow::anyhow!("signing the manifest: {e}"))?;
        Ok(SignedManifest {
            manifest: text,
            signature: signature.into_string(),
        })
    }
}

/// The first line of a passphrase file.
pub fn read_passphrase(path: &Path) -> Result<Secret> {
    read_first_line(path, "passphrase").map(|line| Secret::new(&line))
}

/// The first line of a file of at most 4 KiB that holds one secret (`what`: "passphrase"),
/// so that a secret need not be given on a command line, where the process list shows it.
pub fn read_first_line(path: &Path, what: &str) -> Result<String> {
    let text = read_bounded(path, 4096, &format!("a {what} file"))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(UsageError(format!("{}: the {what} is empty", path.display())).into());
    }
    Ok(line.to_owned())
}

/// A signature file (`hoist sign --out`), for `--signature FILE`.
pub fn read_signature_file(path: &Path) -> Result<SignedManifest> {
    let text = read_bounded(path, MAX_SIGNATURE_FILE_BYTES, "a signature file")?;
    SignedManifest::from_file_text(&text)
        .map_err(|e| UsageError(format!("--signature {}: {e}", path.display())).into())
}

fn read_bounded(path: &Path, max: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| UsageError(format!("{}: cannot be read ({e})", path.display())))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| UsageError(format!("{}: cannot be read ({e})", path.display())))?;
    if text.len() as u64 > max {
        return Err(UsageError(format!("{}: over {max} bytes, not {what}", path.display())).into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_a_duration_or_a_time_in_the_future() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(expiry("1h", now), Ok(1_800_003_600));
        assert_eq!(expiry("2030-01-01T00:00:00Z", now), Ok(1_893_456_000));
        assert!(expiry("2020-01-01T00:00:00Z", now)
            .unwrap_err()
            .contains("future"));
        assert!(expiry("soon", now).unwrap_err().contains("neither"));
    }

    #[test]
    fn a_signed_manifest_verifies_with_the_public_key_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let key_path = dir.path().join("hoist.key");
        std::fs::write(&key_path, pair.sk.to_box(None).unwrap().into_string()).unwrap();
        let key = SigningKey::load(&key_path, None).unwrap();
        let m = manifest(
            "shop",
            Subject::Bundle("ab".repeat(32)),
            Some("1d"),
            SystemTime::now(),
        )
        .unwrap();
        let signed = key.sign(&m).unwrap();
        assert_eq!(signed.key_id().as_deref(), Some(key.id.as_str()));
        let sig = minisign::SignatureBox::from_string(&signed.signature).unwrap();
        minisign::verify(
            &pair.pk,
            &sig,
            std::io::Cursor::new(signed.manifest.as_bytes()),
            true,
            false,
            false,
        )
        .unwrap();
        let back = SignedManifest::from_file_text(&signed.to_file_text()).unwrap();
        assert_eq!(back, signed);
        // A bad sha256 is caught before anything is signed.
        let bad = manifest(
            "shop",
            Subject::Bundle("xyz".into()),
            None,
            SystemTime::now(),
        );
        assert!(bad.unwrap_err().to_string().contains("sha256"));
    }
}
