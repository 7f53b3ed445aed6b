//! The API's one error answer: a status, an `ErrorBody` JSON message and any headers, made
//! from the service's errors by their kind. Not here: which requests fail (the handlers
//! and extractors) or the rewriting of axum's own answers (`json_errors` in the router).

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hoist_protocol::ErrorBody;

use crate::service::{error_chain, ServiceError};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Each problem of an input that had several.
    problems: Vec<String>,
    pub(super) headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(super) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub(super) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn too_large(what: impl std::fmt::Display, limit: u64) -> ApiError {
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
            ServiceError::Problems { what, problems } => {
                let mut e = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{what} has {} problem(s)", problems.len()),
                );
                e.problems = problems.clone();
                return e;
            }
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
                problems: self.problems,
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
                | StatusCode::FORBIDDEN
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
