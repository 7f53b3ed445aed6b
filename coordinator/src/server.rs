//! `hoist server`: opens the data directory (SQLite database, bundle store, operator
//! token), resumes deployments in progress, sweeps host leases, and serves the API over
//! HTTP or, given a certificate and key, HTTPS (rustls with the ring provider).
//!
//! On startup it prints `listening on ADDR` (the bound address, e.g. `127.0.0.1:40123`)
//! alone on a line on stderr, so `--listen 127.0.0.1:0` can be used and the port read back.
//! It stops when the cancellation token fires (SIGTERM/SIGINT): long polls end at once,
//! in-flight requests get a grace period. Not here: routes (the `api` module) or rules.

use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::bundles::BundleStore;
use crate::config::{ServerConfig, TlsFiles};
use crate::engine::{new_secret, Engine, EngineConfig};
use crate::store::SqliteStore;

/// How often hosts' last contacts (polls) are written: batched, as one poll per host every
/// 30 s would otherwise be hundreds of database syncs a second with a large fleet.
const CONTACT_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Time in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: ServerConfig, cancel: CancellationToken) -> Result<()> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let token = match &config.operator_token {
        Some(t) => t.0.clone(),
        None => operator_token_file(&data_dir)?,
    };
    let db_path = data_dir.join("hoist.db");
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path))
        .await?
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    let bundles =
        BundleStore::open(&config.data_dir.join("bundles")).context("opening the bundle store")?;
    let engine = Arc::new(Engine::new(
        Arc::new(store),
        bundles,
        EngineConfig {
            host_lease: config.host_lease,
            ..EngineConfig::default()
        },
    ));
    {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || engine.resume())
            .await?
            .context("resuming deployments in progress")?;
    }
    let sweeper = tokio::spawn(sweep_leases(engine.clone(), cancel.clone()));
    let contacts = tokio::spawn(write_contacts(engine.clone(), cancel.clone()));
    let state = AppState {
        engine,
        operator_token: token.into(),
        cancel: cancel.clone(),
    };
    let router = api::router(state);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // The one line tests and scripts read to learn the port; keep its form.
    eprintln!("listening on {addr}");
    let result = match &config.tls {
        None => {
            tracing::info!(%addr, "serving http");
            let shutdown = cancel.clone();
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .into_future();
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => r.context("serving http"),
                _ = async { cancel.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                    tracing::warn!("requests still running after the grace period; stopping");
                    Ok(())
                }
            }
        }
        Some(tls) => {
            let acceptor = tls_acceptor(tls)?;
            tracing::info!(%addr, "serving https");
            serve_tls(listener, acceptor, router, cancel.clone()).await
        }
    };
    sweeper.abort();
    // It writes the last contacts noted before it returns.
    if let Err(e) = contacts.await {
        tracing::error!(error = %e, "writing hosts' last contacts");
    }
    tracing::info!("coordinator stopped");
    result
}

/// Reads `DIR/operator-token`, or writes a new one there (mode 0600) on first start.
fn operator_token_file(dir: &Path) -> Result<String> {
    let path = dir.join("operator-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            tracing::info!(path = %path.display(), "operator token read from file");
            return Ok(t.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading the operator token {}", path.display()))
        }
    }
    let token = format!("hot_{}", new_secret());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing the operator token {}", path.display()))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing the operator token {}", path.display()))?;
    tracing::warn!(path = %path.display(),
        "no operator token configured: wrote a new one (give it to the CLI as HOIST_TOKEN)");
    Ok(token)
}

async fn sweep_leases(engine: Arc<Engine>, cancel: CancellationToken) {
    let every =
        (engine.config().host_lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.expire_leases()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(commands = n, "commands failed: host lost"),
            Ok(Err(e)) => tracing::error!(error = %e, "sweeping host leases"),
            Err(e) => tracing::error!(error = %e, "sweeping host leases"),
        }
    }
}

/// Writes the hosts' last contacts noted by polls, once a second, and once more at
/// shutdown.
async fn write_contacts(engine: Arc<Engine>, cancel: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(CONTACT_WRITE_INTERVAL) => false,
        };
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.flush_contacts()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing hosts' last contacts"),
            Err(e) => tracing::error!(error = %e, "writing hosts' last contacts"),
        }
        if stopping {
            return;
        }
    }
}

fn tls_acceptor(tls: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading TLS certificates {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading TLS key {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the TLS certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    cancel: CancellationToken,
) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; stopping");
    }
    Ok(())
}
