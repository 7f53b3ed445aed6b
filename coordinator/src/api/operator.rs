//! The operator routes: applications, groups, revisions, registration tokens, hosts and
//! deployments, each a thin call of the service off the async runtime. Not here: their
//! rules (`service`) or the operator token check (`extract`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hoist_protocol::operator::{
    CreateApplication, CreateDeployment, CreateGroup, CreateRegistrationToken, CreateRevision,
    SetHostTags, UpdateGroup,
};
use serde::Deserialize;

use super::{blocking, ApiError, ApiJson, ApiResult, AppState, Operator, MAX_WAIT};

pub(super) async fn create_application(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateApplication>,
) -> ApiResult<impl IntoResponse> {
    let app = blocking(&state, move |e| e.create_application(req)).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

pub(super) async fn list_applications(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.applications()).await?))
}

pub(super) async fn create_group(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> ApiResult<impl IntoResponse> {
    let g = blocking(&state, move |e| e.create_group(&app, req)).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

pub(super) async fn list_groups(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.groups(&app)).await?))
}

pub(super) async fn show_group(
    State(state): State<AppState>,
    _op: Operator,
    Path((app, group)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.group(&app, &group)).await?,
    ))
}

pub(super) async fn update_group(
    State(state): State<AppState>,
    _op: Operator,
    Path((app, group)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateGroup>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.update_group(&app, &group, req)).await?,
    ))
}

pub(super) async fn retry_host(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.retry_host(&id)).await?))
}

pub(super) async fn create_revision(
    State(state): State<AppState>,
    _op: Operator,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<CreateRevision>,
) -> ApiResult<impl IntoResponse> {
    let r = blocking(&state, move |e| {
        e.create_revision(&app, req.revision, req.signature)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub(super) async fn show_revision(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.revision(&id)).await?))
}

pub(super) async fn create_token(
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

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.registration_tokens()).await?))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.revoke_registration_token(&id)).await?,
    ))
}

pub(super) async fn set_host_tags(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetHostTags>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.set_host_tags(&id, req)).await?,
    ))
}

pub(super) async fn list_hosts(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.hosts()).await?))
}

pub(super) async fn revoke_host(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, move |e| e.revoke_host(&id)).await?))
}

pub(super) async fn create_deployment(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateDeployment>,
) -> ApiResult<impl IntoResponse> {
    let d = blocking(&state, move |e| e.create_deployment(req)).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    application: Option<String>,
}

pub(super) async fn list_deployments(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.deployments(q.application.as_deref())).await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct WatchQuery {
    since: Option<u64>,
    wait_secs: Option<u64>,
}

pub(super) async fn show_deployment(
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

pub(super) async fn stop_deployment(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.stop_deployment(&id)).await?,
    ))
}
