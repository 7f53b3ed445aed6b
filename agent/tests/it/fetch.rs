//! Bundle fetchers against real servers on 127.0.0.1 (from `hoist_tests::servers`): s3s-fs
//! (SigV4), moto_server (versioning, ETags), a scripted HTTP server (drops, retries, Range),
//! `git daemon` and `git http-backend` behind a small CGI server (Basic auth).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_agent::bundle::fetch::{
    fetch, FetchError, FetchSettings, Fetched, GitAuth, GitSettings, S3Settings,
};
use hoist_agent::client::{http_client, CoordinatorAccess};
use hoist_agent::retry::RetryPolicy;
use hoist_protocol::agent::Revision;
use hoist_protocol::secret::Secret;
use hoist_tests::servers::{
    bare_repo, need_moto, serve, sha256_hex, start_git_http, start_s3s, GitDaemon, HttpServer,
    Moto, Reply, GIT_HTTP_PASSWORD, GIT_HTTP_USER, S3_ACCESS_KEY, S3_SECRET_KEY,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        retries: 3,
        ..FetchSettings::default()
    }
}

fn client() -> reqwest::Client {
    http_client(
        None,
        None,
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap()
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
    // A bundle may carry an application's secrets: only the agent reads it.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
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
    // The backoff alone waits at most 50 ms; a maximum of 2 s leaves room for Retry-After.
    let settings = FetchSettings {
        retry: RetryPolicy {
            max: Duration::from_secs(2),
            ..settings().retry
        },
        ..settings()
    };
    archive(run(&rev, dir.path(), &settings).await.unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn url_retry_after_is_capped_at_the_maximum_backoff() {
    let body = content(1000, 5);
    let served = body.clone();
    let server = HttpServer::start(move |i, req| {
        if i == 0 {
            Reply::status(503).header("Retry-After", "86400")
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
    let settings = FetchSettings {
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(300),
        },
        ..settings()
    };
    let started = Instant::now();
    let fetched = tokio::time::timeout(Duration::from_secs(20), run(&rev, dir.path(), &settings))
        .await
        .expect("the second attempt waited for the day the server asked for");
    archive(fetched.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
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
async fn error_bodies_of_a_failed_download_are_not_copied_into_the_error() {
    for status in [404u16, 500] {
        let server = HttpServer::start(move |_, _| {
            let mut reply = Reply::status(status);
            reply.body =
                b"internal path /srv/secret leaked \x1b[31mcrimson\n<Error><Code>Not a code</Code>"
                    .to_vec();
            reply
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let rev = Revision::Url {
            url: server.url("/b.zip"),
            sha256: "0".repeat(64),
        };
        let err = run(&rev, dir.path(), &settings()).await.unwrap_err();
        let text = hoist_agent::error_chain(&err);
        assert!(
            !text.contains("secret") && !text.contains("crimson") && !text.contains("a code"),
            "{text}"
        );
        let reason = if status == 404 {
            "Not Found"
        } else {
            "Internal Server Error"
        };
        assert!(
            text.contains(&format!("server answered {status} {reason}")),
            "{text}"
        );
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

fn s3_settings(endpoint: String, path_style: bool, secret: &str) -> FetchSettings {
    FetchSettings {
        s3: S3Settings {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            path_style,
            access_key_id: Some(S3_ACCESS_KEY.into()),
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
    let settings = s3_settings(format!("http://{addr}"), true, S3_SECRET_KEY);
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
async fn s3_keys_with_dot_segments_are_refused_before_signing() {
    // Any request reaching this "S3 endpoint" would be a signed request for another path.
    let server = HttpServer::start(|_, _| Reply::status(200)).await;
    let settings = s3_settings(server.url(""), true, S3_SECRET_KEY);
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "../../meta/x",
        "a/../../b",
        "./x",
        "a/./b",
        "a/..",
        "a//b",
        "/x",
        "x/",
        "",
    ] {
        let rev = Revision::S3 {
            bucket: "bkt".into(),
            key: key.into(),
            version_id: None,
            etag: None,
            sha256: "0".repeat(64),
        };
        let err = run(&rev, dir.path(), &settings).await.unwrap_err();
        assert!(
            matches!(err, FetchError::InvalidRevision(_)),
            "{key:?}: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("s3 key {key:?}")),
            "{key:?}: {err}"
        );
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
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
    let settings = s3_settings(
        format!("http://s3.test:{}", addr.port()),
        false,
        S3_SECRET_KEY,
    );
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

#[tokio::test]
#[ignore = "needs moto_server: set HOIST_TEST_MOTO"]
async fn s3_version_id_and_etag_with_moto() {
    let binary = need_moto();
    let moto = Moto::start(&binary).await;
    moto.versioned_bucket("vers").await;
    let v1 = content(20_000, 12);
    let v2 = content(30_000, 13);
    let mut versions = Vec::new();
    for body in [&v1, &v2] {
        versions.push(moto.put("vers", "app.zip", body.clone()).await);
    }
    assert_ne!(versions[0].0, versions[1].0);

    let settings = FetchSettings {
        s3: S3Settings {
            endpoint: Some(moto.endpoint.clone()),
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

/// A bare repository `ROOT/app.git` with two commits; returns (first, second).
fn make_repo(root: &Path) -> (String, String) {
    let ids = bare_repo(
        root,
        "app.git",
        &[
            &[
                ("appspec.yml", "version: 0.0\nos: linux\n"),
                ("scripts/start.sh", "#!/bin/sh\necho one\n"),
            ],
            &[
                ("scripts/start.sh", "#!/bin/sh\necho two\n"),
                ("added.txt", "later\n"),
            ],
        ],
    );
    (ids[0].clone(), ids[1].clone())
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
    let daemon = GitDaemon::start(root.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository: daemon.url("app.git"),
        commit: first.clone(),
    };
    let fetched = run(&rev, dir.path(), &settings()).await.unwrap();
    assert_first_commit(fetched, dir.path(), &first);
}

/// Basic credentials bound to the test servers' host, 127.0.0.1.
fn git_auth_settings(username: &str, password: &str) -> FetchSettings {
    FetchSettings {
        git: GitSettings {
            auth: Some(GitAuth::Basic {
                username: username.into(),
                password: Secret::new(password),
            }),
            auth_hosts: vec!["127.0.0.1".into()],
            ..GitSettings::default()
        },
        ..settings()
    }
}

#[tokio::test]
async fn git_credentials_are_not_sent_to_a_host_the_config_did_not_name() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = make_repo(root.path());
    let server = start_git_http(root.path(), true).await;
    // The same server under another name: the credentials are bound to 127.0.0.1 only.
    let repository = server.url("/app.git").replace("127.0.0.1", "localhost");
    let dir = tempfile::tempdir().unwrap();
    let rev = Revision::Git {
        repository,
        commit: first.clone(),
    };
    let settings = git_auth_settings(GIT_HTTP_USER, GIT_HTTP_PASSWORD);
    let err = run(&rev, dir.path(), &settings).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Git { op: "fetch", .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("terminal prompts disabled"),
        "{err}"
    );
    let requests = server.requests();
    assert!(!requests.is_empty(), "git reached the server");
    assert!(
        requests.iter().all(|r| r.header("authorization").is_none()),
        "credentials were sent: {requests:?}"
    );

    // Bound to no host at all: nowhere either.
    let mut unbound = settings.clone();
    unbound.git.auth_hosts.clear();
    let rev = Revision::Git {
        repository: server.url("/app.git"),
        commit: first,
    };
    let before = server.requests().len();
    run(&rev, dir.path(), &unbound).await.unwrap_err();
    assert!(
        server.requests()[before..]
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "unbound credentials were sent"
    );
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
    let fetched = run(
        &rev,
        dir.path(),
        &git_auth_settings(GIT_HTTP_USER, GIT_HTTP_PASSWORD),
    )
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
    let err = run(
        &rev,
        dir.path(),
        &git_auth_settings(GIT_HTTP_USER, "wrong-pass"),
    )
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
    let fetched = run(
        &rev,
        dir.path(),
        &git_auth_settings(GIT_HTTP_USER, GIT_HTTP_PASSWORD),
    )
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
