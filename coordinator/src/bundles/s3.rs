//! The bundle store in S3-compatible storage: `PREFIX/ab/abcd…` in one bucket, keyed by the
//! sha256 of the bytes, for replicas that share one database and so cannot keep bundles on
//! one machine's disk.
//!
//! An upload is spooled to a temp file while hashed (a SigV4-presigned PUT needs its length
//! up front), then sent with `x-amz-checksum-sha256`, so the storage itself refuses bytes
//! that do not hash to the name, and with the hash as `x-amz-meta-sha256`. A bundle counts
//! as stored only when a HEAD finds that metadata equal to its key's hash: an object put
//! there by anything else is not handed out. Reads are ranged GETs streamed through to the
//! caller (agents never talk to the storage; see ARCHITECTURE, Decisions). Every request is
//! presigned for [`SIGN_TTL`] and sent at once. Not here: HTTP towards agents, or where the
//! settings come from (`crate::s3`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use futures_util::{Stream, StreamExt};
use rusty_s3::S3Action;
use tokio::io::AsyncSeekExt;

use super::{io, local, valid_sha256, BundleBytes, BundleError, ByteRange};
use crate::s3::{parse_location, S3Settings};

/// How long each presigned request stays valid: it is sent as soon as it is signed.
const SIGN_TTL: Duration = Duration::from_secs(300);

/// How long connecting to the storage may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the storage may send nothing while answering.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of an error answer read to find its S3 error code.
const ERROR_BODY_LIMIT: usize = 4096;

/// `s3://BUCKET/PREFIX` (the prefix may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`.
    pub prefix: String,
}

impl std::str::FromStr for S3Location {
    type Err = crate::s3::S3SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "s3://BUCKET/PREFIX";
        let (bucket, prefix) = parse_location(s, "bundle store", FORM)?;
        let prefix = prefix.trim_end_matches('/').to_owned();
        if !prefix.is_empty() && prefix.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
            return Err(crate::s3::S3SettingsError::Location {
                what: "bundle store (no empty, '.' or '..' prefix segments)",
                given: s.to_owned(),
                form: FORM,
            });
        }
        Ok(S3Location { bucket, prefix })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

pub struct S3Store {
    location: S3Location,
    bucket: rusty_s3::Bucket,
    credentials: rusty_s3::Credentials,
    endpoint: String,
    http: reqwest::Client,
    spool_dir: PathBuf,
    /// The runtime [`S3Store::size_of_blocking`] runs its request on.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    pub fn new(
        settings: S3Settings,
        location: S3Location,
        spool_dir: &Path,
    ) -> Result<S3Store, BundleError> {
        let remote = |e: &dyn std::error::Error| {
            BundleError::Remote(format!(
                "bundle store {location}: {}",
                crate::service::error_chain(e)
            ))
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| remote(&e))?;
        let bucket = settings.bucket(&location.bucket).map_err(|e| remote(&e))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| remote(&e))?;
        std::fs::create_dir_all(spool_dir).map_err(io("creating", spool_dir))?;
        Ok(S3Store {
            endpoint: settings.endpoint.to_string(),
            credentials: settings.credentials(),
            location,
            bucket,
            http,
            spool_dir: spool_dir.to_owned(),
            runtime,
        })
    }

    pub fn describe(&self) -> String {
        format!("{} at {}", self.location, self.endpoint)
    }

    /// The object key of the bundle named `sha256` (a valid sha256).
    fn key(&self, sha256: &str) -> String {
        let shard = sha256.get(..2).unwrap_or_default();
        match self.location.prefix.as_str() {
            "" => format!("{shard}/{sha256}"),
            prefix => format!("{prefix}/{shard}/{sha256}"),
        }
    }

    fn object(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.location.bucket)
    }

    /// Whether the bucket answers these credentials (a start-up check, so a wrong secret
    /// or bucket is found before the first push).
    pub async fn check(&self) -> Result<(), BundleError> {
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(SIGN_TTL);
        let resp = self
            .send(self.http.head(url), "HEAD", &self.location.to_string())
            .await?;
        refused(
            resp,
            "HEAD",
            &self.location.to_string(),
            &[reqwest::StatusCode::OK],
        )
        .await?;
        Ok(())
    }

    /// The size of the stored bundle named `sha256`, `None` when there is none or its
    /// object does not carry the hash it was stored with.
    pub async fn size_of(&self, sha256: &str) -> Result<Option<u64>, BundleError> {
        if !valid_sha256(sha256) {
            return Ok(None);
        }
        let key = self.key(sha256);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self
            .send(self.http.head(url), "HEAD", &self.object(&key))
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = refused(resp, "HEAD", &self.object(&key), &[reqwest::StatusCode::OK]).await?;
        let stored_hash = resp
            .headers()
            .get("x-amz-meta-sha256")
            .and_then(|v| v.to_str().ok());
        if stored_hash != Some(sha256) {
            tracing::warn!(object = %self.object(&key),
                "an object in the bundle store lacks its x-amz-meta-sha256; not handed out");
            return Ok(None);
        }
        // Not `content_length()`: that is the body's size hint, 0 for a HEAD.
        let size = resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if size.is_none() {
            return Err(BundleError::Remote(format!(
                "HEAD {} answered no Content-Length",
                self.object(&key)
            )));
        }
        Ok(size)
    }

    /// [`S3Store::size_of`] for a caller on a blocking thread: the request runs on the
    /// store's runtime, driven from a scoped thread of its own (never from inside an async
    /// task, where `block_on` is not allowed).
    pub fn size_of_blocking(&self, sha256: &str) -> Result<Option<u64>, BundleError> {
        std::thread::scope(|s| {
            s.spawn(|| self.runtime.block_on(self.size_of(sha256)))
                .join()
                .unwrap_or_else(|_| {
                    Err(BundleError::Remote(
                        "asking the bundle store for a bundle's size failed".into(),
                    ))
                })
        })
    }

    /// Spools `body` while hashing it, then stores it under its hash (unless a copy is
    /// stored already).
    pub async fn put<S, B, E>(&self, body: S) -> Result<(String, u64), BundleError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let spooled = local::spool(&self.spool_dir, body).await?;
        let (sha256, size) = (spooled.sha256.clone(), spooled.size);
        if self.size_of(&sha256).await? == Some(size) {
            return Ok((sha256, size));
        }
        let key = self.key(&sha256);
        let digest = hex::decode(&sha256).unwrap_or_default();
        let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        action
            .headers_mut()
            .insert("x-amz-checksum-sha256", checksum.clone());
        action
            .headers_mut()
            .insert("x-amz-meta-sha256", sha256.clone());
        let url = action.sign(SIGN_TTL);
        let mut file = tokio::fs::File::from_std(spooled.file);
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(io("reading", &spooled.path))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let req = self
            .http
            .put(url)
            .header("x-amz-checksum-sha256", checksum)
            .header("x-amz-meta-sha256", &sha256)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        let resp = self.send(req, "PUT", &self.object(&key)).await?;
        refused(resp, "PUT", &self.object(&key), &[reqwest::StatusCode::OK]).await?;
        drop(spooled.path);
        Ok((sha256, size))
    }

    /// The bytes of `range` (or all `size` bytes) of the bundle named `sha256`, streamed.
    pub async fn read(
        &self,
        sha256: &str,
        size: u64,
        range: Option<ByteRange>,
    ) -> Result<BundleBytes, BundleError> {
        let key = self.key(sha256);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let mut req = self.http.get(url);
        let expected = match range {
            Some(r) if !(r.start == 0 && r.end + 1 == size) => {
                req = req.header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", r.start, r.end),
                );
                reqwest::StatusCode::PARTIAL_CONTENT
            }
            _ => reqwest::StatusCode::OK,
        };
        let resp = self.send(req, "GET", &self.object(&key)).await?;
        let resp = refused(resp, "GET", &self.object(&key), &[expected]).await?;
        Ok(resp
            .bytes_stream()
            .map(|r| r.map_err(|e| std::io::Error::other(e.without_url())))
            .boxed())
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        method: &str,
        what: &str,
    ) -> Result<reqwest::Response, BundleError> {
        req.send().await.map_err(|e| {
            // Without the URL: a presigned one carries a signature that still works.
            let e = e.without_url();
            BundleError::Remote(format!(
                "{method} {what} at {}: {}",
                self.endpoint,
                crate::service::error_chain(&e)
            ))
        })
    }
}

/// `resp` when its status is one of `ok`; otherwise an error with the status and the S3
/// error code of the answer (never the rest of its body).
async fn refused(
    resp: reqwest::Response,
    method: &str,
    what: &str,
    ok: &[reqwest::StatusCode],
) -> Result<reqwest::Response, BundleError> {
    let status = resp.status();
    if ok.contains(&status) {
        return Ok(resp);
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()));
    Err(BundleError::Remote(match code {
        Some(code) => format!("the bundle store refused {method} {what} ({status}, {code})"),
        None => format!("the bundle store refused {method} {what} ({status})"),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::BundleStore;
    use super::*;
    use hoist_protocol::secret::Secret;
    use hoist_tests::servers::{sha256_hex, start_s3s, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY};

    fn settings(endpoint: &str, secret: &str) -> S3Settings {
        S3Settings {
            endpoint: url::Url::parse(endpoint).unwrap(),
            style: rusty_s3::UrlStyle::Path,
            region: S3_REGION.into(),
            access_key_id: S3_ACCESS_KEY.into(),
            secret_access_key: Secret::new(secret),
            session_token: None,
        }
    }

    /// s3s-fs over `root/` with bucket `bundles`; a store under `s3://bundles/p/q` with
    /// `secret`.
    async fn store(root: &Path, secret: &str) -> BundleStore {
        std::fs::create_dir_all(root.join("s3/bundles")).unwrap();
        let endpoint = format!("http://{}", start_s3s(&root.join("s3"), false).await);
        BundleStore::s3(
            settings(&endpoint, secret),
            "s3://bundles/p/q/".parse().unwrap(),
            &root.join("spool"),
        )
        .unwrap()
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = std::io::Result<&'static [u8]>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(*p)).collect::<Vec<_>>())
    }

    async fn read_all(store: &BundleStore, sha: &str, range: Option<ByteRange>) -> Vec<u8> {
        let bundle = store.open_bundle(sha).await.unwrap().unwrap();
        let mut bytes = bundle.read(range).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = bytes.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_put_lands_under_its_hash_with_that_hash_and_reads_back_whole_or_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), S3_SECRET_KEY).await;
        store.check().await.unwrap();
        let (sha, size) = store.put(body(&[b"0123", b"456789"])).await.unwrap();
        assert_eq!(
            (sha.as_str(), size),
            (sha256_hex(b"0123456789").as_str(), 10)
        );
        let object = dir
            .path()
            .join(format!("s3/bundles/p/q/{}/{sha}", &sha[..2]));
        assert_eq!(std::fs::read(&object).unwrap(), b"0123456789");
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0,
            "the spooled upload is removed"
        );
        assert_eq!(read_all(&store, &sha, None).await, b"0123456789");
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(read_all(&store, &sha, r(2, 4)).await, b"234");
        assert_eq!(read_all(&store, &sha, r(0, 9)).await, b"0123456789");
        let outside = store.open_bundle(&sha).await.unwrap().unwrap();
        let e = outside.read(r(5, 10)).await.err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        // From a blocking thread, as the service asks when a revision is registered.
        let (s, h) = (store.clone(), sha.clone());
        let blocking = tokio::task::spawn_blocking(move || s.size_of(&h))
            .await
            .unwrap();
        assert_eq!(blocking.unwrap(), Some(10));
        let (again, _) = store.put(body(&[b"0123456789"])).await.unwrap();
        assert_eq!(again, sha);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn absent_names_and_objects_without_their_hash_are_not_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), S3_SECRET_KEY).await;
        assert!(store.open_bundle(&"b".repeat(64)).await.unwrap().is_none());
        assert!(store.open_bundle("../../etc").await.unwrap().is_none());
        // Written into the bucket by something else, under the right name: no metadata.
        let sha = sha256_hex(b"planted");
        let planted = dir.path().join(format!("s3/bundles/p/q/{}", &sha[..2]));
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::write(planted.join(&sha), b"planted").unwrap();
        assert!(store.open_bundle(&sha).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_secret_is_refused_with_the_status_and_s3_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), "not-the-secret").await;
        let e = store.check().await.unwrap_err().to_string();
        assert!(e.contains("403"), "{e}");
        let e = store.put(body(&[b"x"])).await.unwrap_err().to_string();
        assert!(e.contains("403") && e.contains("s3://bundles/p/q/"), "{e}");
        assert!(!e.contains("not-the-secret"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("s3/bundles"))
                .unwrap()
                .count(),
            0,
            "nothing stored"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_store_is_named_without_the_presigned_url() {
        let dir = tempfile::tempdir().unwrap();
        let closed = hoist_tests::servers::free_port();
        let store = BundleStore::s3(
            settings(&format!("http://127.0.0.1:{closed}"), S3_SECRET_KEY),
            "s3://bundles/p".parse().unwrap(),
            &dir.path().join("spool"),
        )
        .unwrap();
        for e in [
            store.check().await.unwrap_err().to_string(),
            store.put(body(&[b"x"])).await.unwrap_err().to_string(),
        ] {
            assert!(e.contains(&format!("127.0.0.1:{closed}")), "{e}");
            assert!(!e.contains("X-Amz-Signature"), "{e}");
        }
    }

    #[test]
    fn locations() {
        let l: S3Location = "s3://b".parse().unwrap();
        assert_eq!(l.prefix, "");
        let l: S3Location = "s3://b/x/y/".parse().unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "x/y"));
        for bad in ["s3://b/x/../y", "s3://b//y", "file:///tmp"] {
            assert!(bad.parse::<S3Location>().is_err(), "{bad}");
        }
    }
}
