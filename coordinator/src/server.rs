//! `hoist server`: opens the data directory (SQLite database, bundle store, operator
//! token), resumes deployments in progress, sweeps host leases, and serves the API over
//! HTTP or HTTPS (rustls with the ring provider).
//!
//! On startup it prints `listening on ADDR` (the bound address, e.g. `127.0.0.1:40123`)
//! alone on a line on stderr, so `--listen 127.0.0.1:0` can be used and the port read back.
//! It stops when the cancellation token fires (SIGTERM/SIGINT): the listener closes, held
//! long polls are answered 503 at once (handed back: the hosts poll again, on another
//! replica when they list several), in-flight requests get a grace period. Not here: routes (the `api` module) or rules.
//!
//! Transport, in one accept loop for HTTP and HTTPS:
//! - plain HTTP only on a loopback address or with `--insecure-http`; otherwise HTTPS, with
//!   the configured certificate or one generated in the data directory ([`crate::tls`]);
//! - at most `max_connections` connections at once (default: the open-file limit, raised
//!   to its hard limit at start, less [`RESERVED_FDS`]); further ones wait in the backlog;
//! - a request head must arrive within [`HEADER_READ_TIMEOUT`] (idle keep-alive connections
//!   are closed after it too) and fit in [`MAX_HEAD_BYTES`]; bodies are bounded by the api;
//! - HTTP/1.1 only, unless `--http2-cleartext` also accepts HTTP/2 with prior knowledge on
//!   plain HTTP, with at most [`H2_MAX_STREAMS`] streams per connection.
//! - data at rest is private: umask 077, the data directory 0700, the database files 0600.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, OperatorToken};
use crate::bundles::BundleStore;
use crate::config::ServerConfig;
use crate::service::{new_secret, Service, ServiceConfig};
use crate::store::postgres::DatabaseUrl;
use crate::store::{PgStore, SqliteStore, Store};

/// How often hosts' last contacts (polls) are written: batched, as one poll per host every
/// 30 s would otherwise be hundreds of database syncs a second with a large fleet.
const CONTACT_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// How often bakes between batches are checked for their end.
const BAKE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Time in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A connection must send a whole request head (or finish its TLS handshake) this soon
/// after it opens or after its previous answer; otherwise it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most concurrent HTTP/2 streams per connection (an agent uses two: a poll and a report).
pub const H2_MAX_STREAMS: u32 = 16;

/// Open files kept for other uses than connections: the database and its WAL and SHM,
/// bundles being read or written, the listener, the runtime's own descriptors.
pub const RESERVED_FDS: u64 = 48;

pub async fn run(config: ServerConfig, cancel: CancellationToken) -> Result<()> {
    let data_dir = config.data_dir.clone();
    private_data_dir(&data_dir)?;
    let max_connections = connection_cap(config.max_connections);
    tracing::debug!(
        header_read_timeout_secs = HEADER_READ_TIMEOUT.as_secs(),
        max_head_bytes = MAX_HEAD_BYTES,
        h2_max_streams = H2_MAX_STREAMS,
        max_bundle_bytes = config.max_bundle_bytes,
        "transport limits"
    );
    let token = match &config.operator_token {
        Some(t) => t.expose().to_owned(),
        None => operator_token_file(&data_dir)?,
    };
    config.check_bundles_for_replicas(config.database.is_some())?;
    let store = open_store(&data_dir, config.database.as_ref()).await?;
    let bundles = open_bundles(&config).await?;
    let acceptor = tls_acceptor(&config)?;
    let service = Arc::new(Service::new(
        store,
        bundles,
        ServiceConfig {
            host_lease: config.host_lease,
            ..ServiceConfig::default()
        },
    ));
    service
        .follow_replicas()
        .context("listening to other replicas")?;
    {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.resume())
            .await?
            .context("resuming deployments in progress")?;
    }
    let sweeper = tokio::spawn(sweep_leases(service.clone(), cancel.clone()));
    let bakes = tokio::spawn(end_bakes(service.clone(), cancel.clone()));
    let contacts = tokio::spawn(write_contacts(service.clone(), cancel.clone()));
    let sources = tokio::spawn(crate::sources::watch(
        service.clone(),
        crate::sources::SourceSettings {
            max_bundle_bytes: config.max_bundle_bytes,
            s3: crate::s3::S3Settings::from_env("an S3 source").ok(),
        },
        cancel.clone(),
    ));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let replica = {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.start_replica(addr))
            .await?
            .context("writing this replica's row")?
    };
    tracing::info!(replica = %replica.id, host = ?replica.host, "replica {}", replica.id);
    let hooks = crate::webhooks::Settings::new(&config, addr, acceptor.is_some(), &replica.host);
    let public_url = hooks.public_url.clone();
    let webhooks = tokio::spawn(crate::webhooks::run(service.clone(), hooks, cancel.clone()));
    let handed_back = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let state = AppState {
        service: service.clone(),
        operator_token: OperatorToken::new(&token),
        cancel: cancel.clone(),
        max_bundle_bytes: config.max_bundle_bytes,
        metrics: Arc::new(crate::metrics::Metrics::new(replica.id.clone())),
        metrics_public: config.metrics_public,
        handed_back: handed_back.clone(),
        tls: acceptor.is_some(),
        public_url,
    };
    let router = api::router(state);
    let beats = tokio::spawn(service.clone().beat_replica(cancel.clone()));
    // The one line tests and scripts read to learn the port; keep its form.
    eprintln!("listening on {addr}");
    let transport = Transport {
        tls: acceptor,
        http2_cleartext: config.http2_cleartext,
        max_connections,
    };
    tracing::info!(%addr, scheme = if transport.tls.is_some() { "https" } else { "http" },
        http2_cleartext = transport.http2_cleartext, "serving");
    let result = serve(listener, transport, router, cancel.clone()).await;
    // Removes this replica's row once cancelled.
    cancel.cancel();
    if let Err(e) = beats.await {
        tracing::error!(error = %e, "removing this replica's row");
    }
    sweeper.abort();
    bakes.abort();
    // It gives sends in flight a few seconds, then leaves them to their lease.
    if let Err(e) = webhooks.await {
        tracing::error!(error = %e, "stopping webhook deliveries");
    }
    sources.abort();
    // It writes the last contacts noted before it returns.
    if let Err(e) = contacts.await {
        tracing::error!(error = %e, "writing hosts' last contacts");
    }
    let handed_back = handed_back.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!("coordinator stopped; {handed_back} held polls handed back");
    result
}

/// The bundle store the config names: `DATA_DIR/bundles`, or S3-compatible storage (whose
/// bucket must answer the credentials before the server starts).
async fn open_bundles(config: &ServerConfig) -> Result<BundleStore> {
    let dir = config.data_dir.join("bundles");
    let bundles = match &config.bundle_store {
        None => BundleStore::open(&dir),
        Some(location) => {
            let settings = crate::s3::S3Settings::from_env("--bundle-store")?;
            BundleStore::s3(settings, location.clone(), &dir.join("tmp"))
        }
    }
    .context("opening the bundle store")?;
    bundles
        .check()
        .await
        .with_context(|| format!("opening the bundle store {}", bundles.describe()))?;
    tracing::info!(bundles = %bundles.describe(), "bundle store");
    Ok(bundles)
}

/// How many connections to serve at once: `configured`, or what the open-file limit
/// (raised first) allows, and never more than that.
fn connection_cap(configured: Option<usize>) -> usize {
    let fd_limit = raise_nofile_limit();
    let allowed =
        usize::try_from(fd_limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    let cap = match configured {
        Some(n) if n > allowed => {
            tracing::warn!(
                max_connections = n,
                allowed,
                "max_connections is over what the open-file limit allows; using the limit"
            );
            allowed
        }
        Some(n) => n,
        None => allowed,
    };
    tracing::info!(
        open_file_limit = fd_limit,
        max_connections = cap,
        "the open-file limit allows {allowed} hosts (one connection each)"
    );
    cap
}

/// TLS for this listen address: the configured certificate; none on loopback or with
/// `insecure_http`; otherwise the one generated in the data directory.
fn tls_acceptor(config: &ServerConfig) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    let files = match (&config.tls, config.listen.ip().is_loopback()) {
        (Some(files), _) => files.clone(),
        (None, true) => return Ok(None),
        (None, false) if config.insecure_http => {
            tracing::warn!(listen = %config.listen,
                "serving plain HTTP on a non-loopback address (--insecure-http): tokens and host \
                 secrets cross the network in the clear");
            return Ok(None);
        }
        (None, false) => crate::tls::generated_pair(&config.data_dir, config.listen)?,
    };
    let (acceptor, fp) = crate::tls::acceptor(&files)?;
    tracing::info!(
        certificate = %files.cert.display(),
        "TLS certificate SHA-256 fingerprint {fp} (agents pin it as coordinator.pin_sha256)"
    );
    Ok(Some(acceptor))
}

/// Creates the data directory (0700, whatever the umask) and makes an existing one 0700;
/// sets the process umask to 077 so every file created later is private too.
/// Opens the PostgreSQL `database`, or else the one in `data_dir` (created private when
/// missing), applying the migrations it lacks; a database newer than this build is refused.
pub async fn open_store(data_dir: &Path, database: Option<&DatabaseUrl>) -> Result<Arc<dyn Store>> {
    if let Some(url) = database {
        let (url, shown) = (url.clone(), url.to_string());
        let rt = tokio::runtime::Handle::current();
        let store = tokio::task::spawn_blocking(move || PgStore::open(&url, rt))
            .await?
            .with_context(|| format!("opening the database {shown}"))?;
        tracing::info!(database = %shown, "state in PostgreSQL");
        return Ok(Arc::new(store));
    }
    private_data_dir(data_dir)?;
    let db_path = data_dir.join("hoist.db");
    private_database_files(&db_path)?;
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path))
        .await?
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

fn private_data_dir(dir: &Path) -> Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making the data directory {} private", dir.display()))
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm
/// files the database file's mode), and makes existing ones 0600.
fn private_database_files(db: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .with_context(|| format!("creating the database {}", db.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("making {} private", path.display())),
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (each host holds a connection, and
/// systemd's usual soft limit of 1024 would lock a larger fleet out); returns the limit
/// in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading the open-file limit; assuming 1024");
            return 1024;
        }
    };
    // An unlimited hard limit still cannot exceed the kernel's per-process maximum.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, "raised the open-file limit");
            target
        }
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "raising the open-file limit; keeping it");
            soft
        }
    }
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

async fn sweep_leases(service: Arc<Service>, cancel: CancellationToken) {
    let every = (service.config().host_lease / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let e = service.clone();
        match tokio::task::spawn_blocking(move || e.expire_leases()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(commands = n, "commands failed: host lost"),
            Ok(Err(e)) => tracing::error!(error = %e, "sweeping host leases"),
            Err(e) => tracing::error!(error = %e, "sweeping host leases"),
        }
    }
}

/// Ends bakes that are over (and fails hosts lost during one), twice a second: a bake's
/// end is stored, so this only notices it.
async fn end_bakes(service: Arc<Service>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(BAKE_CHECK_INTERVAL) => {}
        }
        let e = service.clone();
        match tokio::task::spawn_blocking(move || e.advance_bakes()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "ending bakes"),
            Err(e) => tracing::error!(error = %e, "ending bakes"),
        }
    }
}

/// Writes the hosts' last contacts noted by polls, once a second, and once more at
/// shutdown.
async fn write_contacts(service: Arc<Service>, cancel: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(CONTACT_WRITE_INTERVAL) => false,
        };
        let e = service.clone();
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

/// How connections are served.
struct Transport {
    /// `None`: plain HTTP.
    tls: Option<tokio_rustls::TlsAcceptor>,
    http2_cleartext: bool,
    max_connections: usize,
}

/// The accept loop: a permit per connection, TLS when configured, then HTTP/1.1 (or
/// HTTP/2 with prior knowledge when allowed) with the limits in the module doc.
async fn serve(
    listener: TcpListener,
    transport: Transport,
    router: axum::Router,
    cancel: CancellationToken,
) -> Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(transport.max_connections));
    let tls = transport.tls.clone();
    let h2c = transport.http2_cleartext;
    let mut warned_full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = transport.max_connections,
                        "connection limit reached; new connections wait"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer): (TcpStream, SocketAddr) = tokio::select! {
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
        if permits.available_permits() > transport.max_connections / 10 {
            warned_full = false;
        }
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        // One task per connection, of the size its own kind needs: a held poll on a plain
        // connection does not carry room for a TLS session or an HTTP/2 connection.
        match tls.clone() {
            Some(acceptor) => {
                tokio::spawn(serve_tls(acceptor, tcp, peer, service, watcher, permit));
            }
            None => {
                tokio::spawn(serve_plain(tcp, peer, h2c, service, watcher, permit));
            }
        }
    }
    // Closed first, so a host polling again is refused at once (and moves on to its next
    // coordinator URL) instead of waiting in the backlog of a server that is leaving.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; stopping");
    }
    Ok(())
}

type ConnService = TowerToHyperService<axum::Router>;

/// One HTTPS connection: the handshake within [`HEADER_READ_TIMEOUT`], then HTTP/1.1.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    service: ConnService,
    watcher: hyper_util::server::graceful::Watcher,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Held for as long as the connection lives.
    let _permit = permit;
    let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
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
    let conn = http1_builder().serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// One plain connection: HTTP/1.1, or HTTP/2 with prior knowledge when `h2c` allows it and
/// the connection opens with its preface.
async fn serve_plain(
    tcp: TcpStream,
    peer: SocketAddr,
    h2c: bool,
    service: ConnService,
    watcher: hyper_util::server::graceful::Watcher,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _permit = permit;
    if h2c {
        match tokio::time::timeout(HEADER_READ_TIMEOUT, sends_h2_preface(&tcp)).await {
            Ok(Ok(true)) => {
                let conn = http2_builder().serve_connection(TokioIo::new(tcp), service);
                // Boxed: only HTTP/2 connections pay for its (larger) state.
                if let Err(e) = Box::pin(watcher.watch(conn)).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            Ok(Ok(false)) => {}
            Ok(Err(_)) | Err(_) => {
                tracing::debug!(%peer, "nothing received in time; closing");
                return;
            }
        }
    }
    let conn = http1_builder().serve_connection(TokioIo::new(tcp), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The HTTP/1.1 connection settings: the head timeout (idle keep-alive included) and size.
fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
}

/// The HTTP/2 (prior knowledge) connection settings.
fn http2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_pending_accept_reset_streams(Some(H2_MAX_STREAMS as usize))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// Whether a plain connection opens with the HTTP/2 preface, waiting for its 24 bytes
/// without consuming them.
async fn sends_h2_preface(tcp: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf.get(..n) != PREFACE.get(..n) {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A prefix so far: peek returns at once until more arrives, so pause between looks.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
