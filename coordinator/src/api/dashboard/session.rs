//! Signing in to the dashboard and the session of each page: the sign-in form takes an
//! operator token and answers a session cookie (HttpOnly, SameSite=Strict, Secure under
//! TLS, [`SESSION_LIFETIME`]); [`Session`] reads it from the request head, finds the
//! session's token and checks its role against [`super::super::roles::needed`] before any
//! body is read; [`Session::form`] reads a bounded form body and checks its CSRF token
//! before a handler changes anything. Not here: the pages, or how a session is stored
//! (`service::sessions`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hoist_protocol::operator::Role;
use maud::html;

use super::view::{page, Page};
use super::DashError;
use crate::api::{blocking, AppState};
use crate::service::{constant_time_eq, csrf_token, sha256_hex, Identity, SESSION_LIFETIME};

/// The session cookie's name.
pub const COOKIE: &str = "hoist_session";

/// Longest form body a dashboard route reads.
pub const FORM_LIMIT: usize = 8 * 1024;

/// A signed-in browser whose token's role allows the route.
pub struct Session {
    pub identity: Identity,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Session {
    /// Whether this session's role allows `GET route` (the same rule as the API's).
    pub fn may_read(&self, route: &str) -> bool {
        self.identity
            .role
            .allows(crate::api::roles::needed(&axum::http::Method::GET, route))
    }

    /// Whether this session's role allows `POST route` (the same rule as the API's).
    pub fn may_post(&self, route: &str) -> bool {
        self.identity
            .role
            .allows(crate::api::roles::needed(&axum::http::Method::POST, route))
    }

    /// The fields of a form body, once its CSRF token matched this session's.
    pub fn form(&self, body: &Bytes) -> Result<HashMap<String, String>, DashError> {
        if body.len() > FORM_LIMIT {
            return Err(DashError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form is over {FORM_LIMIT} bytes"),
            ));
        }
        let fields: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let presented = fields.get("csrf").map_or("", String::as_str);
        if !constant_time_eq(presented.as_bytes(), self.csrf.as_bytes()) {
            return Err(DashError::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this session's; reload the page and try again",
            ));
        }
        Ok(fields)
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The identity of the operator token whose digest a session keeps; `None` when the token
/// is unknown or revoked (the session then counts as signed out).
async fn identity_of(
    state: &AppState,
    token_sha256: String,
) -> Result<Option<Identity>, DashError> {
    if state.operator_token.matches_digest(&token_sha256) {
        return Ok(Some(Identity {
            role: Role::Admin,
            name: None,
            token_id: None,
        }));
    }
    match blocking(state, move |e| {
        e.authenticate_operator_digest(&token_sha256)
    })
    .await
    {
        Ok(found) => Ok(found),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to("/sign-in").into_response();
        let Some(secret) = cookie_value(&parts.headers) else {
            return Err(to_sign_in());
        };
        let looked = secret.clone();
        let token = blocking(state, move |e| e.session_token(&looked))
            .await
            .map_err(|e| DashError::from(e).into_response())?;
        let Some(token) = token else {
            return Err(to_sign_in());
        };
        let Some(identity) = identity_of(state, token)
            .await
            .map_err(IntoResponse::into_response)?
        else {
            return Err(to_sign_in());
        };
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let needed = crate::api::roles::needed(&parts.method, route);
        if !identity.role.allows(needed) {
            return Err(DashError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this session's role is {}; {} {route} needs {needed}",
                    identity.role, parts.method
                ),
            )
            .into_response());
        }
        Ok(Session {
            identity,
            csrf: csrf_token(&secret),
        })
    }
}

pub(super) async fn sign_in_form() -> Response {
    sign_in_page(StatusCode::OK, None)
}

fn sign_in_page(status: StatusCode, problem: Option<&str>) -> Response {
    let body = page(
        Page::SignIn,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { p.error { (p) } }
            form method="post" action="/sign-in" {
                label for="token" { "Operator token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    );
    (status, body).into_response()
}

pub(super) async fn sign_in(State(state): State<AppState>, body: Bytes) -> Response {
    if body.len() > FORM_LIMIT {
        return sign_in_page(StatusCode::PAYLOAD_TOO_LARGE, Some("the form is too large"));
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if token.is_empty() {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("token: enter an operator token"),
        );
    }
    let digest = sha256_hex(&token);
    match identity_of(&state, digest.clone()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return sign_in_page(
                StatusCode::UNAUTHORIZED,
                Some("that is not a valid operator token (wrong, or revoked)"),
            )
        }
        Err(e) => return e.into_response(),
    }
    let secret = match blocking(&state, move |e| e.create_session(&digest)).await {
        Ok(s) => s,
        Err(e) => return DashError::from(e).into_response(),
    };
    let cookie = format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if state.tls { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to("/deployments").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(super) async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DashError> {
    session.form(&body)?;
    if let Some(secret) = cookie_value(&headers) {
        blocking(&state, move |e| e.end_session(&secret)).await?;
    }
    let mut resp = Redirect::to("/sign-in").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hoist_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}
