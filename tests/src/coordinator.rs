//! The one way tests and benchmarks start the real `hoist server`: a child process on a
//! loopback port (port 0 unless told otherwise), its address read from its `listening on ADDR`
//! line, its log kept in memory (and echoed on stderr when asked), killed on drop.
//!
//! It only starts, watches and stops the process. What a caller does with the server (the
//! operator CLI, simulated hosts, agents) lives with the caller: `fleet::Coordinator` for the
//! end-to-end tests, the coordinator's own `tests/it/support.rs`, `hoist-bench`'s `procs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The operator token a started server accepts unless [`Launch::token`] says otherwise.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long a start on a fixed address is retried while the address is still taken (a
/// server stopped a moment ago).
const ADDRESS_RETRY: Duration = Duration::from_secs(10);

/// How [`Server::launch`] starts the server.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The `hoist` binary; `None` for the one this workspace built ([`crate::bin`]).
    pub program: Option<&'a Path>,
    /// `--listen`: `127.0.0.1:0` for a free port, or the address of a server stopped
    /// earlier (then a start that finds it still taken is retried for 10 s).
    pub listen: &'a str,
    /// More `hoist server` flags, such as `--host-lease 2s`.
    pub extra: &'a [&'a str],
    /// `HOIST_OPERATOR_TOKEN`; `None` starts it without one.
    pub token: Option<&'a str>,
    /// A command that runs the server (`prlimit --nofile=...`, `sh -c '...; exec "$0" "$@"'`).
    pub prefix: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    pub env_remove: &'a [&'a str],
    /// `HOIST_LOG`.
    pub log_level: &'a str,
    /// Copy each log line to this process's stderr as `server: LINE` (test logs).
    pub echo: bool,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            program: None,
            listen: "127.0.0.1:0",
            extra: &[],
            token: Some(OPERATOR_TOKEN),
            prefix: &[],
            env: &[],
            env_remove: &[],
            log_level: "info",
            echo: false,
        }
    }
}

/// A running `hoist server`, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    pub url: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// `hoist server --listen 127.0.0.1:0 --data-dir DATA_DIR` with the default token.
    pub fn start(data_dir: &Path) -> Server {
        Server::launch(data_dir, Launch::default())
    }

    /// Starts the server as `how` says; fails the test when it does not come up.
    pub fn launch(data_dir: &Path, how: Launch<'_>) -> Server {
        Server::try_launch(data_dir, how).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts the server as `how` says, or says why it did not come up (for callers that
    /// are not tests, such as the benchmarks).
    pub fn try_launch(data_dir: &Path, how: Launch<'_>) -> anyhow::Result<Server> {
        let fixed_port = !how.listen.ends_with(":0");
        let t0 = Instant::now();
        loop {
            match Server::spawn(data_dir, &how)? {
                Ok(server) => return Ok(server),
                Err(_) if fixed_port && t0.elapsed() < ADDRESS_RETRY => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => bail!(
                    "hoist server on {} printed no `listening on` line:\n{log}",
                    how.listen
                ),
            }
        }
    }

    /// One attempt: the server, or its log when it exited (or stayed silent) before
    /// listening.
    fn spawn(data_dir: &Path, how: &Launch<'_>) -> anyhow::Result<Result<Server, String>> {
        let program = match how.program {
            Some(p) => p.to_path_buf(),
            None => crate::bin("hoist"),
        };
        let mut cmd = match how.prefix.split_first() {
            Some((first, args)) => {
                let mut c = Command::new(first);
                c.args(args).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(["server", "--listen", how.listen, "--data-dir"])
            .arg(data_dir)
            .args(how.extra)
            .env_remove("HOIST_OPERATOR_TOKEN")
            .env("HOIST_LOG", how.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for k in how.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(how.env.iter().copied());
        if let Some(t) = how.token {
            cmd.env("HOIST_OPERATOR_TOKEN", t);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            let echo = how.echo;
            // Drains the pipe for the server's whole life, so it never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if echo {
                        eprintln!("server: {line}");
                    }
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(START_LIMIT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Ok(Err(log));
            }
        };
        let addr: std::net::SocketAddr = addr
            .parse()
            .with_context(|| format!("hoist server's listening address {addr:?}"))?;
        // The server serves TLS when given a certificate, or off loopback unless told not to.
        let listen: std::net::SocketAddr = how.listen.parse().unwrap_or(addr);
        let tls = how.extra.contains(&"--tls-cert")
            || (!listen.ip().is_loopback() && !how.extra.contains(&"--insecure-http"));
        let scheme = if tls { "https" } else { "http" };
        // A wildcard bind is reached through loopback.
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        Ok(Ok(Server {
            child,
            url: format!("{scheme}://{host}:{}", addr.port()),
            data_dir: data_dir.to_owned(),
            log,
        }))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `HOST:PORT` to connect to.
    pub fn authority(&self) -> String {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, a)| a)
            .to_owned()
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The server's resident set size, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// SIGTERM, then waits for a clean exit (failing the test on another exit or after 20 s);
    /// returns how long the exit took. Async, so an async test's runtime keeps running (the
    /// server's clients may be tasks on it) while it waits.
    pub async fn stop(&mut self) -> Duration {
        let start = Instant::now();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "server exited with {status}");
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("server did not stop within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it with `signal` (SIGKILL: a crash; SIGTERM: a clean stop) and waits for it,
    /// whatever its exit.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) {
        self.signal(signal);
        let _ = self.child.wait();
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
