//! The bundle routes: the streamed upload (idle timeout, size cap) and the download, with
//! the HTTP `Range` header read into a typed [`ByteRange`] (RFC 9110 §14) and answered 206
//! or 416. Not here: where bundles are kept or how they are named (`crate::bundles`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::bundles::BundleError;
use crate::bundles::{parse_range, RangeRequest};
use crate::service::error_chain;

use super::extract::declared_length;
use super::{ApiError, ApiResult, AppState, HostOrOperator, Operator, UPLOAD_IDLE_TIMEOUT};

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

pub(super) async fn upload_bundle(
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

pub(super) async fn download_bundle(
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
