//! `hoist-bench server`: a bare hyper server, the baseline of [`super`]. It serves
//! HTTP/1.1 with hyper's own connection (HTTPS with `--tls-cert`/`--tls-key`, rustls with
//! ring, as `hoist server`), `hoist server`'s settings (head timeout, head size cap), reads
//! each request's
//! body, holds the request 30 s and answers `{"command":null}`. It prints
//! `listening on ADDR` like `hoist server`, so the tests' starter runs it.
//!
//! Not a coordinator: no routes, no credentials, no store. What it costs per held request
//! is the floor of what any server on tokio and hyper pays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};

/// The same as `hoist server`'s `HEADER_READ_TIMEOUT` and `MAX_HEAD_BYTES`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long each request is held (a simulated host's `wait_secs`).
const HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Accepted so the tests' server starter can run it; nothing is written there.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

pub fn serve(args: FloorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(accept(args))
}

fn acceptor(args: &FloorArgs) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .context("reading the certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).context("reading the key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

async fn accept(args: FloorArgs) -> anyhow::Result<()> {
    let tls = acceptor(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(hold);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

async fn hold(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, hyper::Error> {
    // Read, then dropped: the least a server keeps of a held request.
    drop(req.into_body().collect().await?);
    tokio::time::sleep(HOLD).await;
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
        br#"{"command":null}"#,
    )));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
