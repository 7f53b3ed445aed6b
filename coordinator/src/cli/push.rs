//! `hoist push DIR --app APP [--s3 s3://bucket/key]`: checks the directory's appspec,
//! packs the directory as a tar.gz bundle (streamed to a temp file while hashing), uploads
//! it to the coordinator's bundle store or to S3-compatible storage, registers the revision
//! and prints its id alone on stdout. With `--sign-key` the revision is registered with a
//! signed manifest of its sha256 and application (`cli::sign`).
//!
//! S3 settings come from the usual variables (`crate::s3`: `AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`). The upload is a SigV4-presigned PUT (rusty-s3), so the bundle is
//! never held in memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{BundleInfo, CreateRevision, RevisionInfo};
use sha2::{Digest, Sha256};

use super::client::{seg, Client};
use super::sign::{self, SigningKey};
use super::{print_json, UsageError};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The bundle directory (with appspec.yml at its root).
    pub dir: PathBuf,
    #[arg(long)]
    pub app: String,
    /// Upload to S3-compatible storage at this `s3://bucket/key` instead of the coordinator.
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub s3: Option<String>,
    /// Print the registered revision as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    /// Sign the bundle with this secret key (`hoist key generate`'s hoist.key): hosts that
    /// trust its public key accept the revision.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// The signing key's passphrase, in this file (with --sign-key).
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pub passphrase_file: Option<PathBuf>,
    /// The signature expires then: a duration from now (30d) or a time (with --sign-key).
    #[arg(long, value_name = "IN|AT", requires = "sign_key")]
    pub expires: Option<String>,
}

pub async fn run(client: &Client, args: PushArgs) -> Result<ExitCode> {
    let s3 = args.s3.as_deref().map(parse_s3_url).transpose()?;
    // The key is opened first: a wrong path or passphrase fails before any upload.
    let key = args
        .sign_key
        .as_deref()
        .map(|k| SigningKey::load(k, args.passphrase_file.as_deref()))
        .transpose()?;
    if let Some(expires) = &args.expires {
        sign::expiry(expires, SystemTime::now())
            .map_err(|e| UsageError(format!("--expires: {e}")))?;
    }
    let dir = args.dir.clone();
    let (bundle, sha256, size) = tokio::task::spawn_blocking(move || -> Result<_> {
        check_appspec(&dir)?;
        pack(&dir)
    })
    .await??;
    let revision = match s3 {
        None => {
            let info = upload_to_coordinator(client, bundle.path(), size).await?;
            if info.sha256 != sha256 || info.size != size {
                bail!(
                    "the coordinator stored {} ({} bytes) but the bundle is {sha256} ({size} bytes)",
                    info.sha256,
                    info.size
                );
            }
            Revision::Coordinator { sha256, size }
        }
        Some((bucket, key)) => {
            upload_to_s3(client, bundle.path(), size, &bucket, &key, sha256).await?
        }
    };
    // Signed after the sha256 is known (it is of the bytes just packed and uploaded).
    let signature = match (&key, &revision) {
        (Some(key), Revision::Coordinator { sha256, .. } | Revision::S3 { sha256, .. }) => {
            let m = sign::manifest(
                &args.app,
                sign::Subject::Bundle(sha256.clone()),
                args.expires.as_deref(),
                SystemTime::now(),
            )?;
            Some(key.sign(&m)?)
        }
        _ => None,
    };
    let info: RevisionInfo = client
        .post(
            &format!("/v1/applications/{}/revisions", seg(&args.app)),
            &CreateRevision {
                revision,
                signature,
            },
        )
        .await?;
    let signed = match &key {
        Some(key) => format!(", signed by key {}", key.id),
        None => String::new(),
    };
    eprintln!(
        "pushed {} as revision {}{signed}",
        info.revision.describe(),
        info.id
    );
    if args.json {
        print_json(&info)?;
    } else {
        println!("{}", info.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_s3_url(s: &str) -> Result<(String, String), UsageError> {
    match crate::s3::parse_location(s, "--s3", "s3://bucket/key") {
        Ok((b, k)) if !k.is_empty() => Ok((b, k)),
        Ok(_) => Err(UsageError(format!(
            "--s3 {s:?} must look like s3://bucket/key"
        ))),
        Err(e) => Err(UsageError(e.to_string())),
    }
}

/// Reads and validates `appspec.yml` (or `appspec.yaml`), printing every problem.
fn check_appspec(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let Some(path) = ["appspec.yml", "appspec.yaml"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    else {
        bail!("no appspec.yml or appspec.yaml in {}", dir.display());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    match hoist_appspec::parse(&text) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            Ok(())
        }
        Err(invalid) => {
            for w in &invalid.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            for e in &invalid.errors {
                eprintln!("{}: {e}", path.display());
            }
            bail!(
                "{} is invalid ({} problem{})",
                path.display(),
                invalid.errors.len(),
                if invalid.errors.len() == 1 { "" } else { "s" }
            )
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Packs `dir` into a tar.gz temp file; returns it with its sha256 and size. Entries are
/// relative to `dir` (no leading `./`), symlinks stay symlinks, order is sorted.
pub fn pack(dir: &Path) -> Result<(tempfile::NamedTempFile, String, u64)> {
    let tmp = tempfile::Builder::new()
        .prefix("hoist-bundle-")
        .suffix(".tar.gz")
        .tempfile()
        .context("creating a temp file for the bundle")?;
    let file = tmp.reopen().context("opening the bundle temp file")?;
    let writer = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        size: 0,
    };
    let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""))?;
    let gz = builder.into_inner().context("finishing the tar stream")?;
    let mut writer = gz.finish().context("finishing the gzip stream")?;
    writer.flush().context("writing the bundle")?;
    let sha256 = hex::encode(writer.hasher.finalize());
    Ok((tmp, sha256, writer.size))
}

fn add_dir<W: Write>(builder: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let dir = root.join(rel);
    let mut entries = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        let full = e.path();
        let ty = e
            .file_type()
            .with_context(|| format!("reading {}", full.display()))?;
        builder
            .append_path_with_name(&full, &name)
            .with_context(|| format!("adding {} to the bundle", full.display()))?;
        if ty.is_dir() {
            add_dir(builder, root, &name)?;
        }
    }
    Ok(())
}

async fn upload_to_coordinator(client: &Client, path: &Path, size: u64) -> Result<BundleInfo> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let req = client
        .request(reqwest::Method::PUT, "/v1/bundles")?
        .header(reqwest::header::CONTENT_TYPE, "application/gzip")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body);
    client.send(req).await
}

async fn upload_to_s3(
    client: &Client,
    path: &Path,
    size: u64,
    bucket: &str,
    key: &str,
    sha256: String,
) -> Result<Revision> {
    use rusty_s3::S3Action;
    let settings = crate::s3::S3Settings::from_env("--s3").map_err(|e| match e {
        e @ crate::s3::S3SettingsError::NoCredentials(_) => {
            anyhow::Error::new(UsageError(e.to_string()))
        }
        e => anyhow::Error::new(e),
    })?;
    let endpoint = settings.endpoint.to_string();
    let creds = settings.credentials();
    let s3_bucket = settings.bucket(bucket)?;
    let url = s3_bucket
        .put_object(Some(&creds), key)
        .sign(Duration::from_secs(3600));
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let resp = client
        .http()
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body)
        .send()
        .await
        // Without the URL: its signature would stay valid for an hour.
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("uploading to s3://{bucket}/{key} at {endpoint}"))?;
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, version_id) = (header("etag"), header("x-amz-version-id"));
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "S3 refused the upload to s3://{bucket}/{key} ({status}): {}",
            text.trim()
        );
    }
    Ok(Revision::S3 {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id,
        etag,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_writes_relative_entries_and_a_matching_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("appspec.yml"), "version: 0.0\nos: linux\n").unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/start.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("start.sh", dir.path().join("scripts/link")).unwrap();
        let (tmp, sha, size) = pack(dir.path()).unwrap();
        let bytes = std::fs::read(tmp.path()).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_symlink() {
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("start.sh"));
            }
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["appspec.yml", "scripts", "scripts/link", "scripts/start.sh"]
        );
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://b/k/x.tgz").unwrap(),
            ("b".into(), "k/x.tgz".into())
        );
        assert!(parse_s3_url("s3://b").is_err());
        assert!(parse_s3_url("http://b/k").is_err());
    }
}
