//! The request extractors: every credential (operator token, host secret, registration
//! token) checked from the request head, before a handler takes its body, and the bounded
//! JSON body. Not here: what a credential may do (the handlers) or how a host's secret is
//! checked against the store (`service`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hoist_protocol::operator::Role;
use hoist_protocol::HOST_ID_HEADER;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::service::Identity;
use crate::store::HostRow;

use super::{blocking, ApiError, ApiResult, AppState, BodyLimit, BODY_TIMEOUT, JSON_BODY_LIMIT};
/// The operator token, kept as its SHA-256 digest: a presented token is hashed and the two
/// digests compared in constant time, so neither its contents nor its length show in the
/// time an answer takes.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    pub fn new(token: &str) -> OperatorToken {
        OperatorToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `token_sha256` (hex, as a dashboard session keeps it) is this token's digest.
    pub fn matches_digest(&self, token_sha256: &str) -> bool {
        crate::service::constant_time_eq(hex::encode(self.0).as_bytes(), token_sha256.as_bytes())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        crate::service::constant_time_eq(&digest, &self.0)
    }
}

/// A JSON body whose decoding errors answer 400 with an `ErrorBody` naming the problem
/// (`missing field `name``), unlike axum's plain-text rejection. Unknown fields are ignored.
/// The body is bounded by the route's [`BodyLimit`] (413: a declared `Content-Length` over
/// it is refused before a byte is read) and by [`BODY_TIMEOUT`] (408).
pub struct ApiJson<T>(pub T);

/// The `Content-Length` a request declares, when it declares a valid one.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(JSON_BODY_LIMIT, |l| l.0);
        if let Some(len) = declared_length(req.headers()).filter(|&n| n > limit as u64) {
            return Err(ApiError::too_large(
                format_args!("the request body ({len} bytes)"),
                limit as u64,
            ));
        }
        let body = http_body_util::Limited::new(req.into_body(), limit);
        let bytes: Bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::too_large("the request body", limit as u64));
            }
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                ))
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// An operator request: `Authorization: Bearer <operator token>`, the configured token
/// (admin) or one of the store's, whose role allows the route ([`super::roles::needed`]).
pub struct Operator(pub Identity);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer(&parts.headers).map(str::to_owned).ok_or_else(|| {
            ApiError::unauthorized("missing operator token (Authorization: Bearer ...)")
        })?;
        let identity = if state.operator_token.matches(&token) {
            Identity {
                role: Role::Admin,
                name: None,
                token_id: None,
            }
        } else {
            blocking(state, move |e| e.authenticate_operator(&token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("wrong operator token"))?
        };
        // A route without a pattern (none reaches here) needs the most.
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let needed = super::roles::needed(&parts.method, route);
        if !identity.role.allows(needed) {
            return Err(ApiError::forbidden(format!(
                "this operator token's role is {}; {} {route} needs {needed}",
                identity.role, parts.method
            )));
        }
        Ok(Operator(identity))
    }
}

/// A host request: the host id header plus `Authorization: Bearer <host secret>`.
/// The row is the credentials cache's, shared: a held poll keeps it without a copy.
pub struct HostAuth(pub Arc<HostRow>);

async fn host_from(parts: &Parts, state: &AppState) -> ApiResult<Arc<HostRow>> {
    let id = parts
        .headers
        .get(HOST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized(format!("missing {HOST_ID_HEADER} header")))?;
    let secret = bearer(&parts.headers)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("missing host secret (Authorization: Bearer ...)"))?;
    if let Some(known) = state.service.authenticate_known_host(&id, &secret) {
        return known.map_err(ApiError::from);
    }
    blocking(state, move |e| e.authenticate_host(&id, &secret)).await
}

impl FromRequestParts<AppState> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        host_from(parts, state).await.map(HostAuth)
    }
}

/// A host or an operator (bundle downloads).
pub struct HostOrOperator;

impl FromRequestParts<AppState> for HostOrOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if parts.headers.contains_key(HOST_ID_HEADER) {
            host_from(parts, state).await.map(|_| HostOrOperator)
        } else {
            Operator::from_request_parts(parts, state)
                .await
                .map(|_| HostOrOperator)
        }
    }
}

/// A registration: `Authorization: Bearer <registration token>`, checked before the body
/// is read (the service checks it again, with the body, when it registers the host).
pub struct RegistrationAuth(pub String);

impl FromRequestParts<AppState> for RegistrationAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer(&parts.headers).map(str::to_owned).ok_or_else(|| {
            ApiError::unauthorized("missing registration token (Authorization: Bearer ...)")
        })?;
        let checked = token.clone();
        blocking(state, move |e| e.check_registration_token(&checked)).await?;
        Ok(RegistrationAuth(token))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_token_matches_only_the_same_token() {
        let t = OperatorToken::new("hot_abc");
        assert!(t.matches("hot_abc"));
        assert!(!t.matches("hot_ab"));
        assert!(!t.matches("hot_abcd"));
        assert!(!t.matches("hot_abC"));
        assert!(!t.matches(""));
    }
}
