//! `hoist server`: flags (over the config file) for the coordinator;
//! `hoist server fingerprint`, which prints the SHA-256 fingerprint of the certificate it
//! serves (the one agents pin with `coordinator.pin_sha256`); `hoist server migrate`,
//! which brings the database's schema up to date without serving; and `hoist server
//! replicas`, which lists the coordinators running on the database (from their heartbeats).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use hoist_protocol::secret::Secret;

use crate::config::{FileConfig, Overrides, ServerConfig};
use crate::store::postgres::DatabaseUrl;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// YAML config file (unknown keys are rejected).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443; port 0 picks a free port, printed as
    /// `listening on ADDR` on stderr).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the database, the bundle store and the generated operator token
    /// (default /var/lib/hoist-coordinator).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL database for the coordinator's state instead of DATA_DIR/hoist.db, as
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB (several replicas may share one); the data
    /// directory still holds the bundle store and the generated operator token.
    #[arg(long, env = "HOIST_DATABASE_URL", hide_env_values = true)]
    pub database: Option<Secret>,
    /// PEM certificate chain; serves HTTPS with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// A host silent this long mid-command has failed, e.g. `10m` (default 10m); agents send
    /// heartbeats at a quarter of it while a command runs.
    #[arg(long, value_parser = super::duration)]
    pub host_lease: Option<std::time::Duration>,
    /// Serve plain HTTP on a non-loopback address. Without it, and without --tls-cert, such
    /// an address serves HTTPS with a certificate generated in DIR/tls on first start.
    #[arg(long)]
    pub insecure_http: bool,
    /// Also accept HTTP/2 with prior knowledge on a plain-HTTP listener (off by default).
    #[arg(long)]
    pub http2_cleartext: bool,
    /// Most connections served at once (default: what the open-file limit allows); more
    /// wait in the listen backlog.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Largest bundle an upload may store, in bytes (default 4 GiB).
    #[arg(long)]
    pub max_bundle_bytes: Option<u64>,
    /// Answer GET /metrics without a token (by default any operator token reads it).
    #[arg(long)]
    pub metrics_public: bool,
    /// Keep pushed bundles in S3-compatible storage under this bucket and key prefix instead
    /// of DIR/bundles (what several replicas share). Endpoint, region and keys come from
    /// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, as for `hoist push --s3`.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub bundle_store: Option<String>,
    /// This is the only replica on its database: bundles may stay in DIR/bundles even on
    /// PostgreSQL.
    #[arg(long)]
    pub single_replica: bool,
    /// The dashboard's address as webhook receivers should follow it, e.g.
    /// https://hoist.example.com:8443 (default: the scheme and the address listened on).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Print the SHA-256 fingerprint of the server's TLS certificate (the configured one, or
    /// the one generated in the data directory), as agents pin it.
    Fingerprint(FingerprintArgs),
    /// Apply the database migrations this build has and the database lacks, then exit
    /// (`hoist server` applies them at start too); a database newer than this build is
    /// refused, untouched.
    Migrate(MigrateArgs),
    /// List the coordinators running on the database: id, host, pid, address, start and
    /// last heartbeat (a replica silent for 15 s is not listed). Opens the database as
    /// `hoist server` does, applying missing migrations.
    Replicas(ReplicasArgs),
}

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    #[command(flatten)]
    pub db: MigrateArgs,
    /// Print the replicas as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// YAML config file of the server (for its data_dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The server's data directory (default /var/lib/hoist-coordinator).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server's PostgreSQL database (postgres://USER@HOST:PORT/DB) instead of the data
    /// directory's SQLite file.
    #[arg(long, env = "HOIST_DATABASE_URL", hide_env_values = true)]
    pub database: Option<Secret>,
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// YAML config file of the server (for its data_dir and tls.cert).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The server's data directory (default /var/lib/hoist-coordinator).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A PEM certificate to read instead.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
}

pub async fn run(args: ServerArgs, cancel: CancellationToken) -> Result<ExitCode> {
    match args.command {
        Some(ServerCommand::Fingerprint(f)) => return fingerprint(f),
        Some(ServerCommand::Migrate(m)) => return migrate(m).await,
        Some(ServerCommand::Replicas(r)) => return replicas(r).await,
        None => {}
    }
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let env_token = std::env::var("HOIST_OPERATOR_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim()));
    let config = ServerConfig::resolve(
        file,
        Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            database: args.database,
            operator_token: env_token,
            host_lease: args.host_lease,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            insecure_http: args.insecure_http,
            http2_cleartext: args.http2_cleartext,
            max_connections: args.max_connections,
            max_bundle_bytes: args.max_bundle_bytes,
            metrics_public: args.metrics_public,
            bundle_store: args.bundle_store,
            single_replica: args.single_replica,
            public_url: args.public_url,
        },
    )?;
    crate::server::run(config, cancel).await?;
    Ok(ExitCode::SUCCESS)
}

/// The data directory and database a server with these arguments uses.
fn database_of(args: MigrateArgs) -> Result<(PathBuf, Option<DatabaseUrl>)> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let database = crate::config::database_url(args.database.as_ref(), file.database.as_ref())?;
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
    Ok((data_dir, database))
}

async fn replicas(args: ReplicasArgs) -> Result<ExitCode> {
    let (data_dir, database) = database_of(args.db)?;
    let store = crate::server::open_store(&data_dir, database.as_ref()).await?;
    let rows =
        tokio::task::spawn_blocking(move || crate::service::live_replicas(&*store)).await??;
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "host": r.host, "pid": r.pid, "listen": r.listen,
                    "started_ms": r.started_ms, "beat_ms": r.beat_ms,
                })
            })
            .collect();
        super::print_json(&serde_json::json!({ "replicas": list }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                super::esc(&r.id),
                super::esc(&r.host),
                r.pid.to_string(),
                super::esc(&r.listen),
                super::when(r.started_ms),
                super::when(r.beat_ms),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table(
            &["ID", "HOST", "PID", "LISTEN", "STARTED", "LAST BEAT"],
            &table
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let (data_dir, database) = database_of(args)?;
    crate::server::open_store(&data_dir, database.as_ref()).await?;
    match database {
        Some(url) => println!(
            "database {url} is at schema version {}",
            crate::store::postgres::SCHEMA_VERSION
        ),
        None => println!(
            "database {} is at schema version {}",
            data_dir.join("hoist.db").display(),
            crate::store::sqlite::SCHEMA_VERSION
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn fingerprint(args: FingerprintArgs) -> Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let cert = match args.tls_cert.or(file.tls.map(|t| t.cert)) {
        Some(cert) => cert,
        None => {
            let data_dir = args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
            crate::tls::generated_cert_path(&data_dir)
        }
    };
    println!("{}", crate::tls::certificate_fingerprint(&cert)?);
    Ok(ExitCode::SUCCESS)
}
