//! A fake coordinator: a small axum server on 127.0.0.1 port 0 that speaks the agent's side of
//! the `/v1` API (register, poll, heartbeat, reports, bundle downloads), records every request
//! it is sent with the moment it arrived, and answers what the test scripts — a command, a 503
//! with `Retry-After`, a 401, an "aborted" acknowledgement — or else what a healthy coordinator
//! with no work would answer.
//!
//! It is a fixture for the agent's daemon paths, not a model of the coordinator: it keeps no
//! deployments, checks no credentials (it records them for the test to check) and validates no
//! report. Its answers are the wire protocol's JSON as the real coordinator writes it.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which part of the agent API a request went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/hosts/register`
    Register,
    /// `POST /v1/hosts/poll`
    Poll,
    /// `POST /v1/hosts/heartbeat`
    Heartbeat,
    /// `POST /v1/commands/{id}/reports`; the id as sent (percent-encoded).
    Report { command_id: String },
    /// `GET /v1/bundles/{sha256}`
    Bundle { sha256: String },
    /// Anything else (answered 404).
    Other,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/v1/hosts/register" => Route::Register,
            "/v1/hosts/poll" => Route::Poll,
            "/v1/hosts/heartbeat" => Route::Heartbeat,
            _ => {
                if let Some(id) = path
                    .strip_prefix("/v1/commands/")
                    .and_then(|rest| rest.strip_suffix("/reports"))
                {
                    Route::Report {
                        command_id: id.to_owned(),
                    }
                } else if let Some(sha) = path.strip_prefix("/v1/bundles/") {
                    Route::Bundle {
                        sha256: sha.to_owned(),
                    }
                } else {
                    Route::Other
                }
            }
        }
    }

    /// The same kind of route, whatever its path parameters (for counting per kind).
    fn kind(&self) -> &'static str {
        match self {
            Route::Register => "register",
            Route::Poll => "poll",
            Route::Heartbeat => "heartbeat",
            Route::Report { .. } => "report",
            Route::Bundle { .. } => "bundle",
            Route::Other => "other",
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived (its body read).
    pub at: Instant,
    pub method: String,
    /// The path as sent, percent-encoding kept.
    pub path: String,
    pub route: Route,
    /// Header names lowercase.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// How many requests of this route's kind came before it (0 for the first poll, ...).
    pub n: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn is_poll(&self) -> bool {
        self.route == Route::Poll
    }

    pub fn is_report(&self) -> bool {
        matches!(self.route, Route::Report { .. })
    }
}

/// An answer the test scripts for one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (a long poll that ends with no work, a slow server).
    pub delay: Duration,
}

impl Answer {
    /// A 200 with this JSON body.
    pub fn json(body: serde_json::Value) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with the coordinator's error body, `{"error": "..."}`.
    pub fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            ..Answer::json(serde_json::json!({ "error": message }))
        }
    }

    /// A poll answered with `command` (the wire `Command` as JSON), heartbeats every
    /// `heartbeat_ms`.
    pub fn command(command: serde_json::Value, heartbeat_ms: u64) -> Answer {
        Answer::json(serde_json::json!({ "command": command, "heartbeat_ms": heartbeat_ms }))
    }

    /// A poll answered with no work.
    pub fn no_command() -> Answer {
        Answer::json(serde_json::json!({ "command": null }))
    }

    /// A report recorded (or a heartbeat taken) with the deployment stopped by an operator.
    pub fn aborted() -> Answer {
        Answer::json(serde_json::json!({ "recorded": true, "aborted": true }))
    }

    /// 503, with `Retry-After: retry_after` when given (a proxy or a restarting server).
    pub fn unavailable(retry_after: Option<&str>) -> Answer {
        let mut answer = Answer::error(503, "service unavailable");
        if let Some(value) = retry_after {
            answer.headers.push(("retry-after".into(), value.into()));
        }
        answer
    }

    /// 401, as for a revoked host or a wrong secret.
    pub fn unauthorized() -> Answer {
        Answer::error(401, "unknown host or wrong secret")
    }

    /// This answer, sent after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// The `coordinator` revision of `bundle` (`{"kind":"coordinator","sha256":...,"size":...}`):
/// what a poll answer names once [`FakeCoordinator::add_bundle`] serves it.
pub fn coordinator_revision(bundle: &[u8]) -> serde_json::Value {
    let sha256 = crate::servers::sha256_hex(bundle);
    serde_json::json!({ "kind": "coordinator", "sha256": sha256, "size": bundle.len() })
}

/// What the fake answers when the script says nothing, and how long a poll with no work is
/// held (the real coordinator holds it for `wait_secs`; a short hold keeps the loop slow
/// enough to read and fast enough for tests).
pub const POLL_HOLD: Duration = Duration::from_millis(100);

type Script = dyn Fn(&Request) -> Option<Answer> + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Request>>,
    bundles: Mutex<HashMap<String, Vec<u8>>>,
    script: Box<Script>,
}

/// A running fake coordinator; stops when dropped.
pub struct FakeCoordinator {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeCoordinator {
    /// Starts the fake on the current tokio runtime. `script` sees every request (after it
    /// is recorded) and returns the answer, or `None` for the default: registration as host
    /// `h-1` with secret `s-1`, a poll held [`POLL_HOLD`] then answered with no work,
    /// heartbeats and reports acknowledged (not aborted), bundles added with
    /// [`FakeCoordinator::add_bundle`], 404 for anything else.
    pub async fn start(
        script: impl Fn(&Request) -> Option<Answer> + Send + Sync + 'static,
    ) -> FakeCoordinator {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            bundles: Mutex::new(HashMap::new()),
            script: Box::new(script),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).into_future().await;
        });
        FakeCoordinator {
            url: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// Serves `bundle` at `/v1/bundles/{sha256}`, as [`coordinator_revision`] names it.
    pub fn add_bundle(&self, bundle: Vec<u8>) {
        let sha256 = crate::servers::sha256_hex(&bundle);
        lock(&self.shared.bundles).insert(sha256, bundle);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// The reports received so far, as JSON, in arrival order.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.is_report())
            .map(Request::json)
            .collect()
    }

    /// Waits (checking every 10 ms) until `done` holds for the requests received so far;
    /// fails the test naming `what`, and listing the requests, after `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if tokio::time::Instant::now() >= deadline {
                let seen: Vec<String> = requests
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {}",
                            r.method,
                            r.path,
                            String::from_utf8_lossy(&r.body)
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}; requests:\n{}",
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl crate::fleet::Endpoint for FakeCoordinator {
    fn url(&self) -> &str {
        &self.url
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(State(shared): State<Arc<Shared>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    // Agent bodies are small (a report is capped at 256 KiB by the real server).
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b.to_vec(),
        Err(_) => return Answer::error(413, "body too large").into_response(),
    };
    let path = parts.uri.path().to_owned();
    let route = Route::of(&path);
    let request = {
        let mut requests = lock(&shared.requests);
        let n = requests
            .iter()
            .filter(|r| r.route.kind() == route.kind())
            .count();
        let request = Request {
            at: Instant::now(),
            method: parts.method.to_string(),
            path,
            route,
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            n,
        };
        requests.push(request.clone());
        request
    };
    let answer = (shared.script)(&request).unwrap_or_else(|| default_answer(&shared, &request));
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    answer.into_response()
}

fn default_answer(shared: &Shared, request: &Request) -> Answer {
    match &request.route {
        Route::Register => Answer {
            status: 201,
            ..Answer::json(serde_json::json!({ "host_id": "h-1", "host_secret": "s-1" }))
        },
        Route::Poll => Answer::no_command().after(POLL_HOLD),
        Route::Heartbeat => Answer::json(serde_json::json!({ "aborted": false })),
        Route::Report { .. } => {
            Answer::json(serde_json::json!({ "recorded": true, "aborted": false }))
        }
        Route::Bundle { sha256 } => match lock(&shared.bundles).get(sha256) {
            Some(bundle) => Answer {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: bundle.clone(),
                delay: Duration::ZERO,
            },
            None => Answer::error(404, "no such bundle"),
        },
        Route::Other => Answer::error(404, "no such route"),
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, headers, Body::from(self.body)).into_response()
    }
}
