//! `GET /metrics` (the Prometheus text format of [`crate::metrics`]) and the middleware
//! counting every answer by route pattern, method and status. Not here: the series
//! themselves or the fleet's figures (`metrics`, `service::figures`).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{blocking, ApiError, ApiResult, AppState, Operator};

/// What the route label says of a request that matched no route: the path asked for is
/// never a label (its values would be unbounded).
const UNMATCHED: &str = "unmatched";

pub(super) async fn scrape(
    State(state): State<AppState>,
    op: Result<Operator, ApiError>,
) -> ApiResult<Response> {
    if !state.metrics_public {
        op?;
    }
    let figures = blocking(&state, |e| e.figures()).await?;
    let text = state.metrics.render(&figures).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: encoding the metrics: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub(super) async fn count_requests(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE => req.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let resp = next.run(req).await;
    state
        .metrics
        .request(&route, &method, resp.status().as_u16());
    resp
}
