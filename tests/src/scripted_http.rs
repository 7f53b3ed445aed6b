//! A small HTTP/1.1 server on 127.0.0.1 port 0 whose every answer a test scripts, including
//! misbehaviour (drops after N bytes, stalls, missing lengths, Range), recording each request;
//! re-exported from `servers`, which also uses its request reader for the Git CGI server.
//!
//! A fixture, not a production server: no TLS, no keep-alive, bodies by Content-Length only.
//! For the coordinator's side of the agent protocol use `fake_coordinator` instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server read it; header names are lowercase.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// What the server answers, and how badly.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes.
    pub cut_after: Option<usize>,
    /// Send no Content-Length: the body ends when the connection closes.
    pub no_length: bool,
    /// Send the head, then go silent.
    pub stall: bool,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: format!("status {status}\n").into_bytes(),
            cut_after: None,
            no_length: false,
            stall: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Serves `body` honouring `Range: bytes=N-` (with ETag `"v1"`).
pub fn serve(body: &[u8], req: &Request) -> Reply {
    let mut reply = Reply::status(200).header("ETag", "\"v1\"");
    if let Some(start) = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        if req.header("if-range").is_none_or(|v| v == "\"v1\"") && start < body.len() {
            reply.status = 206;
            reply.headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
            ));
            reply.body = body[start..].to_vec();
            return reply;
        }
    }
    reply.body = body.to_vec();
    reply
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// A server on 127.0.0.1 port 0 that records every request; the handler gets each request's
/// index (0 for the first) and decides the reply.
pub struct HttpServer {
    pub addr: SocketAddr,
    /// Shared with the accept loop (and with `servers::start_git_http`'s, which records
    /// into it too).
    pub(crate) requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpServer {
    pub async fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, handler, seen).await;
                });
            }
        });
        HttpServer { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Appends `req` to `seen`; returns its index.
pub(crate) fn record(seen: &Mutex<Vec<Request>>, req: &Request) -> usize {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.push(req.clone());
    seen.len() - 1
}

pub(crate) async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(
        !headers.contains_key("transfer-encoding"),
        "the test server reads only Content-Length bodies"
    );
    while body.len() < length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

async fn answer(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let index = record(&seen, &req);
    let reply = handler(index, &req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if reply.stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(());
    }
    let body = match reply.cut_after {
        Some(n) => &reply.body[..n.min(reply.body.len())],
        None => &reply.body[..],
    };
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}
