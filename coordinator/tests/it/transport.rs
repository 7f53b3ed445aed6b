//! The server as seen from the network: credentials before bodies, body and head limits,
//! stalled clients, connection counts, TLS by default, private data, error answers.
//!
//! Waits below are hang guards (a server that never answers fails the test instead of
//! hanging it), not speed assertions.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::StreamExt;
use hoist_protocol::ErrorBody;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Longest any single answer is waited for before the test fails.
const GUARD: Duration = Duration::from_secs(40);

/// A generous bound on what a few dozen refused requests may add to the server's RSS.
const RSS_BOUND_KIB: u64 = 30 * 1024;

/// Reads one HTTP/1.1 answer: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("an answer before the guard")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("the body before the guard")
            .unwrap();
        assert!(n > 0, "closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, body)
}

/// Waits until the server closes the connection (EOF or reset), reading what comes.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(GUARD, stream.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body:?}"))
        .error
}

async fn operator_answers(server: &Server) {
    let resp = tokio::time::timeout(
        GUARD,
        server
            .client()
            .get(format!("{}/v1/applications", server.url))
            .bearer_auth(TOKEN)
            .send(),
    )
    .await
    .expect("the operator request is answered")
    .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn register_with_a_bad_token_is_refused_before_its_body_is_read() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let mut s = TcpStream::connect(server.authority()).await.unwrap();
    // A body is announced but never sent: only an answer from the head alone can come.
    s.write_all(
        b"POST /v1/hosts/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hrt_wrong\r\n\
          Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        error_message(&body).contains("registration token"),
        "{body}"
    );
    closed_by_server(&mut s).await;
    // The same holds for host and operator credentials.
    for (method, path, auth) in [
        (
            "POST",
            "/v1/hosts/poll",
            "X-Hoist-Host: h_x\r\nAuthorization: Bearer wrong",
        ),
        ("POST", "/v1/applications", "Authorization: Bearer wrong"),
        ("PUT", "/v1/bundles", "Authorization: Bearer wrong"),
    ] {
        let mut s = TcpStream::connect(server.authority()).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 1000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut s).await;
        assert_eq!(status, 401, "{path}: {body}");
        error_message(&body);
        closed_by_server(&mut s).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_unauthenticated_bodies_over_http1_leave_server_rss_flat() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    operator_answers(&server).await;
    let before = server.rss_kib();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let authority = server.authority();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(authority).await.unwrap();
            let auth = if i % 2 == 0 {
                "Authorization: Bearer hrt_wrong\r\n"
            } else {
                ""
            };
            let head = format!(
                "POST /v1/hosts/register HTTP/1.1\r\nHost: x\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 1990000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            // All but the last byte, then stall: the server must not hold what it got.
            let body = vec![b' '; 1_989_999];
            let sent = tokio::time::timeout(GUARD, s.write_all(&body)).await;
            (s, sent.is_ok())
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap().0);
    }
    let grown = server.rss_kib().saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
        "server RSS grew by {grown} KiB for 50 unauthenticated stalled bodies"
    );
    operator_answers(&server).await;
    for mut s in streams {
        closed_by_server(&mut s).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_unauthenticated_bodies_over_http2_leave_server_rss_flat() {
    let tmp = Scratch::new();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &["--http2-cleartext"],
        Some(TOKEN),
    );
    operator_answers(&server).await;
    let before = server.rss_kib();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut requests = Vec::new();
    for _ in 0..100 {
        let chunk = bytes_of(1_990_000);
        // One chunk, then nothing ever again.
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(chunk)])
            .chain(futures_util::stream::pending());
        requests.push(tokio::spawn(
            h2.post(format!("{}/v1/hosts/register", server.url))
                .bearer_auth("hrt_wrong")
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(body))
                .send(),
        ));
    }
    for r in requests {
        let resp = tokio::time::timeout(GUARD, r)
            .await
            .expect("an answer to each stream")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    }
    let grown = server.rss_kib().saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
        "server RSS grew by {grown} KiB for 100 unauthenticated stalled HTTP/2 bodies"
    );
    operator_answers(&server).await;
}

fn bytes_of(n: usize) -> Bytes {
    Bytes::from(vec![b' '; n])
}

#[tokio::test(flavor = "multi_thread")]
async fn cleartext_http2_is_off_unless_asked_for() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = tokio::time::timeout(
        GUARD,
        h2.get(format!("{}/v1/applications", server.url))
            .bearer_auth(TOKEN)
            .send(),
    )
    .await
    .expect("refused or answered before the guard");
    assert!(r.is_err(), "HTTP/2 with prior knowledge was served: {r:?}");
    operator_answers(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_finishes_its_request_head_is_closed() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let mut s = TcpStream::connect(server.authority()).await.unwrap();
    s.write_all(b"POST /v1/hosts/poll HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_server(&mut s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authenticated_body_that_stalls_is_cut_with_408() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let mut s = TcpStream::connect(server.authority()).await.unwrap();
    let head = format!(
        "POST /v1/applications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 408, "{body}");
    assert!(error_message(&body).contains("did not arrive"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_route_limit_gets_413_json() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let http = server.client();
    // Declared and sent: 100 KiB for a 64 KiB route.
    let name = "a".repeat(100 * 1024);
    let resp = http
        .post(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let msg = resp.json::<ErrorBody>().await.unwrap().error;
    assert!(msg.contains("65536"), "{msg}");
    // Chunked, so no length is declared: cut while reading.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(bytes_of(8 * 1024))));
    let resp = http
        .post(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
        resp.json::<ErrorBody>().await.unwrap();
    }
    // A report may be larger than other JSON bodies, but not unbounded.
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let resp = host
        .req(reqwest::Method::POST, "/v1/commands/c_x/reports")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"seq\":1,\"at_ms\":1,\"body\":{{\"message\":\"{}\"}}}}",
            "x".repeat(300 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    resp.json::<ErrorBody>().await.unwrap();
    operator_answers(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_idle_connections_do_not_lock_out_a_poll() {
    let tmp = Scratch::new();
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    // Started the way a unit without LimitNOFILE starts it: a small soft limit.
    let nofile = format!("--nofile=256:{hard}");
    let server = Server::launch(
        &tmp.path().join("data"),
        Launch {
            prefix: &["prlimit", &nofile],
            ..Launch::default()
        },
    );
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    // Connected at once; a server that stops accepting leaves some of them unconnected,
    // and the poll below then finds no way in either.
    let connects: Vec<_> = (0..400)
        .map(|_| {
            let authority = server.authority();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(authority)).await
            })
        })
        .collect();
    let mut idle = Vec::new();
    for c in connects {
        if let Ok(Ok(s)) = c.await.unwrap() {
            idle.push(s);
        }
    }
    let register = tokio::time::timeout(
        GUARD,
        SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])),
    )
    .await
    .expect("registration answered beside 400 idle connections");
    let polled = tokio::time::timeout(GUARD, register.poll(0))
        .await
        .expect("a poll answered beside 400 idle connections");
    assert!(polled.is_none());
    assert!(
        server.log().contains("raised the open-file limit"),
        "{}",
        server.log()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_address_serves_tls_with_a_generated_certificate() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let server = Server::launch(
        &data,
        Launch {
            listen: "0.0.0.0:0",
            ..Launch::default()
        },
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let cert_path = data.join("tls/cert.pem");
    let pem = std::fs::read(&cert_path).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(|der| {
            Sha256::digest(der)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap();
    let printed = std::process::Command::new(HOIST)
        .args(["server", "fingerprint", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), served);
    assert!(
        server.log().contains(&served),
        "the log names the fingerprint:\n{}",
        server.log()
    );
    // The operator CLI trusts it with --ca-file / HOIST_CA_FILE.
    let cli = hoist_env(
        &server.url,
        &["app", "list"],
        &[("HOIST_CA_FILE", cert_path.display().to_string())],
    )
    .await;
    cli.ok();
    let untrusted = hoist_with(&server.url, Some(TOKEN), &["app", "list"]).await;
    assert_ne!(
        untrusted.code, 0,
        "a CLI without --ca-file refuses the certificate"
    );
    // Plain HTTP on that port is not served.
    let plain = server.url.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/v1/applications"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(
        r.as_ref().map_or(true, |r| !r.status().is_success()),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_a_non_loopback_address_needs_insecure_http() {
    let tmp = Scratch::new();
    let server = Server::launch(
        &tmp.path().join("data"),
        Launch {
            listen: "0.0.0.0:0",
            extra: &["--insecure-http"],
            ..Launch::default()
        },
    );
    assert!(server.url.starts_with("http://"), "{}", server.url);
    operator_answers(&server).await;
    assert!(!tmp.path().join("data/tls").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_and_database_are_private_under_umask_022() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let server = Server::launch(
        &data,
        Launch {
            prefix: &["sh", "-c", "umask 022; exec \"$0\" \"$@\""],
            ..Launch::default()
        },
    );
    server.hoist(&["app", "create", "shop"]).await.ok();
    let mode = |p: &str| {
        std::fs::metadata(data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "data directory");
    for f in ["hoist.db", "hoist.db-wal", "hoist.db-shm", "operator-token"] {
        if f != "operator-token" || data.join(f).exists() {
            assert_eq!(mode(f), 0o600, "{f}");
        }
    }
    assert_eq!(mode("bundles"), 0o700, "bundle store");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_answers_are_json_for_bad_utf8_and_long_uris() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let http = server.client();
    let resp = http
        .get(format!("{}/v1/revisions/%FF", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let msg = resp.json::<ErrorBody>().await.unwrap().error;
    assert!(msg.contains("UTF-8"), "{msg}");
    let long = "a".repeat(16 * 1024);
    let resp = http
        .get(format!("{}/v1/revisions/{long}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 414);
    resp.json::<ErrorBody>().await.unwrap();
    let resp = http
        .delete(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    resp.json::<ErrorBody>().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_log_sets_the_log_level_when_hoist_log_is_unset() {
    let tmp = Scratch::new();
    let server = Server::launch(
        &tmp.path().join("data"),
        Launch {
            env: &[("RUST_LOG", "hoist_coordinator=debug")],
            env_remove: &["HOIST_LOG"],
            ..Launch::default()
        },
    );
    operator_answers(&server).await;
    assert!(
        server.log().contains("transport limits"),
        "a debug line at start:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_over_max_bundle_bytes_gets_413_json_declared_or_streamed() {
    let tmp = Scratch::new();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &["--max-bundle-bytes", "10000"],
        Some(TOKEN),
    );
    let http = server.client();
    let resp = http
        .put(format!("{}/v1/bundles", server.url))
        .bearer_auth(TOKEN)
        .body(vec![0u8; 20_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let msg = resp.json::<ErrorBody>().await.unwrap().error;
    assert!(msg.contains("10000"), "{msg}");
    // No declared length: cut once the stream passes the cap.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(bytes_of(1000))));
    let resp = http
        .put(format!("{}/v1/bundles", server.url))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // The rest of that body is never read, so the connection is not reused.
    assert_eq!(resp.headers()["connection"], "close");
    let msg = resp.json::<ErrorBody>().await.unwrap().error;
    assert!(msg.contains("max_bundle_bytes"), "{msg}");
    // Within the cap it is stored.
    let resp = http
        .put(format!("{}/v1/bundles", server.url))
        .bearer_auth(TOKEN)
        .body(vec![0u8; 5_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The refused uploads left no partial file behind.
    let left = std::fs::read_dir(tmp.path().join("data/bundles/tmp"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_held_past_the_header_timeout_is_still_answered() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let start = std::time::Instant::now();
    // Held for 12 s, beyond the 10 s a request head may take: the timeouts must not cut it.
    assert!(host.poll(12).await.is_none());
    assert!(
        start.elapsed() >= Duration::from_secs(11),
        "the poll was held, not cut: {:?}",
        start.elapsed()
    );
    // The same client goes on polling.
    assert!(host.poll(0).await.is_none());
}
