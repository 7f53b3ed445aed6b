//! A real PostgreSQL for tests: one cluster per test binary, started on first use
//! (`initdb` into a scratch directory, `pg_ctl start` on a loopback port; as the `postgres`
//! user when the tests run as root, since PostgreSQL refuses to run as root), and a fresh
//! database for each test ([`database`]). `need_postgres` is how a test requires it.
//!
//! The cluster outlives no test binary: a small watchdog process reads a pipe this process
//! holds open, and when the binary exits (however it exits, `kill -9` included) the pipe
//! closes and the watchdog stops the cluster and removes its directory. Not here: anything
//! about Hoist's schema (the coordinator migrates its own databases).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context};

/// The superuser the cluster is made with (trust authentication, loopback only).
pub const USER: &str = "hoist";

/// Fails the calling test unless PostgreSQL's server binaries are installed (Debian's
/// `postgresql` package, as CI installs it) and, when running as root, the `postgres`
/// user exists. Returns the directory of `initdb` and `pg_ctl`.
#[track_caller]
pub fn need_postgres() -> PathBuf {
    let bin = bin_dir().unwrap_or_else(|| {
        panic!(
            "this test needs PostgreSQL: install Debian's postgresql package (CI's apt line does), \
             or set HOIST_TEST_PGBIN to the directory holding initdb and pg_ctl"
        )
    });
    if nix::unistd::Uid::effective().is_root() {
        assert!(
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .is_some(),
            "this test needs the postgres user (PostgreSQL refuses to run as root): \
             install the postgresql package, which makes it"
        );
    }
    bin
}

/// Whether [`need_postgres`] would pass: PostgreSQL's server binaries are installed and,
/// when running as root, the `postgres` user exists. For a benchmark that measures
/// PostgreSQL only where it can.
pub fn available() -> bool {
    bin_dir().is_some()
        && (!nix::unistd::Uid::effective().is_root()
            || nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .is_some())
}

/// A database of its own for the calling test, in this binary's cluster (started on first
/// use); fails the test when the cluster cannot start.
pub fn database() -> TestDatabase {
    need_postgres();
    try_database().unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`database`] as a result, for a caller that reports errors rather than panics (the
/// benchmark).
pub fn try_database() -> anyhow::Result<TestDatabase> {
    let bin = bin_dir().context(
        "PostgreSQL is not installed (Debian's postgresql package), nor HOIST_TEST_PGBIN set",
    )?;
    let cluster = {
        // One start at a time: tests asking together share the first one's cluster.
        static STARTING: Mutex<()> = Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if CLUSTER.get().is_none() {
            let _ = CLUSTER.set(Cluster::start(&bin)?);
        }
        CLUSTER.get().context("the test cluster")?
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let out = Command::new(bin.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            USER,
            &name,
        ])
        .output()
        .context("running createdb")?;
    if !out.status.success() {
        bail!("createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(TestDatabase {
        url: format!("postgres://{USER}@127.0.0.1:{}/{name}", cluster.port),
        port: cluster.port,
        name,
        bin,
    })
}

/// One test's database: its URL for `hoist server --database` or a store.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub url: String,
    pub name: String,
    pub port: u16,
    bin: PathBuf,
}

impl TestDatabase {
    /// Runs SQL on the database with `psql` (stops at the first error); its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", &self.name, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

struct Cluster {
    port: u16,
    /// The watchdog's stdin: closed when this process exits, which stops the cluster.
    _watchdog: Mutex<ChildStdin>,
}

impl Cluster {
    fn start(bin: &Path) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("hoist-test-pg-")
            .tempdir()
            .context("creating the cluster's directory")?
            .keep();
        let as_root = nix::unistd::Uid::effective().is_root();
        if as_root {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .context("no postgres user")?;
            nix::unistd::chown(&dir, Some(pg.uid), Some(pg.gid))
                .with_context(|| format!("giving {} to postgres", dir.display()))?;
        }
        let watchdog = watchdog(bin, &dir, as_root)?;
        let data = dir.join("data");
        run(pg_command(bin, "initdb", as_root)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "--no-sync"]))?;
        // A free port, taken again by PostgreSQL a moment later; retried if another process
        // took it in between.
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c max_connections=300",
                dir.display()
            );
            let out = pg_command(bin, "pg_ctl", as_root)
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(dir.join("log"))
                .args(["-w", "start"])
                .output()
                .context("running pg_ctl start")?;
            if out.status.success() {
                return Ok(Cluster {
                    port,
                    _watchdog: Mutex::new(watchdog),
                });
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
        }
        bail!("PostgreSQL did not start in {}:\n{last}", dir.display())
    }
}

/// `program` from `bin`, as the postgres user when running as root.
fn pg_command(bin: &Path, program: &str, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A shell that waits for its stdin to close (this process's exit), then stops the cluster
/// at once and removes its directory.
fn watchdog(bin: &Path, dir: &Path, as_root: bool) -> anyhow::Result<ChildStdin> {
    let stop = if as_root {
        "runuser -u postgres -- \"$1/pg_ctl\" -D \"$2/data\" -m immediate stop"
    } else {
        "\"$1/pg_ctl\" -D \"$2/data\" -m immediate stop"
    };
    let script = format!("read _ignored; {stop}; rm -rf \"$2\"");
    let mut child = Command::new("sh")
        .args(["-c", &script, "pg-watchdog"])
        .arg(bin)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the cluster's watchdog")?;
    let mut stdin = child.stdin.take().context("the watchdog's stdin")?;
    // Nothing is ever written; a flush checks the pipe is open.
    stdin.flush()?;
    Ok(stdin)
}

/// Where `initdb` and `pg_ctl` are: `HOIST_TEST_PGBIN`, or the newest
/// `/usr/lib/postgresql/VERSION/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOIST_TEST_PGBIN").map(PathBuf::from) {
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// S3-compatible storage (s3s-fs on loopback, on a thread of its own) for the pushed
/// bundles of replicas on one database: what `hoist server --database` wants beside it,
/// since a replica on PostgreSQL with bundles in its own data directory refuses to start.
pub struct SharedBundles {
    endpoint: String,
}

impl SharedBundles {
    /// The bucket under `root`, served until this process exits.
    pub fn start(root: &Path) -> SharedBundles {
        std::fs::create_dir_all(root.join(BUNDLE_BUCKET)).expect("creating the bundle bucket");
        let root = root.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for s3s-fs");
            rt.block_on(async move {
                let addr = crate::servers::start_s3s(&root, false).await;
                let _ = tx.send(addr);
                std::future::pending::<()>().await;
            });
        });
        let addr = rx.recv().expect("s3s-fs started");
        SharedBundles {
            endpoint: format!("http://{addr}"),
        }
    }

    /// The `hoist server` flags that keep bundles there.
    pub fn flags(&self) -> [&'static str; 2] {
        ["--bundle-store", "s3://replica-bundles/hoist"]
    }

    /// The `AWS_*` variables `--bundle-store` reads for it.
    pub fn env(&self) -> [(&'static str, &str); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", crate::servers::S3_REGION),
            ("AWS_ACCESS_KEY_ID", crate::servers::S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", crate::servers::S3_SECRET_KEY),
        ]
    }
}

const BUNDLE_BUCKET: &str = "replica-bundles";
