//! The coordinator's HTTP API (axum): routes, authentication, JSON in and out, long polls,
//! bundle upload and ranged download. The only module that knows about HTTP.
//!
//! Route table (every path under `/v1`, but `GET /metrics`: the Prometheus text format,
//! with any operator token, or with none under `--metrics-public`; and the dashboard's
//! HTML pages and forms at the root, signed in with a session cookie, listed in
//! [`dashboard`]):
//!
//! | method | path | auth | body → answer |
//! |---|---|---|---|
//! | POST | `/v1/hosts/register` | registration token | `RegisterRequest` → `RegisterResponse` |
//! | POST | `/v1/hosts/poll` | host | `PollRequest` → `PollResponse` (long poll, ≤ 30 s; 503 when the server stops) |
//! | POST | `/v1/hosts/heartbeat` | host | `Heartbeat` → `HeartbeatAck` |
//! | POST | `/v1/hosts/rollbacks` | host | `LocalRollback` → `LocalRollbackAck` (held out of sync, the rollback as reason) |
//! | POST | `/v1/commands/{id}/reports` | host | `Report` → `ReportAck` |
//! | GET | `/v1/bundles/{sha256}` | host or operator | bytes; `Range` → 206 / 416; 502 when an S3 bundle store fails |
//! | PUT | `/v1/bundles` | operator | bytes → `BundleInfo`; 502 when an S3 bundle store fails |
//! | POST, GET | `/v1/applications` | operator | `CreateApplication` → `Application`; `ApplicationList` |
//! | POST, GET | `/v1/applications/{app}/groups` | operator | `CreateGroup` → `DeploymentGroup`; `GroupList` |
//! | GET, PATCH | `/v1/applications/{app}/groups/{group}` | operator | `DeploymentGroup`; `UpdateGroup` → `DeploymentGroup` |
//! | POST | `/v1/applications/{app}/revisions` | operator | `CreateRevision` → `RevisionInfo` |
//! | GET | `/v1/revisions/{id}` | operator | `RevisionInfo` |
//! | POST, GET | `/v1/registration-tokens` | operator | `CreateRegistrationToken` (or no body) → `RegistrationToken`; `RegistrationTokenList` |
//! | POST | `/v1/registration-tokens/{id}/revoke` | operator | → `RegistrationTokenInfo` |
//! | POST, GET | `/v1/operator-tokens` | operator | `CreateOperatorToken` → `OperatorToken`; `OperatorTokenList` |
//! | POST | `/v1/operator-tokens/{id}/revoke` | operator | → `OperatorTokenInfo` |
//! | GET | `/v1/hosts` | operator | `HostList` |
//! | POST | `/v1/hosts/{id}/revoke` | operator | → `HostInfo` |
//! | POST | `/v1/hosts/{id_or_name}/tags` | operator | `SetHostTags` → `HostInfo` |
//! | POST | `/v1/hosts/{id_or_name}/retry` | operator | → `HostInfo` (one more catch-up try) |
//! | POST, GET | `/v1/deployments` | operator | `CreateDeployment` → `Deployment` (counts, no per-host list); `DeploymentList` (`?application=`) |
//! | GET | `/v1/deployments/{id}` | operator | `Deployment` (`?since=SEQ&wait_secs=N` waits for a change) |
//! | POST | `/v1/deployments/{id}/stop` | operator | → `Deployment` |
//! | POST, GET | `/v1/pipelines` | operator | `ApplyPipeline` → `Pipeline` (create or update by name); `PipelineList` (`?application=`) |
//! | GET, DELETE | `/v1/pipelines/{name}` | operator | `Pipeline` (with recent releases); → `Pipeline` |
//! | POST | `/v1/pipelines/{name}/releases` | operator | `CreateRelease` → `Release` |
//! | GET | `/v1/releases` | operator | `ReleaseList` (`?pipeline=`) |
//! | GET | `/v1/releases/{id}` | operator | `Release` (`?since=SEQ&wait_secs=N` waits for a change) |
//! | POST | `/v1/releases/{id}/approve`, `/v1/releases/{id}/reject` | operator | `Decision` → `Release` |
//! | POST, GET | `/v1/webhooks` | operator (admin) | `CreateWebhook` → `Webhook`; `WebhookList` (with recent deliveries) |
//! | DELETE | `/v1/webhooks/{id}` | operator (admin) | → `WebhookInfo` |
//! | POST | `/v1/webhooks/{id}/test` | operator (admin) | → `WebhookTest` (a `test` event sent now) |
//!
//! "operator" is any operator token whose role allows the route ([`roles::needed`]: reads
//! need `viewer`, deploying `deployer`, every other change `admin`; the configured token is
//! `admin`).
//!
//! Errors are `ErrorBody` JSON: 400 bad body or value (naming the field), 401 missing or
//! wrong credentials, 403 a role that does not allow the route, 404 unknown thing (also another host's command), 405 wrong method,
//! 408 a body that stalled, 409 conflict, 413 a body over the route's limit, 414 a URI over
//! [`MAX_URI_LEN`], 416 unsatisfiable range, 500 store failure. Any other error answer (an
//! axum rejection, say) is rewritten into the same JSON shape by [`json_errors`].
//!
//! Request processing, in order: the URI length; every credential, from the head alone
//! (extractors implementing `FromRequestParts` run before the body is touched, and handlers
//! take the body last); then the body, bounded by the route's [`BodyLimit`] (64 KiB unless a
//! route says otherwise, reports 256 KiB, bundle uploads streamed up to the configured cap)
//! and by [`BODY_TIMEOUT`]. A request refused before its body was read leaves the body
//! unread: the HTTP/1.1 connection is then closed rather than drained.
//!
//! Files: this one (the route table, limits, shared helpers), [`around`] (the one layer
//! around every route), [`error`] (the error answer), [`extract`] (credentials and bounded JSON bodies), [`agent`] (the hosts'
//! routes), [`bundles`] (upload, ranged download and the `Range` header), [`operator`]
//! (the operators' routes), [`metrics`] (the scrape and the request counter), [`pipelines`]
//! (pipelines and releases), [`webhooks`] (webhooks), [`dashboard`] (the web dashboard), [`roles`] (the role each
//! route needs, and operator tokens' routes). This module is the only one on the server side that knows
//! HTTP requests and answers; `server` owns the connections beneath it. Not here: rules
//! (the `service` module), storage, connection-level limits (the `server` module).

mod agent;
mod around;
mod bundles;
pub mod dashboard;
mod error;
mod extract;
mod metrics;
mod operator;
mod pipelines;
pub(crate) mod roles;
mod webhooks;

pub use error::ApiError;
pub use extract::{ApiJson, HostAuth, HostOrOperator, Operator, OperatorToken, RegistrationAuth};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};
use pipelines::{
    apply_pipeline, approve_release, create_release, delete_pipeline, list_pipelines,
    list_releases, reject_release, show_pipeline, show_release,
};
use tokio_util::sync::CancellationToken;

use crate::service::{Service, ServiceError};

use agent::{heartbeat, local_rollback, poll, register, report};
use bundles::{download_bundle, upload_bundle};
use operator::{
    create_application, create_deployment, create_group, create_revision, create_token,
    list_applications, list_deployments, list_groups, list_hosts, list_tokens, retry_host,
    revoke_host, revoke_token, set_host_tags, show_deployment, show_group, show_revision,
    stop_deployment, update_group,
};

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

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub operator_token: OperatorToken,
    /// Ends long polls and watches at shutdown.
    pub cancel: CancellationToken,
    /// Largest bundle `PUT /v1/bundles` stores.
    pub max_bundle_bytes: u64,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
    /// Held polls answered 503 because the server is stopping (logged at the end).
    pub handed_back: Arc<std::sync::atomic::AtomicU64>,
    /// The server speaks HTTPS (dashboard cookies are then `Secure`).
    pub tls: bool,
    /// The dashboard's base URL in webhook links.
    pub public_url: String,
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
        .route("/v1/hosts/rollbacks", post(local_rollback))
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
        .route(
            "/v1/applications/{app}/groups/{group}",
            get(show_group).patch(update_group),
        )
        .route("/v1/applications/{app}/revisions", post(create_revision))
        .route("/v1/revisions/{id}", get(show_revision))
        .route(
            "/v1/registration-tokens",
            post(create_token).get(list_tokens),
        )
        .route("/v1/registration-tokens/{id}/revoke", post(revoke_token))
        .route(
            "/v1/operator-tokens",
            post(roles::create_operator_token).get(roles::list_operator_tokens),
        )
        .route(
            "/v1/operator-tokens/{id}/revoke",
            post(roles::revoke_operator_token),
        )
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{id}/revoke", post(revoke_host))
        .route("/v1/hosts/{id}/tags", post(set_host_tags))
        .route("/v1/hosts/{id}/retry", post(retry_host))
        .route(
            "/v1/deployments",
            post(create_deployment).get(list_deployments),
        )
        .route("/v1/deployments/{id}", get(show_deployment))
        .route("/v1/deployments/{id}/stop", post(stop_deployment))
        .route("/v1/pipelines", post(apply_pipeline).get(list_pipelines))
        .route(
            "/v1/pipelines/{name}",
            get(show_pipeline).delete(delete_pipeline),
        )
        .route("/v1/pipelines/{name}/releases", post(create_release))
        .route("/v1/releases", get(list_releases))
        .route("/v1/releases/{id}", get(show_release))
        .route("/v1/releases/{id}/approve", post(approve_release))
        .route("/v1/releases/{id}/reject", post(reject_release))
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route("/v1/webhooks/{id}", delete(webhooks::delete_webhook))
        .route("/v1/webhooks/{id}/test", post(webhooks::test_webhook))
        .route("/metrics", get(metrics::scrape))
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(around::AroundLayer {
            metrics: state.metrics.clone(),
        })
        .with_state(state)
}

/// Rewrites an error answer that is not JSON (axum's own rejections, such as a path that
/// is not valid UTF-8 once percent-decoded) into an `ErrorBody` carrying its text.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json_or_html(&resp) {
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

/// Whether `resp` says it is JSON or an HTML page (the dashboard's).
fn is_json_or_html(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking service call off the async runtime.
pub(super) async fn blocking<T, F>(state: &AppState, f: F) -> ApiResult<T>
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
