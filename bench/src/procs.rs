//! The processes under measurement: the real `hoist server` (started the way the tests start
//! it, by `hoist_tests::coordinator`), real `hoist-agent run` daemons, the operator CLI, and
//! what `/proc` says about a process (RSS, CPU time).
//!
//! Every child is killed when its handle drops, so an early error leaves nothing running.
//! This is not a process supervisor: no restarts, no log handling beyond draining pipes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_protocol::operator::{Deployment, DeploymentState, HostList};
use hoist_tests::coordinator::{Launch, Server};

pub const OPERATOR_TOKEN: &str = "bench-operator-token";

/// Where `hoist` and `hoist-agent` are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub hoist: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    /// `dir`, else the directory of this executable (cargo puts every binary of a profile
    /// there).
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .context("locating hoist-bench")?
                .parent()
                .map(Path::to_path_buf)
                .context("hoist-bench has no parent directory")?,
        };
        let bins = Bins {
            hoist: dir.join("hoist"),
            agent: dir.join("hoist-agent"),
        };
        for b in [&bins.hoist, &bins.agent] {
            if !b.is_file() {
                bail!(
                    "{} not found: build it (cargo build --release --bins) or pass --bin-dir",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A running `hoist server` (started by the tests' `hoist_tests::coordinator`, killed on
/// drop) and the operator CLI against it.
pub struct Coordinator {
    server: Server,
    pub url: String,
    pub data_dir: PathBuf,
    bins: Bins,
}

impl Coordinator {
    pub fn start(bins: &Bins, data_dir: &Path) -> anyhow::Result<Coordinator> {
        Coordinator::start_with(bins, data_dir, &[])
    }

    /// [`Coordinator::start`] with more `hoist server` flags (`--database URL`).
    pub fn start_with(bins: &Bins, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Coordinator> {
        Coordinator::start_env(bins, data_dir, extra, &[])
    }

    /// [`Coordinator::start_with`] with more environment variables (`AWS_*` for
    /// `--bundle-store`).
    pub fn start_env(
        bins: &Bins,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Coordinator> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let server = Server::try_launch(
            data_dir,
            Launch {
                program: Some(&bins.hoist),
                token: Some(OPERATOR_TOKEN),
                log_level: "warn",
                env_remove: &["RUST_LOG"],
                extra,
                env,
                ..Launch::default()
            },
        )?;
        Ok(Coordinator {
            url: server.url.clone(),
            data_dir: data_dir.to_path_buf(),
            server,
            bins: bins.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Runs the operator CLI against this server; its trimmed stdout, or an error with stderr.
    pub fn hoist(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bins.hoist)
            .args(args)
            .env("HOIST_SERVER", &self.url)
            .env("HOIST_TOKEN", OPERATOR_TOKEN)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running hoist {args:?}"))?;
        if !out.status.success() {
            bail!(
                "hoist {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// An application, an AllAtOnce group selecting `role=ROLE`, a registration token and a
    /// pushed revision of `bundle_dir`: (token, revision id).
    pub fn setup(&self, role: &str, bundle_dir: &Path) -> anyhow::Result<(String, String)> {
        self.hoist(&["app", "create", "bench"])?;
        self.hoist(&[
            "group",
            "create",
            "fleet",
            "--app",
            "bench",
            "--tag",
            &format!("role={role}"),
            "--config",
            "AllAtOnce",
        ])?;
        let token = self.hoist(&["token", "create"])?;
        let dir = bundle_dir.to_str().context("bundle path is not UTF-8")?;
        let revision = self.hoist(&["push", dir, "--app", "bench"])?;
        Ok((token, revision))
    }

    /// `hoist deploy create`: the deployment id and the moment the command returned.
    pub fn deploy(&self, revision: &str) -> anyhow::Result<(String, Instant, u64)> {
        let id = self.hoist(&[
            "deploy",
            "create",
            "--app",
            "bench",
            "--group",
            "fleet",
            "--revision",
            revision,
        ])?;
        Ok((id, Instant::now(), now_ms()))
    }
}

impl Coordinator {
    /// How many hosts the coordinator knows and counts as online.
    pub fn online_hosts(&self) -> anyhow::Result<usize> {
        let text = self.hoist(&["hosts", "list", "--json"])?;
        let list: HostList = serde_json::from_str(&text).context("parsing hosts list --json")?;
        Ok(list.hosts.iter().filter(|h| h.online).count())
    }

    /// `hoist deploy status ID --json`.
    pub fn deployment(&self, id: &str) -> anyhow::Result<Deployment> {
        let text = self.hoist(&["deploy", "status", id, "--json"])?;
        serde_json::from_str(&text).context("parsing deploy status --json")
    }

    /// The deployment's state as text (`succeeded`, ...).
    pub fn deployment_state(&self, id: &str) -> anyhow::Result<String> {
        Ok(self.deployment(id)?.state.to_string())
    }

    /// Waits until deployment `id` ends; fails unless it succeeded.
    pub fn wait_succeeded(&self, id: &str, limit: Duration) -> anyhow::Result<Deployment> {
        let t0 = Instant::now();
        loop {
            let d = self.deployment(id)?;
            if d.state.is_terminal() {
                if d.state != DeploymentState::Succeeded {
                    bail!("deployment {id} ended {}: {:?}", d.state, d.message);
                }
                return Ok(d);
            }
            if t0.elapsed() > limit {
                bail!("deployment {id} still {} after {limit:?}", d.state);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A bundle with an appspec and no files or hooks: the cheapest real deployment, so what is
/// measured is the coordination around it.
pub fn empty_bundle(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("appspec.yml"), "version: 0.0\nos: linux\n")
        .with_context(|| format!("writing {}/appspec.yml", dir.display()))?;
    Ok(())
}

/// A running `hoist-agent run` daemon with its own state directory, SIGTERM on drop.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn start(
        bins: &Bins,
        dir: &Path,
        name: &str,
        coordinator: &str,
        token: &str,
        role: &str,
    ) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let state_dir = dir.join("state");
        let config = dir.join("agent.yaml");
        // Poll settings are the defaults a production agent has.
        std::fs::write(
            &config,
            format!(
                "coordinator:\n  url: {coordinator}\n  registration_token: {token}\nhost:\n  name: {name}\n  tags: {{role: {role}}}\nstate_dir: {}\n",
                state_dir.display()
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("agent.log");
        let child = hoist_tests::fleet::spawn_agent(&bins.agent, None, &config, &log, "warn")
            .with_context(|| format!("starting {}", bins.agent.display()))?;
        Ok(Agent { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds since the Unix epoch (the clock agents stamp their reports with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Resident set size of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// Peak resident set size of a process, in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}

/// User plus system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("malformed {path}"))
    };
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Runs a command to completion and returns how long it took; fails on a non-zero exit.
pub fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !f()? {
        if t0.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
