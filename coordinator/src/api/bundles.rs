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

use crate::bundles::{BundleError, ByteRange};
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
                BundleError::Io { .. } | BundleError::Remote(_) => None,
            };
            match cut {
                Some(UploadCut::TooLarge(_)) => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error_chain(&e))
                }
                Some(UploadCut::Stalled) => {
                    ApiError::new(StatusCode::REQUEST_TIMEOUT, error_chain(&e))
                }
                Some(UploadCut::Body(_)) => ApiError::new(StatusCode::BAD_REQUEST, error_chain(&e)),
                None if matches!(e, BundleError::Remote(_)) => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("storing the bundle: {}", error_chain(&e)),
                ),
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
    let reading = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading bundle: {}", error_chain(&e)),
        )
    };
    let bundle = state
        .service
        .bundles()
        .open_bundle(&sha256)
        .await
        .map_err(|e| {
            let status = match e {
                BundleError::Remote(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, format!("reading bundle: {}", error_chain(&e)))
        })?
        .ok_or_else(not_found)?;
    let size = bundle.size();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range, content_range) = match parse_range(range, size) {
        RangeRequest::Whole => (StatusCode::OK, None, None),
        RangeRequest::Partial(r) => (
            StatusCode::PARTIAL_CONTENT,
            Some(r),
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
    let len = range.map_or(size, |r| r.byte_count());
    let body = Body::from_stream(bundle.read(range).await.map_err(reading)?);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range (absent, malformed, or several ranges): send the whole bundle.
    Whole,
    Partial(ByteRange),
    /// A well-formed range that does not overlap the bundle: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value against a bundle of `size` bytes (RFC 9110 §14.2:
/// a server may ignore a range it does not support, so anything but one `bytes=` range is
/// answered with the whole bundle).
fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let partial = |start: u64, end: u64| RangeRequest::Partial(ByteRange { start, end });
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Whole,
        // Suffix: the last N bytes.
        (true, false) => match b.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => partial(size.saturating_sub(n), size - 1),
            Err(_) => RangeRequest::Whole,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    _ => return RangeRequest::Whole,
                }
            };
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                partial(start, end.min(size - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        use RangeRequest::*;
        let p = |start, end| Partial(ByteRange { start, end });
        let table: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, Whole),
            (Some("bytes=0-4"), 10, p(0, 4)),
            (Some("bytes=5-"), 10, p(5, 9)),
            (Some("bytes=5-100"), 10, p(5, 9)),
            (Some("bytes=-3"), 10, p(7, 9)),
            (Some("bytes=-30"), 10, p(0, 9)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=0-1,3-4"), 10, Whole),
            (Some("bytes=4-2"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=x-1"), 10, Whole),
        ];
        for (h, size, want) in table {
            assert_eq!(parse_range(*h, *size), *want, "{h:?} of {size}");
        }
    }
}
