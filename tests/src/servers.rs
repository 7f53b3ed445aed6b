//! Real servers on 127.0.0.1 for tests that fetch bundles: s3s-fs in process (SigV4 header
//! auth and presigned URLs checked for real), moto_server as a child process (bucket
//! versioning, ETags), bare Git repositories served by `git daemon` or by `git http-backend`
//! behind a small CGI server, and (re-exported from `scripted_http`) a small HTTP/1.1 server
//! whose every answer a test scripts (drops, stalls, missing lengths, Range).
//!
//! The async starters spawn their accept loops on the current tokio runtime: a synchronous
//! test keeps a multi-threaded runtime alive and calls them through `block_on`. These are
//! fixtures, not production servers: no TLS, no keep-alive, bodies by Content-Length only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::scripted_http::{read_request, record};
pub use crate::scripted_http::{serve, HttpServer, Reply, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// Child processes and ports.

/// A server process in its own process group, killed with the whole group when dropped
/// (`git daemon` runs `git-daemon` as a child).
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> ChildGuard {
        use std::os::unix::process::CommandExt;
        ChildGuard(
            command
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn a test server"),
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

/// A port nothing listens on right now (for servers that cannot be told to use port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits up to 30 s until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// s3s-fs: an S3-compatible server in process that checks SigV4 for real.

/// The only access key s3s-fs accepts.
pub const S3_ACCESS_KEY: &str = "AKIAHOISTTEST";
/// The secret that goes with [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "hoist-test-secret-key";
/// The region the test servers' URLs are signed for.
pub const S3_REGION: &str = "us-east-1";

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

/// Serves `root` as S3 (a bucket is a directory below it) on 127.0.0.1 port 0, accepting only
/// [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`]. With `virtual_host`, `BUCKET.s3.test:PORT` host names
/// address buckets; path-style requests work either way.
pub async fn start_s3s(root: &Path, virtual_host: bool) -> SocketAddr {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the root directory");
    serve_s3(fs, virtual_host).await
}

/// Serves `s3` on 127.0.0.1 port 0 with SigV4 checked as for [`start_s3s`].
pub async fn serve_s3(s3: impl s3s::S3, virtual_host: bool) -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut builder = s3s::service::S3ServiceBuilder::new(s3);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    ));
    if virtual_host {
        builder.set_host(TestDomain);
    }
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
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

/// A presigned (SigV4 query) GET URL for `bucket/key` on a path-style endpoint, signed with
/// [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`] and valid for `ttl`.
pub fn presigned_get(endpoint: &str, bucket: &str, key: &str, ttl: Duration) -> String {
    use rusty_s3::S3Action;
    let bucket = rusty_s3::Bucket::new(
        url::Url::parse(endpoint).expect("endpoint URL"),
        rusty_s3::UrlStyle::Path,
        bucket.to_owned(),
        S3_REGION.to_owned(),
    )
    .expect("bucket");
    let creds = rusty_s3::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY);
    bucket.get_object(Some(&creds), key).sign(ttl).to_string()
}

// ---------------------------------------------------------------------------------------------
// moto_server: versioning and ETags (it checks no signatures).

/// The moto_server binary from `HOIST_TEST_MOTO` (the binary, or a venv holding
/// `bin/moto_server`); fails the calling test, naming the variable, when it is unset or
/// names nothing (see `need_root` in the crate root for the convention).
#[track_caller]
pub fn need_moto() -> PathBuf {
    let Some(path) = std::env::var_os("HOIST_TEST_MOTO").map(PathBuf::from) else {
        panic!("this test needs moto_server: set HOIST_TEST_MOTO to it or its venv, as CI does");
    };
    let binary = if path.is_dir() {
        path.join("bin/moto_server")
    } else {
        path
    };
    assert!(
        binary.is_file(),
        "this test needs moto_server: HOIST_TEST_MOTO names {}, which does not exist",
        binary.display()
    );
    binary
}

/// A running moto_server, killed on drop.
pub struct Moto {
    _child: ChildGuard,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    http: reqwest::Client,
}

impl Moto {
    pub async fn start(binary: &Path) -> Moto {
        let port = free_port();
        let child = ChildGuard::spawn(Command::new(binary).args([
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]));
        wait_for_port(port).await;
        // moto treats requests without Authorization as anonymous (and refuses to overwrite a
        // private object); it checks no signature, so any SigV4-shaped header will do.
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(
            "authorization",
            reqwest::header::HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=0",
            ),
        );
        let http = reqwest::Client::builder()
            .default_headers(auth)
            .build()
            .expect("HTTP client");
        Moto {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
            http,
        }
    }

    /// Creates `bucket` with versioning enabled.
    pub async fn versioned_bucket(&self, bucket: &str) {
        let base = &self.endpoint;
        ok(self.http.put(format!("{base}/{bucket}")).send().await);
        ok(self
            .http
            .put(format!("{base}/{bucket}?versioning"))
            .body(
                "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Status>Enabled</Status></VersioningConfiguration>",
            )
            .send()
            .await);
    }

    /// Stores `body` as a new version of `bucket/key`; returns its (version id, ETag as sent).
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> (String, String) {
        let r = ok(self
            .http
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(body)
            .send()
            .await);
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("moto sent no {n}"))
                .to_owned()
        };
        (header("x-amz-version-id"), header("etag"))
    }
}

fn ok(r: reqwest::Result<reqwest::Response>) -> reqwest::Response {
    let r = r.expect("request to moto");
    assert!(r.status().is_success(), "{r:?}");
    r
}

// ---------------------------------------------------------------------------------------------
// Git repositories and servers.

/// Runs git for a test's own setup with a clean configuration; returns trimmed stdout.
pub fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
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
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes the bare repository `ROOT/NAME` (NAME ends in `.git`) with one commit per element of
/// `commits`: each writes its (path, contents) files over the previous tree, `*.sh` executable.
/// The work tree stays beside it as `ROOT/NAME.work`. Returns the commit ids in order.
pub fn bare_repo(root: &Path, name: &str, commits: &[&[(&str, &str)]]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let work_name = format!("{name}.work");
    let work = root.join(&work_name);
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    let mut ids = Vec::new();
    for (i, files) in commits.iter().enumerate() {
        for (path, text) in files.iter() {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
            let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", &format!("commit {}", i + 1)]);
        ids.push(git(&work, &["rev-parse", "HEAD"]));
    }
    git(root, &["clone", "-q", "--bare", &work_name, name]);
    ids
}

/// `git daemon` exporting every repository below a root over `git://127.0.0.1:PORT/`.
pub struct GitDaemon {
    _child: ChildGuard,
    pub port: u16,
}

impl GitDaemon {
    pub async fn start(root: &Path) -> GitDaemon {
        let port = free_port();
        let child = ChildGuard::spawn(
            Command::new("git")
                .arg("daemon")
                .arg("--reuseaddr")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", root.display()))
                .arg("--export-all")
                .arg(root),
        );
        wait_for_port(port).await;
        GitDaemon {
            _child: child,
            port,
        }
    }

    /// The `git://` URL of `ROOT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

/// The Basic-auth user the smart-HTTP Git server accepts.
pub const GIT_HTTP_USER: &str = "user";
/// The password that goes with [`GIT_HTTP_USER`].
pub const GIT_HTTP_PASSWORD: &str = "pass";

/// Smart HTTP: `git http-backend` as CGI for the repositories below `root`, behind Basic auth
/// [`GIT_HTTP_USER`]:[`GIT_HTTP_PASSWORD`]. Unless `forward_protocol`, the client's
/// `Git-Protocol` header is dropped, so the backend speaks protocol v0.
pub async fn start_git_http(root: &Path, forward_protocol: bool) -> HttpServer {
    let root = root.to_path_buf();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
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
                record(&seen, &req);
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
        base64::engine::general_purpose::STANDARD
            .encode(format!("{GIT_HTTP_USER}:{GIT_HTTP_PASSWORD}"))
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
        .env("REMOTE_USER", GIT_HTTP_USER)
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
    let mut child = command.spawn().expect("run git http-backend");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(&req.body)
        .await
        .expect("write the request to git http-backend");
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .expect("wait for git http-backend");
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
