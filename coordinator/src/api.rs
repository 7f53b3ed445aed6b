//! The coordinator's HTTP API (axum): routes, authentication, JSON in and out, long polls,
//! bundle upload and ranged download. The only module that knows about HTTP.
//!
//! Route table (every path under `/v1`):
//!
//! | method | path | auth | body → answer |
//! |---|---|---|---|
//! | POST | `/v1/hosts/register` | registration token | `RegisterRequest` → `RegisterResponse` |
//! | POST | `/v1/hosts/poll` | host | `PollRequest` → `PollResponse` (long poll, ≤ 30 s) |
//! | POST | `/v1/hosts/heartbeat` | host | `Heartbeat` → `HeartbeatAck` |
//! | POST | `/v1/commands/{id}/reports` | host | `Report` → `ReportAck` |
//! | GET | `/v1/bundles/{sha256}` | host or operator | bytes; `Range` → 206 / 416 |
//! | PUT | `/v1/bundles` | operator | bytes → `BundleInfo` |
//! | POST, GET | `/v1/applications` | operator | `CreateApplication` → `Application`; `ApplicationList` |
//! | POST, GET | `/v1/applications/{app}/groups` | operator | `CreateGroup` → `DeploymentGroup`; `GroupList` |
//! | GET | `/v1/applications/{app}/groups/{group}` | operator | `DeploymentGroup` |
//! | POST | `/v1/applications/{app}/revisions` | operator | `CreateRevision` → `RevisionInfo` |
//! | GET | `/v1/revisions/{id}` | operator | `RevisionInfo` |
//! | POST, GET | `/v1/registration-tokens` | operator | `CreateRegistrationToken` (or no body) → `RegistrationToken`; `RegistrationTokenList` |
//! | POST | `/v1/registration-tokens/{id}/revoke` | operator | → `RegistrationTokenInfo` |
//! | GET | `/v1/hosts` | operator | `HostList` |
//! | POST | `/v1/hosts/{id}/revoke` | operator | → `HostInfo` |
//! | POST | `/v1/hosts/{id_or_name}/tags` | operator | `SetHostTags` → `HostInfo` |
//! | POST, GET | `/v1/deployments` | operator | `CreateDeployment` → `Deployment` (counts, no per-host list); `DeploymentList` (`?application=`) |
//! | GET | `/v1/deployments/{id}` | operator | `Deployment` (`?since=SEQ&wait_secs=N` waits for a change) |
//! | POST | `/v1/deployments/{id}/stop` | operator | → `Deployment` |
//!
//! Errors are `ErrorBody` JSON: 400 bad body or value (naming the field), 401 missing or
//! wrong credentials, 404 unknown thing (also another host's command), 405 wrong method,
//! 408 a body that stalled, 409 conflict, 413 a body over the route's limit, 414 a URI over
//! [`MAX_URI_LEN`], 416 unsatisfiable range, 500 store failure. Any other error answer (an
//! axum rejection, say) is rewritten into the same JSON shape by [`json_errors`].
//!
//! Request processing, in order: the URI length; every credential, from the head alone
//! (extractors implementing `FromRequestParts` run before the body is touched, and handlers
//! take the body last); then the body, bounded by the route's [`BodyLimit`] (64 KiB unless a
//! route says otherwise, reports 256 KiB, bundle uploads streamed up to the configured cap)
//! and by [`BODY_TIMEOUT`]. A request refused before its body was read leaves the body
//! unread: the HTTP/1.1 connection is then closed rather than drained. Not here: rules (the
//! engine) or storage; connection-level limits (the `server` module).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use hoist_protocol::agent::{Heartbeat, PollRequest, PollResponse, RegisterRequest, Report};
use hoist_protocol::operator::{
    CreateApplication, CreateDeployment, CreateGroup, CreateRegistrationToken, CreateRevision,
    SetHostTags,
};
use hoist_protocol::{ErrorBody, HOST_ID_HEADER};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use crate::bundles::BundleError;
use crate::bundles::{parse_range, RangeRequest};
use crate::service::{error_chain, Service, ServiceError};
use crate::store::HostRow;

/// Longest a poll or a deployment watch is held open.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Body limit of a JSON request on a route that sets no [`BodyLimit`] of its own.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Body limit of an event report: a 4 KiB log tail may grow sixfold as JSON escapes, next
/// to a message and a script path.
pub const REPORT_BODY_LIMIT: usize = 256 * 1024;

/// Longest a JSON body may take to arrive, from the end of the request head; a body that
/// stalls is cut with 408.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest a bundle upload may go without sending a byte.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest request URI (path and query) answered; longer ones get 414.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// Default cap on one uploaded bundle (`--max-bundle-bytes`).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub operator_token: OperatorToken,
    /// Ends long polls and watches at shutdown.
    pub cancel: CancellationToken,
    /// Largest bundle `PUT /v1/bundles` stores.
    pub max_bundle_bytes: u64,
}

/// The operator token, kept as its SHA-256 digest: a presented token is hashed and the two
/// digests compared in constant time, so neither its contents nor its length show in the
/// time an answer takes.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    pub fn new(token: &str) -> OperatorToken {
        OperatorToken(Sha256::digest(token.as_bytes()).into())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A route's body limit in bytes, as a request extension (`.layer(Extension(BodyLimit(n)))`
/// on the route); [`ApiJson`] reads it, [`JSON_BODY_LIMIT`] when the route sets none.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/hosts/register", post(register))
        .route("/v1/hosts/poll", post(poll))
        .route("/v1/hosts/heartbeat", post(heartbeat))
        .route(
            "/v1/commands/{id}/reports",
            post(report).layer(Extension(BodyLimit(REPORT_BODY_LIMIT))),
        )
        .route("/v1/bundles/{sha256}", get(download_bundle))
        .route(
            "/v1/bundles",
            put(upload_bundle).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/applications",
            post(create_application).get(list_applications),
        )
        .route(
            "/v1/applications/{app}/groups",
            post(create_group).get(list_groups),
        )
        .route("/v1/applications/{app}/groups/{group}", get(show_group))
        .route("/v1/applications/{app}/revisions", post(create_revision))
        .route("/v1/revisions/{id}", get(show_revision))
        .route(
            "/v1/registration-tokens",
            post(create_token).get(list_tokens),
        )
        .route("/v1/registration-tokens/{id}/revoke", post(revoke_token))
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{id}/revoke", post(revoke_host))
        .route("/v1/hosts/{id}/tags", post(set_host_tags))
        .route(
            "/v1/deployments",
            post(create_deployment).get(list_deployments),
        )
        .route("/v1/deployments/{id}", get(show_deployment))
        .route("/v1/deployments/{id}/stop", post(stop_deployment))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn(limit_uri))
        .with_state(state)
}

/// 414 for a URI longer than [`MAX_URI_LEN`], before routing or any extractor runs.
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI_LEN {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request URI has {len} bytes; at most {MAX_URI_LEN} are accepted"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Rewrites an error answer that is not JSON (axum's own rejections, such as a path that
/// is not valid UTF-8 once percent-decoded) into an `ErrorBody` carrying its text.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut e = ApiError::new(status, message);
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            e.headers.push((k.clone(), v.clone()));
        }
    }
    e.into_response()
}

// ---- errors ----

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    fn too_large(what: impl std::fmt::Display, limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is over this route's limit of {limit} bytes"),
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let status = match &e {
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Internal(why) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {why}"),
                );
            }
            ServiceError::Store(err) => {
                tracing::error!(error = %error_chain(err), "store failure");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {}", error_chain(err)),
                );
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        // A request refused before or while its body was read leaves the rest unread, and
        // the server closes the connection after answering: say so, so that an HTTP/1.1
        // client does not send its next request on it. (HTTP/2 drops the header.)
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::URI_TOO_LONG
        ) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking service call off the async runtime.
async fn blocking<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    F: FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
    T: Send + 'static,
{
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || f(&service))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

// ---- extractors ----

/// A JSON body whose decoding errors answer 400 with an `ErrorBody` naming the problem
/// (`missing field `name``), unlike axum's plain-text rejection. Unknown fields are ignored.
/// The body is bounded by the route's [`BodyLimit`] (413: a declared `Content-Length` over
/// it is refused before a byte is read) and by [`BODY_TIMEOUT`] (408).
pub struct ApiJson<T>(pub T);

/// The `Content-Length` a request declares, when it declares a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(JSON_BODY_LIMIT, |l| l.0);
        if let Some(len) = declared_length(req.headers()).filter(|&n| n > limit as u64) {
            return Err(ApiError::too_large(
                format_args!("the request body ({len} bytes)"),
                limit as u64,
            ));
        }
        let body = http_body_util::Limited::new(req.into_body(), limit);
        let bytes: Bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::too_large("the request body", limit as u64));
            }
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                ))
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// An operator request: `Authorization: Bearer <operator token>`.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match bearer(&parts.headers) {
            Some(t) if state.operator_token.matches(t) => Ok(Operator),
            Some(_) => Err(ApiError::unauthorized("wrong operator token")),
            None => Err(ApiError::unauthorized(
                "missing operator token (Authorization: Bearer ...)",
            )),
        }
    }
}

/// A host request: the host id header plus `Authorization: Bearer <host secret>`.
pub struct HostAuth(pub HostRow);

async fn host_from(parts: &Parts, state: &AppState) -> ApiResult<HostRow> {
    let id = parts
        .headers
        .get(HOST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized(format!("missing {HOST_ID_HEADER} header")))?;
    let secret = bearer(&parts.headers)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("missing host secret (Authorization: Bearer ...)"))?;
    if let Some(known) = state.service.authenticate_known_host(&id, &secret) {
        return known.map_err(ApiError::from);
    }
    blocking(state, move |e| e.authenticate_host(&id, &secret)).await
}

impl FromRequestParts<AppState> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        host_from(parts, state).await.map(HostAuth)
    }
}

/// A host or an operator (bundle downloads).
pub struct HostOrOperator;

impl FromRequestParts<AppState> for HostOrOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if parts.headers.contains_key(HOST_ID_HEADER) {
            host_from(parts, state).await.map(|_| HostOrOperator)
        } else {
            Operator::from_request_parts(parts, state)
                .await
                .map(|_| HostOrOperator)
        }
    }
}

/// A registration: `Authorization: Bearer <registration token>`, checked before the body
/// is read (the service checks it again, with the body, when it registers the host).
pub struct RegistrationAuth(pub String);

impl FromRequestParts<AppState> for RegistrationAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer(&parts.headers).map(str::to_owned).ok_or_else(|| {
            ApiError::unauthorized("missing registration token (Authorization: Bearer ...)")
        })?;
        let checked = token.clone();
        blocking(state, move |e| e.check_registration_token(&checked)).await?;
        Ok(RegistrationAuth(token))
    }
}

// ---- agent routes ----

async fn register(
    State(state): State<AppState>,
    RegistrationAuth(token): RegistrationAuth,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let resp = blocking(&state, move |e| e.register(&token, req)).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

async fn poll(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    ApiJson(req): ApiJson<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    let config = state.service.config();
    let wait = Duration::from_secs(req.wait_secs.unwrap_or(MAX_WAIT.as_secs()))
        .min(MAX_WAIT)
        .min(config.poll_wait_cap());
    let heartbeat_ms = Some(config.heartbeat_interval().as_millis() as u64);
    let host_id = host.id;
    state.service.host_polled(&host_id, &req);
    let waker = state.service.host_waker(&host_id);
    let deadline = tokio::time::Instant::now() + wait;
    // A command left by an earlier wake-up may since have stopped: the store decides.
    let mut woken = false;
    loop {
        // Register for a wake-up before looking, so a command started between the look
        // and the wait is not missed.
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let handed = waker.take().filter(|_| woken);
        let command = match handed {
            Some(command) => Some(command),
            None => {
                let id = host_id.clone();
                blocking(&state, move |e| e.next_command(&id)).await?
            }
        };
        if let Some(command) = command {
            state.service.command_delivered(&command.command_id);
            return Ok(Json(PollResponse {
                command: Some(command),
                heartbeat_ms,
            }));
        }
        tokio::select! {
            _ = &mut notified => woken = true,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = state.cancel.cancelled() => break,
        }
    }
    Ok(Json(PollResponse {
        command: None,
        heartbeat_ms,
    }))
}

async fn heartbeat(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    ApiJson(req): ApiJson<Heartbeat>,
) -> ApiResult<impl IntoResponse> {
    let ack = blocking(&state, move |e| e.heartbeat(host, &req)).await?;
    Ok(Json(ack))
}

async fn report(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    Path(id): Path<String>,
    ApiJson(report): ApiJson<Report>,
) -> ApiResult<impl IntoResponse> {
    let (answer, start_writer) = state.service.queue_report(&host, &id, report);
    if start_writer {
        let service = state.service.clone();
        tokio::task::spawn_blocking(move || service.write_reports());
    }
    let ack = answer.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the report was dropped before it was written; send it again",
        )
    })??;
    Ok(Json(ack))
}

// ---- bundles ----

/// Why an upload was cut short while it streamed.
#[derive(Debug, thiserror::Error)]
enum UploadCut {
    #[error("the bundle is over this coordinator's limit of {0} bytes (max_bundle_bytes)")]
    TooLarge(u64),
    #[error("the upload sent nothing for {} s", UPLOAD_IDLE_TIMEOUT.as_secs())]
    Stalled,
    #[error("reading the upload")]
    Body(#[source] axum::Error),
}

async fn upload_bundle(
    State(state): State<AppState>,
    _op: Operator,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let cap = state.max_bundle_bytes;
    if let Some(len) = declared_length(&headers).filter(|&n| n > cap) {
        return Err(ApiError::too_large(
            format_args!("the bundle ({len} bytes)"),
            cap,
        ));
    }
    // Each chunk must come within the idle timeout and the running total stay under the
    // cap; the first failure ends the stream, which the store turns into an error.
    let chunks = futures_util::stream::unfold(
        (body.into_data_stream(), 0u64, false),
        move |(mut stream, seen, done)| async move {
            if done {
                return None;
            }
            let item = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.next()).await {
                Err(_) => Err(UploadCut::Stalled),
                Ok(None) => return None,
                Ok(Some(Err(e))) => Err(UploadCut::Body(e)),
                Ok(Some(Ok(chunk))) if seen + chunk.len() as u64 > cap => {
                    Err(UploadCut::TooLarge(cap))
                }
                Ok(Some(Ok(chunk))) => Ok(chunk),
            };
            let seen = seen + item.as_ref().map_or(0, |c| c.len() as u64);
            let done = item.is_err();
            Some((item, (stream, seen, done)))
        },
    );
    let (sha256, size) = state
        .service
        .bundles()
        .put(Box::pin(chunks))
        .await
        .map_err(|e| {
            let cut = match &e {
                BundleError::Body(b) => b.downcast_ref::<UploadCut>(),
                BundleError::Io { .. } => None,
            };
            match cut {
                Some(UploadCut::TooLarge(_)) => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error_chain(&e))
                }
                Some(UploadCut::Stalled) => {
                    ApiError::new(StatusCode::REQUEST_TIMEOUT, error_chain(&e))
                }
                Some(UploadCut::Body(_)) => ApiError::new(StatusCode::BAD_REQUEST, error_chain(&e)),
                None => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("storing the bundle: {}", error_chain(&e)),
                ),
            }
        })?;
    tracing::info!(%sha256, size, "bundle stored");
    Ok((
        StatusCode::CREATED,
        Json(hoist_protocol::operator::BundleInfo { sha256, size }),
    ))
}

async fn download_bundle(
    State(state): State<AppState>,
    _auth: HostOrOperator,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no bundle {sha256}"));
    let path = state
        .service
        .bundles()
        .path_of(&sha256)
        .ok_or_else(not_found)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let size = file
        .metadata()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading bundle: {e}"),
            )
        })?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len, content_range) = match parse_range(range, size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size, None),
        RangeRequest::Partial(r) => (
            StatusCode::PARTIAL_CONTENT,
            r.start,
            r.end - r.start + 1,
            Some(format!("bytes {}-{}/{size}", r.start, r.end)),
        ),
        RangeRequest::Unsatisfiable => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!(
                    "range {} is outside the bundle's {size} bytes",
                    range.unwrap_or("")
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                e.headers.push((header::CONTENT_RANGE, v));
            }
            return Err(e);
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading bundle: {e}"),
            )
        })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        h.insert(header::ETAG, etag);
    }
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, cr);
    }
    Ok(resp)
}

// ---- operator routes ----

async fn create_application(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateApplication>,
) -> ApiResult<impl IntoResponse> {
    let app = blocking(&state, move |e| e.create_application(req)).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

async fn list_applications(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.applications()).await?))
}

async fn create_group(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> ApiResult<impl IntoResponse> {
    let g = blocking(&state, move |e| e.create_group(&app, req)).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

async fn list_groups(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.groups(&app)).await?))
}

async fn show_group(
    State(state): State<AppState>,
    _op: Operator,
    Path((app, group)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.group(&app, &group)).await?,
    ))
}

async fn create_revision(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<CreateRevision>,
) -> ApiResult<impl IntoResponse> {
    let r = blocking(&state, move |e| e.create_revision(&app, req.revision)).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

async fn show_revision(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.revision(&id)).await?))
}

async fn create_token(
    State(state): State<AppState>,
    _op: Operator,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    // Older clients post no body: a token with no limits, as before.
    let req: CreateRegistrationToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRegistrationToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })?
    };
    let t = blocking(&state, move |e| e.create_registration_token(req)).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

async fn list_tokens(State(state): State<AppState>, _op: Operator) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.registration_tokens()).await?))
}

async fn revoke_token(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.revoke_registration_token(&id)).await?,
    ))
}

async fn set_host_tags(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetHostTags>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.set_host_tags(&id, req)).await?,
    ))
}

async fn list_hosts(State(state): State<AppState>, _op: Operator) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.hosts()).await?))
}

async fn revoke_host(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.revoke_host(&id)).await?))
}

async fn create_deployment(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateDeployment>,
) -> ApiResult<impl IntoResponse> {
    let d = blocking(&state, move |e| e.create_deployment(req)).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

#[derive(Deserialize)]
struct ListQuery {
    application: Option<String>,
}

async fn list_deployments(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.deployments(q.application.as_deref())).await?,
    ))
}

#[derive(Deserialize)]
struct WatchQuery {
    since: Option<u64>,
    wait_secs: Option<u64>,
}

async fn show_deployment(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
    Query(q): Query<WatchQuery>,
) -> ApiResult<impl IntoResponse> {
    if let Some(since) = q.since {
        let mut rx = state.service.subscribe();
        if *rx.borrow_and_update() == since {
            let wait = Duration::from_secs(q.wait_secs.unwrap_or(MAX_WAIT.as_secs())).min(MAX_WAIT);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = state.cancel.cancelled() => {}
            }
        }
    }
    Ok(Json(blocking(&state, move |e| e.deployment(&id)).await?))
}

async fn stop_deployment(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.stop_deployment(&id)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_token_matches_only_the_same_token() {
        let t = OperatorToken::new("hot_abc");
        assert!(t.matches("hot_abc"));
        assert!(!t.matches("hot_ab"));
        assert!(!t.matches("hot_abcd"));
        assert!(!t.matches("hot_abC"));
        assert!(!t.matches(""));
    }
}
