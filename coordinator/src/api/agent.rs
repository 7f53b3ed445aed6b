//! The routes hosts call: registration, the long poll, heartbeats, event reports and
//! rollbacks made on the host. Not
//! here: their rules (`service`) or the credentials (`extract`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hoist_protocol::agent::{
    Heartbeat, LocalRollback, PollRequest, PollResponse, RegisterRequest, Report,
};

use crate::store::HostRow;

use super::{
    blocking, ApiError, ApiJson, ApiResult, AppState, HostAuth, RegistrationAuth, MAX_WAIT,
};

pub(super) async fn register(
    State(state): State<AppState>,
    RegistrationAuth(token): RegistrationAuth,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let resp = blocking(&state, move |e| e.register(&token, req)).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

pub(super) async fn poll(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    ApiJson(req): ApiJson<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    let start = Instant::now();
    let wait = noted(&state, &host, req);
    let answer = hold_poll(&state, host, wait).await;
    state.metrics.poll_held(start.elapsed());
    answer
}

/// Notes what a poll says of its host and returns how long it may be held. It takes the
/// request, so nothing of it is kept while the poll is held: each held poll costs memory
/// for what it keeps, and a fleet holds one per host.
fn noted(state: &AppState, host: &HostRow, req: PollRequest) -> Duration {
    state.service.host_polled(&host.id, &req);
    Duration::from_secs(req.wait_secs.unwrap_or(MAX_WAIT.as_secs()))
        .min(MAX_WAIT)
        .min(state.service.config().poll_wait_cap())
}

/// A poll's answer: a command as soon as there is one for the host, else its sync view
/// when the wait is over. What it keeps while held is the host's shared row, its waker
/// (counting it as held), the deadline and the three wake-ups (a command, the deadline,
/// the server stopping); a command is boxed until it is answered.
async fn hold_poll(
    state: &AppState,
    host: Arc<HostRow>,
    wait: Duration,
) -> ApiResult<Json<PollResponse>> {
    let heartbeat_ms = Some(state.service.config().heartbeat_interval().as_millis() as u64);
    let waker = state.service.host_waker(&host.id);
    let _held = waker.hold();
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
                let host = host.clone();
                blocking(state, move |e| Ok(e.next_command(&host)?.map(Box::new))).await?
            }
        };
        if let Some(command) = command {
            state.service.command_delivered(&command.command_id);
            return Ok(Json(PollResponse {
                command: Some(*command),
                heartbeat_ms,
                sync: None,
            }));
        }
        tokio::select! {
            _ = &mut notified => woken = true,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = state.cancel.cancelled() => return Err(hand_back(state)),
        }
    }
    // An idle host hears where it stands in its groups (shown by `hoist-agent status`).
    let sync = blocking(state, move |e| e.host_sync_view(&host)).await?;
    Ok(Json(PollResponse {
        command: None,
        heartbeat_ms,
        sync: Some(sync),
    }))
}

/// The answer to a poll held when the server stops: 503 at once, with nothing read from the
/// store, so the server can exit within a second and the host polls again, moving on to
/// its next coordinator URL (another replica) when it lists several.
fn hand_back(state: &AppState) -> ApiError {
    state
        .handed_back
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this coordinator is stopping: poll again (another replica, when there are several)",
    )
}

pub(super) async fn heartbeat(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    ApiJson(req): ApiJson<Heartbeat>,
) -> ApiResult<impl IntoResponse> {
    let ack = blocking(&state, move |e| e.heartbeat(&host, &req)).await?;
    Ok(Json(ack))
}

pub(super) async fn local_rollback(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    ApiJson(req): ApiJson<LocalRollback>,
) -> ApiResult<impl IntoResponse> {
    let ack = blocking(&state, move |e| e.local_rollback(&host, &req)).await?;
    Ok(Json(ack))
}

pub(super) async fn report(
    State(state): State<AppState>,
    HostAuth(host): HostAuth,
    Path(id): Path<String>,
    ApiJson(report): ApiJson<Report>,
) -> ApiResult<impl IntoResponse> {
    let start = Instant::now();
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
    state.metrics.report_written(start.elapsed());
    Ok(Json(ack))
}
