//! The dashboard: server-rendered HTML pages at stable URLs (`/deployments`,
//! `/deployments/{id}`, `/hosts`, `/applications`, `/pipelines`, `/releases/{id}`,
//! `/webhooks` for admins), their
//! buttons (stop, accept tags, retry, approve, reject), sign-in and sign-out, and two
//! assets compiled into the binary (`/assets/dashboard.css`, `/assets/dashboard.js`,
//! which refreshes a page's `main#live` by fetching the page again). Every answer carries
//! the security headers ([`security_headers`]: a CSP with no inline script, no framing,
//! `nosniff`). Part of `api`, the only HTTP-aware module; it reads the same service views
//! as the JSON routes. Deliberately not here: any rule (the `service`), a second role table
//! (a button is shown, and a post allowed, by `api::roles::needed`), or a JavaScript build.
//!
//! Files: this one (routes, headers, the HTML error), [`session`] (sign-in, the session
//! extractor, CSRF), [`view`] (the page frame and shared pieces), [`pages`] (deployments
//! and hosts), [`fleet`] (applications, pipelines, releases), [`webhooks`] (webhooks and their deliveries).

mod fleet;
mod pages;
pub mod session;
mod view;
mod webhooks;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use super::{ApiError, AppState};
use crate::service::ServiceError;

/// The dashboard's content security policy: scripts, styles and everything else from the
/// coordinator itself only (no inline script or style), no framing, forms post back only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/deployments") }))
        .route(
            "/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/deployments", get(pages::deployments))
        .route("/deployments/{id}", get(pages::deployment))
        .route("/deployments/{id}/stop", post(pages::stop))
        .route("/hosts", get(pages::hosts))
        .route("/hosts/{id}/accept", post(pages::accept_tags))
        .route("/hosts/{id}/retry", post(pages::retry))
        .route("/applications", get(fleet::applications))
        .route("/pipelines", get(fleet::pipelines))
        .route("/releases/{id}", get(fleet::release))
        .route("/releases/{id}/approve", post(fleet::approve))
        .route("/releases/{id}/reject", post(fleet::reject))
        .route("/webhooks", get(webhooks::webhooks))
        .route(
            "/assets/dashboard.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
        .layer(DefaultBodyLimit::max(session::FORM_LIMIT))
        .layer(middleware::from_fn(security_headers))
}

/// Adds the security headers to every dashboard answer; pages are never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A dashboard error: an HTML page with the status and the sentence saying what is wrong.
#[derive(Debug)]
pub struct DashError {
    status: StatusCode,
    message: String,
}

impl DashError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> DashError {
        DashError {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for DashError {
    fn from(e: ApiError) -> DashError {
        DashError::new(e.status(), e.message())
    }
}

impl From<ServiceError> for DashError {
    fn from(e: ServiceError) -> DashError {
        ApiError::from(e).into()
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let body = view::page(
            view::Page::SignIn,
            None,
            html! {
                h1 { (self.status.as_u16()) " " (self.status.canonical_reason().unwrap_or("error")) }
                p.error { (view::text(&self.message)) }
                p { a href="/deployments" { "Back to the deployments" } }
            },
        );
        (self.status, body).into_response()
    }
}
