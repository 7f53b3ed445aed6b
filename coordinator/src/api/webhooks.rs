//! The routes of webhooks (admin's: a webhook's URL may carry a receiver's token): create,
//! list with recent deliveries, delete, and send a test event now. Not here: validation
//! (`service::webhooks`) or sending (`crate::webhooks`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hoist_protocol::operator::{CreateWebhook, WebhookTest};

use super::{blocking, ApiError, ApiJson, ApiResult, AppState, Operator};

pub(super) async fn create_webhook(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    let w = blocking(&state, move |e| e.create_webhook(req)).await?;
    Ok((StatusCode::CREATED, Json(w)))
}

pub(super) async fn list_webhooks(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.webhooks()).await?))
}

pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.delete_webhook(&id)).await?,
    ))
}

/// Sends a `test` event to the webhook now (not queued, not retried) and answers what the
/// receiver said.
pub(super) async fn test_webhook(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let w = blocking(&state, move |e| e.webhook_row(&id)).await?;
    let client = crate::webhooks::client().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building the webhook client: {e}"),
        )
    })?;
    let event = crate::webhooks::body(&crate::webhooks::test_event(&w), &state.public_url);
    let attempt = crate::webhooks::send(&client, &w.url, &w.secret, &event).await;
    tracing::info!(webhook_id = %w.id, status = ?attempt.status, "webhook test sent");
    Ok(Json(WebhookTest {
        event_id: event.id,
        delivered: attempt.delivered(),
        status: attempt.status,
        error: attempt.error,
    }))
}
