//! A webhook receiver on loopback: a small axum server that checks the `X-Hoist-Signature`
//! of EVERY request against the webhook's secret (a request without a valid one is answered
//! 401 and counted, so a test asserting none saw a forged or broken signature), keeps each
//! event it accepted in arrival order, and can be "down" (answering 503 to everything,
//! counted) for a while. Not a model of a real receiver's logic: it only records.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One accepted request.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    /// The `X-Hoist-Event-Id` and `X-Hoist-Event` headers.
    pub event_id_header: String,
    pub event_type_header: String,
    /// The exact bytes and their `X-Hoist-Signature` (for a tamper check).
    pub raw: Vec<u8>,
    pub signature: String,
}

#[derive(Default)]
struct Inner {
    secret: Vec<u8>,
    down: bool,
    accepted: Vec<Received>,
    refused_while_down: usize,
    bad_signatures: usize,
}

pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `header` is `sha256=HEX` of the HMAC-SHA256 of `body` under `secret` (compared
/// in constant time): what a receiver checks.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut s = lock(&inner);
    if !verify(&s.secret, &body, &header("x-hoist-signature")) {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if s.down {
        s.refused_while_down += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(json) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    s.accepted.push(Received {
        body: json,
        event_id_header: header("x-hoist-event-id"),
        event_type_header: header("x-hoist-event"),
        raw: body.to_vec(),
        signature: header("x-hoist-signature"),
    });
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Starts a receiver checking signatures with `secret`, on the current runtime.
    pub async fn start(secret: &str) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            secret: secret.as_bytes().to_vec(),
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            inner,
            server,
        }
    }

    /// While down, every request (with a valid signature) is answered 503.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner).down = down;
    }

    /// The bodies accepted, in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        lock(&self.inner)
            .accepted
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner).accepted.clone()
    }

    /// Requests answered 503 while down.
    pub fn refused_while_down(&self) -> usize {
        lock(&self.inner).refused_while_down
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        lock(&self.inner).bad_signatures
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
