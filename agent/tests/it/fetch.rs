//! Bundle fetchers against real servers on 127.0.0.1: s3s-fs (SigV4), moto_server (versioning,
//! ETags), a small HTTP server written here (drops, retries, Range), `git daemon` and
//! `git http-backend` behind a small CGI server written here (Basic auth).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_agent::bundle::fetch::{
    fetch, http_client, CoordinatorAccess, FetchError, FetchSettings, Fetched, GitAuth,
    GitSettings, S3Settings, Secret,
};
use hoist_protocol::agent::Revision;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic, not very compressible test content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn settings() -> FetchSettings {
    FetchSettings {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        retries: 3,
        ..FetchSettings::default()
    }
}

fn client() -> reqwest::Client {
    http_client(None, None, Duration::from_secs(5), Duration::from_secs(10)).unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn run(rev: &Revision, work: &Path, settings: &FetchSettings) -> Result<Fetched, FetchError> {
    fetch(rev, work, &client(), settings, &CancellationToken::new()).await
}

fn archive(fetched: Fetched) -> (PathBuf, String, u64) {
    match fetched {
        Fetched::Archive {
            path,
            sha256,
            bytes,
        } => (path, sha256, bytes),
        other => panic!("expected an archive, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 server with scripted misbehaviour.

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close the connection after this many body bytes.
    cut_after: Option<usize>,
    /// Send no Content-Length: the body ends when the connection closes.
    no_length: bool,
    /// Send the head, then go silent.
    stall: bool,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: format!("status {status}\n").into_bytes(),
            cut_after: None,
            no_length: false,
            stall: false,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Serves `body` honouring `Range: bytes=N-` (with ETag `"v1"`).
fn serve(body: &[u8], req: &Request) -> Reply {
    let mut reply = Reply::status(200).header("ETag", "\"v1\"");
    if let Some(start) = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        if req.header("if-range").is_none_or(|v| v == "\"v1\"") && start < body.len() {
            reply.status = 206;
            reply.headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
            ));
            reply.body = body[start..].to_vec();
            return reply;
        }
    }
    reply.body = body.to_vec();
    reply
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

struct HttpServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpServer {
    async fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, handler, seen).await;
                });
            }
        });
        HttpServer { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(
        !headers.contains_key("transfer-encoding"),
        "the test server reads only Content-Length bodies"
    );
    while body.len() < length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

async fn answer(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(req.clone());
        seen.len() - 1
    };
    let reply = handler(index, &req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if reply.stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(());
    }
    let body = match reply.cut_after {
        Some(n) => &reply.body[..n.min(reply.body.len())],
        None => &reply.body[..],
    };
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// URL revisions.

#[tokio::test]
async fn url_download_is_verified_and_renamed() {
    let body = content(200_000, 1);
    let served = body.clone();
    let server = HttpServer::start(move |_, req| serve(&served, req)).await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    // Upper case digits must match too.
    let rev = Revision::Url {
        url: server.url("/bundle.tgz"),
        sha256: sha256_hex(&body).to_ascii_uppercase(),
    };
    let (path, sha, bytes) = archive(run(&rev, &work, &settings()).await.unwrap());
    assert_eq!(path, work.join("bundle"));
    assert_eq!(sha, sha256_hex(&body));
    assert_eq!(bytes, body.len() as u64);
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(names(&work), ["bundle"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/bundle.tgz");
}

#[tokio::test]
async fn url_resumes_with_range_after_a_dropped_connection() {
    let body = content(300_000, 2);
    let served = body.clone();
    let server = HttpServer::start(move |i, req| {
        let mut reply = serve(&served, req);
        if i == 0 {
            reply.cut_after = Some(100_000);
        }
        reply
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Url {
        url: server.url("/b.zip"),
        sha256: sha256_hex(&body),
    };
    let (path, sha, _) = archive(run(&rev, dir.path(), &settings()).await.unwrap());
    assert_eq!(sha, sha256_hex(&body));
    assert_eq!(std::fs::read(path).unwrap(), body);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one drop, one resume");
    assert_eq!(requests[0].header("range"), None);
    assert_eq!(requests[1].header("range"), Some("bytes=100000-"));
    assert_eq!(requests[1].header("if-range"), Some("\"v1\""));
}

#[tokio::test]
async fn url_starts_over_when_the_server_ignores_range() {
    let body = content(150_000, 3);
    let served = body.clone();
    let server = HttpServer::start(move |i, _req| {
        // Never honours Range: always the whole body with 200.
        let mut reply = Reply::status(200);
        reply.body = served.clone();
        if i == 0 {
            reply.cut_after = Some(50_000);
        }
        reply
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Url {
        url: server.url("/b.zip"),
        sha256: sha256_hex(&body),
    };
    let (path, _, bytes) = archive(run(&rev, dir.path(), &settings()).await.unwrap());
    assert_eq!(bytes, body.len() as u64);
    assert_eq!(std::fs::read(path).unwrap(), body);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("range"), Some("bytes=50000-"));
}

#[tokio::test]
async fn url_retries_503_then_succeeds() {
    let body = content(10_000, 4);
    let served = body.clone();
    let server = HttpServer::start(move |i, req| {
        if i < 2 {
            Reply::status(503)
        } else {
            serve(&served, req)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Url {
        url: server.url("/b"),
        sha256: sha256_hex(&body),
    };
    archive(run(&rev, dir.path(), &settings()).await.unwrap());
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn url_honours_retry_after_on_429() {
    let body = content(1000, 5);
    let served = body.clone();
    let server = HttpServer::start(move |i, req| {
        if i == 0 {
            Reply::status(429).header("Retry-After", "1")
        } else {
            serve(&served, req)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Url {
        url: server.url("/b"),
        sha256: sha256_hex(&body),
    };
    let started = Instant::now();
    archive(run(&rev, dir.path(), &settings()).await.unwrap());
    // The backoff alone would wait at most 50 ms; the second request waited for Retry-After.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn url_client_errors_are_not_retried_and_hide_the_query() {
    let cases = [(404u16, 1usize), (403, 1), (408, 4), (500, 4)];
    for (status, expected_requests) in cases {
        let server = HttpServer::start(move |_, _| Reply::status(status)).await;
        let dir = tempfile::tempdir().unwrap();
        let rev = Revision::Url {
            url: server.url("/b.zip?X-Amz-Signature=topsecret&X-Amz-Credential=AK"),
            sha256: "0".repeat(64),
        };
        let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
        let text = format!(
            "{err}: {:?}",
            std::error::Error::source(&err).map(|s| s.to_string())
        );
        assert!(!text.contains("topsecret"), "{text}");
        assert!(!text.contains("X-Amz"), "{text}");
        assert!(
            text.contains(&format!("server answered {status}")),
            "{text}"
        );
        assert!(text.contains(&server.url("/b.zip")), "{text}");
        assert_eq!(
            server.requests().len(),
            expected_requests,
            "status {status}"
        );
        if expected_requests > 1 {
            assert!(
                matches!(err, FetchError::GaveUp { attempts: 4, .. }),
                "{err:?}"
            );
        }
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }
}

#[tokio::test]
async fn wrong_sha256_fails_with_the_exact_message_and_leaves_no_bundle() {
    let body = content(5000, 6);
    let served = body.clone();
    let server = HttpServer::start(move |_, req| serve(&served, req)).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = sha256_hex(b"something else");
    let rev = Revision::Url {
        url: server.url("/b.zip"),
        sha256: expected.clone(),
    };
    let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
    assert!(
        matches!(err, FetchError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "bundle checksum mismatch: expected {expected}, got {}",
            sha256_hex(&body)
        )
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn an_earlier_bundle_in_the_work_dir_is_replaced() {
    let body = content(100, 7);
    let served = body.clone();
    let server = HttpServer::start(move |_, req| serve(&served, req)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bundle"), b"stale").unwrap();
    std::fs::write(dir.path().join("bundle.part"), b"stale part").unwrap();
    let rev = Revision::Url {
        url: server.url("/b"),
        sha256: sha256_hex(&body),
    };
    let (path, _, _) = archive(run(&rev, dir.path(), &settings()).await.unwrap());
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(names(dir.path()), ["bundle"]);
}

#[tokio::test]
async fn size_cap_is_enforced_with_and_without_content_length() {
    for no_length in [false, true] {
        let body = content(100_000, 8);
        let served = body.clone();
        let server = HttpServer::start(move |_, req| {
            let mut reply = serve(&served, req);
            reply.no_length = no_length;
            reply
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let rev = Revision::Url {
            url: server.url("/big"),
            sha256: sha256_hex(&body),
        };
        let settings = FetchSettings {
            max_bytes: 60_000,
            ..settings()
        };
        let err = run(&rev, dir.path(), &settings).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 60_000, .. }),
            "no_length={no_length}: {err:?}"
        );
        assert!(
            err.to_string().contains("exceeds the limit of 60000 bytes"),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1, "too large is not retried");
        assert_eq!(names(dir.path()), Vec::<String>::new());

        // The same body under a cap it fits.
        let fits = FetchSettings {
            max_bytes: 100_000,
            ..settings
        };
        archive(run(&rev, dir.path(), &fits).await.unwrap());
    }
}

#[tokio::test]
async fn cancellation_aborts_a_stalled_download_promptly() {
    let server = HttpServer::start(|_, _| {
        let mut reply = Reply::status(200);
        reply.body = vec![0; 1000];
        reply.stall = true;
        reply
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Url {
        url: server.url("/slow"),
        sha256: "0".repeat(64),
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let settings = settings();
    let err = fetch(&rev, dir.path(), &client(), &settings, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Cancelled), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn invalid_revisions_are_refused_before_any_request() {
    let server = HttpServer::start(|_, _| Reply::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        Revision::Url {
            url: server.url("/b"),
            sha256: "abc".into(),
        },
        Revision::Url {
            url: "ftp://127.0.0.1/b".into(),
            sha256: "0".repeat(64),
        },
        Revision::Git {
            repository: "/nonexistent".into(),
            commit: "abc1234".into(),
        },
        Revision::Git {
            repository: "--upload-pack=touch /tmp/x".into(),
            commit: "a".repeat(40),
        },
    ];
    for rev in cases {
        let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::InvalidRevision(_)),
            "{rev:?}: {err:?}"
        );
    }
    assert!(server.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Coordinator store.

#[tokio::test]
async fn coordinator_store_sends_host_auth() {
    let body = content(4096, 9);
    let sha = sha256_hex(&body);
    let served = body.clone();
    let path = format!("/v1/bundles/{sha}");
    let server = HttpServer::start(move |_, req| {
        let authorised = req.header("x-hoist-host") == Some("host-1")
            && req.header("authorization") == Some("Bearer s3cret");
        if req.target != path {
            Reply::status(404)
        } else if !authorised {
            Reply::status(401)
        } else {
            serve(&served, req)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Coordinator {
        sha256: sha.clone(),
        size: body.len() as u64,
    };
    let mut settings = settings();
    settings.coordinator = Some(CoordinatorAccess {
        base_url: server.url("/"),
        host_id: "host-1".into(),
        host_secret: Secret::new("s3cret"),
    });
    let (path, got, _) = archive(run(&rev, dir.path(), &settings).await.unwrap());
    assert_eq!(got, sha);
    assert_eq!(std::fs::read(path).unwrap(), body);

    settings.coordinator = Some(CoordinatorAccess {
        base_url: server.url(""),
        host_id: "host-1".into(),
        host_secret: Secret::new("wrong"),
    });
    let err = run(&rev, dir.path(), &settings).await.unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 401, .. }),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("wrong"));

    settings.coordinator = None;
    let err = run(&rev, dir.path(), &settings).await.unwrap_err();
    assert!(matches!(err, FetchError::NotConfigured(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// S3 with s3s-fs: SigV4 checked for real.

const AK: &str = "AKIAHOISTTEST";
const SK: &str = "hoist-test-secret-key";

/// Virtual-host parsing for `BUCKET.s3.test:PORT` (s3s's own parsers keep the port).
struct TestDomain;

impl s3s::host::S3Host for TestDomain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = host.split(':').next().unwrap_or(host);
        Ok(match name.strip_suffix(".s3.test") {
            Some(bucket) => s3s::host::VirtualHost::new("s3.test").with_bucket(bucket),
            None => s3s::host::VirtualHost::new("s3.test"),
        })
    }
}

async fn start_s3s(root: &Path, virtual_host: bool) -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    if virtual_host {
        builder.set_host(TestDomain);
    }
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    addr
}

fn s3_settings(endpoint: String, path_style: bool, secret: &str) -> FetchSettings {
    FetchSettings {
        s3: S3Settings {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            path_style,
            access_key_id: Some(AK.into()),
            secret_access_key: Some(Secret::new(secret)),
            session_token: None,
        },
        ..settings()
    }
}

#[tokio::test]
async fn s3_signed_get_path_style() {
    let root = tempfile::tempdir().unwrap();
    let body = content(70_000, 10);
    let key = "releases/app v1+ü.zip";
    std::fs::create_dir_all(root.path().join("bkt/releases")).unwrap();
    std::fs::write(root.path().join("bkt").join(key), &body).unwrap();
    let addr = start_s3s(root.path(), false).await;

    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::S3 {
        bucket: "bkt".into(),
        key: key.into(),
        version_id: None,
        etag: None,
        sha256: sha256_hex(&body),
    };
    let settings = s3_settings(format!("http://{addr}"), true, SK);
    let (path, _, _) = archive(run(&rev, dir.path(), &settings).await.unwrap());
    assert_eq!(std::fs::read(path).unwrap(), body);

    // A missing object is a clear 404, not retried.
    let missing = Revision::S3 {
        bucket: "bkt".into(),
        key: "nope.zip".into(),
        version_id: None,
        etag: None,
        sha256: sha256_hex(&body),
    };
    let err = run(&missing, dir.path(), &settings).await.unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("s3://bkt/nope.zip"), "{err}");
}

#[tokio::test]
async fn s3_wrong_secret_is_a_clear_403() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bkt")).unwrap();
    std::fs::write(root.path().join("bkt/b.zip"), b"data").unwrap();
    let addr = start_s3s(root.path(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::S3 {
        bucket: "bkt".into(),
        key: "b.zip".into(),
        version_id: None,
        etag: None,
        sha256: sha256_hex(b"data"),
    };
    let settings = s3_settings(format!("http://{addr}"), true, "not-the-secret");
    let err = run(&rev, dir.path(), &settings).await.unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 403, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("fetching s3://bkt/b.zip: server answered 403"),
        "{text}"
    );
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(
        !text.contains("not-the-secret") && !text.contains("X-Amz"),
        "{text}"
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn s3_signed_get_virtual_host_style() {
    let root = tempfile::tempdir().unwrap();
    let body = content(1234, 11);
    std::fs::create_dir_all(root.path().join("vbkt")).unwrap();
    std::fs::write(root.path().join("vbkt/a.tgz"), &body).unwrap();
    let addr = start_s3s(root.path(), true).await;
    // The bucket's host name resolves to the test server.
    let client = reqwest::Client::builder()
        .resolve("vbkt.s3.test", addr)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::S3 {
        bucket: "vbkt".into(),
        key: "a.tgz".into(),
        version_id: None,
        etag: None,
        sha256: sha256_hex(&body),
    };
    let settings = s3_settings(format!("http://s3.test:{}", addr.port()), false, SK);
    let fetched = fetch(
        &rev,
        dir.path(),
        &client,
        &settings,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let (path, _, _) = archive(fetched);
    assert_eq!(std::fs::read(path).unwrap(), body);
}

// ---------------------------------------------------------------------------------------------
// S3 with moto_server: versioning and ETags (moto checks no signatures).

/// A server process in its own process group, killed with the whole group when dropped
/// (`git daemon` runs `git-daemon` as a child).
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn spawn(command: &mut std::process::Command) -> ChildGuard {
        use std::os::unix::process::CommandExt;
        ChildGuard(
            command
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn s3_version_id_and_etag_with_moto() {
    let Some(moto) = std::env::var_os("HOIST_TEST_MOTO") else {
        println!("skipping: HOIST_TEST_MOTO (path to moto_server) is not set");
        return;
    };
    let port = free_port();
    let _moto = ChildGuard::spawn(std::process::Command::new(moto).args([
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]));
    wait_for_port(port).await;
    let base = format!("http://127.0.0.1:{port}");
    // moto treats requests without Authorization as anonymous (and refuses to overwrite a
    // private object); it checks no signature, so any SigV4-shaped header will do.
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0"
            .parse()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    let ok = |r: reqwest::Response| {
        assert!(r.status().is_success(), "{r:?}");
        r
    };
    ok(http.put(format!("{base}/vers")).send().await.unwrap());
    ok(http
        .put(format!("{base}/vers?versioning"))
        .body(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Status>Enabled</Status></VersioningConfiguration>",
        )
        .send()
        .await
        .unwrap());
    let v1 = content(20_000, 12);
    let v2 = content(30_000, 13);
    let mut versions = Vec::new();
    for body in [&v1, &v2] {
        let r = ok(http
            .put(format!("{base}/vers/app.zip"))
            .body(body.clone())
            .send()
            .await
            .unwrap());
        let header = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_owned();
        versions.push((header("x-amz-version-id"), header("etag")));
    }
    assert_ne!(versions[0].0, versions[1].0);

    let settings = FetchSettings {
        s3: S3Settings {
            endpoint: Some(base.clone()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some("testing".into()),
            secret_access_key: Some(Secret::new("testing")),
            session_token: Some(Secret::new("token")),
        },
        ..settings()
    };
    let dir = tempfile::tempdir().unwrap();
    // The older version by id, with its ETag given quoted as S3 lists it.
    let rev = Revision::S3 {
        bucket: "vers".into(),
        key: "app.zip".into(),
        version_id: Some(versions[0].0.clone()),
        etag: Some(versions[0].1.clone()),
        sha256: sha256_hex(&v1),
    };
    let (path, _, _) = archive(run(&rev, dir.path(), &settings).await.unwrap());
    assert_eq!(std::fs::read(path).unwrap(), v1);

    // Without a version id: the latest.
    let latest = Revision::S3 {
        bucket: "vers".into(),
        key: "app.zip".into(),
        version_id: None,
        etag: Some(versions[1].1.trim_matches('"').to_owned()),
        sha256: sha256_hex(&v2),
    };
    archive(run(&latest, dir.path(), &settings).await.unwrap());

    // The old version's id with the new version's ETag: refused, nothing kept.
    let mismatch = Revision::S3 {
        bucket: "vers".into(),
        key: "app.zip".into(),
        version_id: Some(versions[0].0.clone()),
        etag: Some(versions[1].1.clone()),
        sha256: sha256_hex(&v1),
    };
    let err = run(&mismatch, dir.path(), &settings).await.unwrap_err();
    assert!(matches!(err, FetchError::EtagMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("etag mismatch: expected"), "{err}");
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Git.

/// Runs git for the test's own setup with a clean configuration.
fn git(cwd: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Hoist Test",
            "-c",
            "user.email=test@hoist.invalid",
        ])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare repository `ROOT/app.git` with two commits; returns (first, second).
fn make_repo(root: &Path) -> (String, String) {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("scripts")).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("appspec.yml"), "version: 0.0\nos: linux\n").unwrap();
    std::fs::write(work.join("scripts/start.sh"), "#!/bin/sh\necho one\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["update-index", "--chmod=+x", "scripts/start.sh"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("scripts/start.sh"), "#!/bin/sh\necho two\n").unwrap();
    std::fs::write(work.join("added.txt"), "later\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    git(root, &["clone", "-q", "--bare", "work", "app.git"]);
    (first, second)
}

/// Checks that `fetched` is the first commit's tree, without `.git`.
fn assert_first_commit(fetched: Fetched, work: &Path, commit: &str) {
    let Fetched::Directory { path, commit: got } = fetched else {
        panic!("expected a directory, got {fetched:?}");
    };
    assert_eq!(path, work.join("bundle"));
    assert_eq!(got, commit);
    assert_eq!(names(&path), ["appspec.yml", "scripts"]);
    assert_eq!(
        std::fs::read_to_string(path.join("scripts/start.sh")).unwrap(),
        "#!/bin/sh\necho one\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path.join("scripts/start.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o100 != 0, "executable bit kept: {mode:o}");
    // Nothing but the bundle is left in the work directory.
    assert_eq!(names(work), ["bundle"]);
}

#[tokio::test]
async fn git_file_repository_at_a_commit() {
    let root = tempfile::tempdir().unwrap();
    let (first, second) = make_repo(root.path());
    let repository = format!("file://{}", root.path().join("app.git").display());
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: repository.clone(),
        commit: first.to_ascii_uppercase(),
    };
    let fetched = run(&rev, dir.path(), &settings()).await.unwrap();
    assert_first_commit(fetched, dir.path(), &first);

    // The tip, into the same work directory: the earlier checkout is replaced.
    let rev = Revision::Git {
        repository,
        commit: second.clone(),
    };
    let Fetched::Directory { path, .. } = run(&rev, dir.path(), &settings()).await.unwrap() else {
        panic!("expected a directory");
    };
    assert_eq!(names(&path), ["added.txt", "appspec.yml", "scripts"]);
}

#[tokio::test]
async fn git_unknown_commit_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path());
    let dir = tempfile::tempdir().unwrap();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let rev = Revision::Git {
        repository: format!("file://{}", root.path().join("app.git").display()),
        commit: missing.into(),
    };
    let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
    assert!(matches!(err, FetchError::CommitNotFound { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains(&format!("commit {missing} not found in file://")));
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // A repository that does not exist: git's own words.
    let rev = Revision::Git {
        repository: format!("file://{}", root.path().join("nope.git").display()),
        commit: missing.into(),
    };
    let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Git { op: "fetch", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.git"), "{err}");
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn git_daemon_repository() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = make_repo(root.path());
    let port = free_port();
    let _daemon = ChildGuard::spawn(
        std::process::Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.path().display()))
            .arg("--export-all")
            .arg(root.path()),
    );
    wait_for_port(port).await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: format!("git://127.0.0.1:{port}/app.git"),
        commit: first.clone(),
    };
    let fetched = run(&rev, dir.path(), &settings()).await.unwrap();
    assert_first_commit(fetched, dir.path(), &first);
}

/// Smart HTTP: `git http-backend` as CGI, behind Basic auth `user:pass`.
async fn start_git_http(root: &Path, forward_protocol: bool) -> HttpServer {
    let root = root.to_path_buf();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(Some(req)) = read_request(&mut stream).await else {
                    return;
                };
                seen.lock().unwrap().push(req.clone());
                let response = cgi(&root, &req, forward_protocol).await;
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    HttpServer { addr, requests }
}

async fn cgi(root: &Path, req: &Request, forward_protocol: bool) -> Vec<u8> {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:pass")
    );
    if req.header("authorization") != Some(expected.as_str()) {
        return b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec();
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "user")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = req.header("content-type") {
        command.env("CONTENT_TYPE", t);
    }
    if let Some(e) = req.header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", e);
    }
    if forward_protocol {
        if let Some(p) = req.header("git-protocol") {
            command.env("GIT_PROTOCOL", p);
        }
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&req.body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = out.stdout;
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI output has a header block");
    let head = String::from_utf8_lossy(&stdout[..split.0]).into_owned();
    let body = &stdout[split.0 + split.1..];
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => {
                headers.push_str(line.trim_end());
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

fn git_auth_settings(username: &str, password: &str) -> FetchSettings {
    FetchSettings {
        git: GitSettings {
            auth: Some(GitAuth::Basic {
                username: username.into(),
                password: Secret::new(password),
            }),
            ..GitSettings::default()
        },
        ..settings()
    }
}

#[tokio::test]
async fn git_smart_http_with_basic_auth() {
    let root = tempfile::tempdir().unwrap();
    let (first, second) = make_repo(root.path());
    let server = start_git_http(root.path(), true).await;
    let repository = server.url("/app.git");

    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: repository.clone(),
        commit: first.clone(),
    };
    let fetched = run(&rev, dir.path(), &git_auth_settings("user", "pass"))
        .await
        .unwrap();
    assert_first_commit(fetched, dir.path(), &first);
    // Protocol v2 served the one commit: a shallow fetch, no full-history fallback.
    let posts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        posts
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("deepen 1")),
        "a shallow fetch was asked for"
    );
    assert!(
        !posts
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&format!("want {second}"))),
        "the tip was never wanted"
    );

    // Wrong password: git's failure, without the password anywhere in the error.
    let err = run(&rev, dir.path(), &git_auth_settings("user", "wrong-pass"))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, FetchError::Git { op: "fetch", .. }),
        "{err:?}"
    );
    assert!(text.contains("Authentication failed"), "{text}");
    assert!(
        !text.contains("wrong-pass") && !text.contains("Basic "),
        "{text}"
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // No credentials at all: fails at once instead of prompting.
    let started = Instant::now();
    let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
    assert!(matches!(err, FetchError::Git { .. }), "{err:?}");
    assert!(
        err.to_string().contains("terminal prompts disabled"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn git_smart_http_v0_server_falls_back_to_a_full_fetch() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = make_repo(root.path());
    // Without GIT_PROTOCOL the backend speaks v0, which refuses unadvertised commits.
    let server = start_git_http(root.path(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: server.url("/app.git"),
        commit: first.clone(),
    };
    let fetched = run(&rev, dir.path(), &git_auth_settings("user", "pass"))
        .await
        .unwrap();
    assert_first_commit(fetched, dir.path(), &first);
    // The shallow fetch was tried and refused (git refuses before sending wants to a v0 server
    // that does not advertise allow-reachable-sha1-in-want), then every ref was fetched.
    let requests = server.requests();
    let ref_listings = requests
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("/info/refs"))
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert_eq!(ref_listings, 2, "two fetches, each challenged once");
    let posts: Vec<String> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.header("authorization").is_some())
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(!posts[0].contains("deepen 1"), "{posts:?}");
}

#[tokio::test]
async fn git_timeout_kills_a_hung_fetch() {
    // A git:// server that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: format!("git://{addr}/app.git"),
        commit: "a".repeat(40),
    };
    let settings = FetchSettings {
        git: GitSettings {
            timeout: Duration::from_millis(500),
            ..GitSettings::default()
        },
        ..settings()
    };
    let started = Instant::now();
    let err = run(&rev, dir.path(), &settings).await.unwrap_err();
    assert!(
        matches!(err, FetchError::GitTimeout { op: "fetch", .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!held.lock().unwrap().is_empty(), "git connected");
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[test]
fn http_client_rejects_a_ca_file_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for path in [&ca, &missing] {
        let err = http_client(
            Some(path),
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::CaFile { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("reading CA file {}", path.display())
        );
    }
}
