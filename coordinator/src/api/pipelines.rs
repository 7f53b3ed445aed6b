//! The operator routes of pipelines and releases, each a thin call of the service off the
//! async runtime; a release can be watched (`?since=SEQ`) as a deployment can. Not here:
//! their rules (`service::pipelines`).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hoist_protocol::operator::{ApplyPipeline, CreateRelease, Decision};
use serde::Deserialize;

use super::{blocking, ApiJson, ApiResult, AppState, Operator, MAX_WAIT};

pub(super) async fn apply_pipeline(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<ApplyPipeline>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.apply_pipeline(req)).await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct PipelineQuery {
    application: Option<String>,
}

pub(super) async fn list_pipelines(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<PipelineQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.pipelines(q.application.as_deref())).await?,
    ))
}

pub(super) async fn show_pipeline(
    State(state): State<AppState>,
    _op: Operator,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.pipeline(&name)).await?))
}

pub(super) async fn delete_pipeline(
    State(state): State<AppState>,
    _op: Operator,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.delete_pipeline(&name)).await?,
    ))
}

pub(super) async fn create_release(
    State(state): State<AppState>,
    _op: Operator,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreateRelease>,
) -> ApiResult<impl IntoResponse> {
    let r = blocking(&state, move |e| e.create_release(&name, req)).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

#[derive(Deserialize)]
pub(super) struct ReleaseQuery {
    pipeline: Option<String>,
}

pub(super) async fn list_releases(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<ReleaseQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.releases(q.pipeline.as_deref())).await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct WatchQuery {
    since: Option<u64>,
    wait_secs: Option<u64>,
}

pub(super) async fn show_release(
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
    Ok(Json(blocking(&state, move |e| e.release(&id)).await?))
}

pub(super) async fn approve_release(
    State(state): State<AppState>,
    Operator(who): Operator,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<Decision>,
) -> ApiResult<impl IntoResponse> {
    // A named token's holder is who decides; `by` stands only for an unnamed token.
    if who.name.is_some() {
        req.by = who.name;
    }
    Ok(Json(
        blocking(&state, move |e| e.approve_release(&id, req)).await?,
    ))
}

pub(super) async fn reject_release(
    State(state): State<AppState>,
    Operator(who): Operator,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<Decision>,
) -> ApiResult<impl IntoResponse> {
    // A named token's holder is who decides; `by` stands only for an unnamed token.
    if who.name.is_some() {
        req.by = who.name;
    }
    Ok(Json(
        blocking(&state, move |e| e.reject_release(&id, req)).await?,
    ))
}
