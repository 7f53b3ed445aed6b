//! The one layer around every route, as a plain tower layer: 414 for a URI longer than
//! [`MAX_URI_LEN`] before routing's handler or any extractor runs, [`json_errors`] on an
//! error answer, and the answer counted ([`Counted`]). Its future is the route's own plus
//! a few words, inside the route's one box: a held poll pays for no boxed middleware
//! future, no boxed copy of the inner service and no second boxed call (what axum's
//! `middleware::from_fn` allocates per request). Only an error answer that is not JSON
//! yet boxes its rewrite. Not here: the routes, or what is counted (`metrics`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::metrics::Counted;
use super::{json_errors, ApiError, MAX_URI_LEN};
use crate::metrics::Metrics;

/// Wraps each route in [`Around`].
#[derive(Clone)]
pub(super) struct AroundLayer {
    pub(super) metrics: Arc<Metrics>,
}

impl<S> tower_layer::Layer<S> for AroundLayer {
    type Service = Around<S>;

    fn layer(&self, inner: S) -> Around<S> {
        Around {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct Around<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower_service::Service<Request> for Around<S>
where
    S: tower_service::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AroundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let counted = Counted::of(&req);
        let metrics = self.metrics.clone();
        let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        let stage = if len > MAX_URI_LEN {
            let resp = ApiError::new(
                StatusCode::URI_TOO_LONG,
                format!("the request URI has {len} bytes; at most {MAX_URI_LEN} are accepted"),
            )
            .into_response();
            Stage::Answered(Some(resp))
        } else {
            Stage::Route(self.inner.call(req))
        };
        AroundFuture {
            stage,
            counted: Some(counted),
            metrics,
        }
    }
}

pub(super) struct AroundFuture<F> {
    stage: Stage<F>,
    /// Taken when the answer is counted.
    counted: Option<Counted>,
    metrics: Arc<Metrics>,
}

enum Stage<F> {
    /// The route serves the request.
    Route(F),
    /// An error answer being rewritten as JSON.
    Rewrite(Pin<Box<dyn Future<Output = Response> + Send>>),
    /// The answer, taken once returned.
    Answered(Option<Response>),
}

impl<F, E> Future for AroundFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (`F` by the bound, the rest boxed or plain).
        let this = &mut *self;
        loop {
            let resp = match &mut this.stage {
                Stage::Route(f) => {
                    let resp = ready!(Pin::new(f).poll(cx))?;
                    if needs_rewrite(&resp) {
                        this.stage = Stage::Rewrite(Box::pin(json_errors(resp)));
                        continue;
                    }
                    resp
                }
                Stage::Rewrite(f) => ready!(f.as_mut().poll(cx)),
                Stage::Answered(resp) => match resp.take() {
                    Some(resp) => resp,
                    None => {
                        // Polled again after it returned: a caller's error, answered
                        // rather than panicking.
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                            .into_response()
                    }
                },
            };
            if let Some(counted) = this.counted.take() {
                counted.answered(&this.metrics, &resp);
            }
            this.stage = Stage::Answered(None);
            return Poll::Ready(Ok(resp));
        }
    }
}

/// Whether [`json_errors`] would change `resp`: an error answer that is not JSON (nor a
/// dashboard page).
fn needs_rewrite(resp: &Response) -> bool {
    let status = resp.status();
    (status.is_client_error() || status.is_server_error()) && !super::is_json_or_html(resp)
}
