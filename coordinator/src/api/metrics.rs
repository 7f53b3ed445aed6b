//! `GET /metrics` (the Prometheus text format of [`crate::metrics`]) and what counts
//! every answer by route pattern, method and status (for the one layer, `api::around`). Not here: the series
//! themselves or the fleet's figures (`metrics`, `service::figures`).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
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

/// What a request is counted under, noted before it is served: its route pattern (shared
/// with the request, not copied) and its method's label.
pub(super) struct Counted {
    route: Option<MatchedPath>,
    method: &'static str,
}

impl Counted {
    pub(super) fn of(req: &Request) -> Counted {
        let method = match *req.method() {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            _ => "other",
        };
        Counted {
            route: req.extensions().get::<MatchedPath>().cloned(),
            method,
        }
    }

    /// Counts the answer `resp`.
    pub(super) fn answered(self, metrics: &crate::metrics::Metrics, resp: &Response) {
        let route = self.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        metrics.request(route, self.method, resp.status().as_u16());
    }
}
