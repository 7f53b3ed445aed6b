//! Memory per held long poll: how much `hoist server`'s RSS grows for each more host whose
//! poll it holds, over plain HTTP and over HTTPS, on SQLite and (where PostgreSQL is
//! installed: the test harness's cluster) on PostgreSQL, one replica. Baseline: the same procedure against a
//! bare hyper server in this run (`hoist-bench server`, [`floor`]): one tokio runtime, the
//! same hyper connection settings, a handler that reads the body and holds the request
//! 30 s. That is what a held request costs before anything of Hoist's own. It runs on this
//! binary's allocator (mimalloc), told to hand freed pages back at once.
//!
//! Procedure, per server: `hosts` simulated hosts registered; the first half start
//! long-polling, 1 000 more a second (`wait_secs` 30, re-polling at once, each over its own
//! connection), RSS is
//! read once the server holds them all and RSS is steady; then the second half, and RSS
//! again. The figure is the growth between the two readings over the second half's count,
//! so start-up and fixed costs cancel out. `HOIST_BENCH_SERVER_PREFIX` (a command line, such
//! as `heaptrack`) runs `hoist server` under a profiler to see where the bytes go.
//!
//! Not here: latency (`capacity`), or a claim about the kernel's socket buffers (not in RSS).

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_tests::coordinator::{Launch, Server, OPERATOR_TOKEN};

use crate::capacity::{clients, register, sim_name, HostId, Sim, HOSTS_PER_CLIENT};
use crate::procs::{rss_bytes, Bins};
use crate::report::{Measurement, Stat};

pub mod floor;

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub hosts: usize,
    pub runs: usize,
}

const KIB: f64 = 1024.0;

/// How fast simulated hosts start polling.
const POLLS_PER_SECOND: usize = 1000;

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert.pem, key.pem).
fn certificate(dir: &Path) -> anyhow::Result<(String, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .context("generating a certificate")?;
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).context("writing cert.pem")?;
    std::fs::write(&k, cert.signing_key.serialize_pem()).context("writing key.pem")?;
    Ok((c.display().to_string(), k.display().to_string()))
}

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<Vec<Measurement>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let (cert, key) = certificate(&work.join("tls"))?;
    let half = p.hosts / 2;
    let postgres = hoist_tests::postgres::available();
    let mut out = Vec::new();
    for tls in [false, true] {
        let scheme = if tls { "https" } else { "http" };
        let mut hoist = Vec::new();
        let mut hoist_pg = Vec::new();
        let mut floor = Vec::new();
        for run in 0..p.runs {
            let dir = work.join(format!("held-{scheme}-{run}"));
            let tls_args = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
            let extra: &[&str] = if tls { &tls_args } else { &[] };
            let kib =
                runtime.block_on(hoist_server(bins, &dir.join("hoist"), extra, p.hosts, tls))?;
            eprintln!("held polls ({scheme}): hoist server {kib:.2} KiB per held poll");
            hoist.push(kib);
            if postgres {
                let db = hoist_tests::postgres::try_database()?;
                let mut flags = vec!["--database", db.url.as_str(), "--single-replica"];
                flags.extend(extra);
                let kib = runtime.block_on(hoist_server(
                    bins,
                    &dir.join("hoist-pg"),
                    &flags,
                    p.hosts,
                    tls,
                ))?;
                eprintln!(
                    "held polls ({scheme}): hoist server on PostgreSQL {kib:.2} KiB per held poll"
                );
                hoist_pg.push(kib);
            }
            let me = std::env::current_exe().context("locating hoist-bench")?;
            let server = Server::try_launch(
                &dir.join("floor"),
                Launch {
                    program: Some(&me),
                    extra,
                    // Freed pages leave RSS at once, as with glibc in `hoist server`.
                    env: &[
                        ("MIMALLOC_PURGE_DELAY", "0"),
                        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
                    ],
                    log_level: "warn",
                    ..Launch::default()
                },
            )?;
            let kib = runtime.block_on(per_held_poll(&server, p.hosts, tls, false))?;
            eprintln!("held polls ({scheme}): bare hyper {kib:.2} KiB per held poll");
            floor.push(kib);
        }
        let floor = Stat::of(&floor).context("no baseline samples")?;
        let backends = [("", "SQLite", hoist), ("postgres.", "PostgreSQL", hoist_pg)];
        for (prefix, backend, samples) in backends {
            if samples.is_empty() {
                continue;
            }
            let hoist = Stat::of(&samples).context("no samples")?;
            let met = hoist.max < 16.0;
            out.push(
                Measurement::new(
                    &format!("coordinator.{prefix}held_poll_{scheme}_kib"),
                    "KiB",
                    hoist,
                    format!(
                        "hoist server on {backend}: VmRSS growth per held long poll over {scheme} ({half} hosts polling, then {half} more, each on its own connection)"
                    ),
                )
                .baseline(
                    "a bare hyper server holding the same requests",
                    floor.clone(),
                    None,
                )
                .target("max < 16 KiB", met),
            );
        }
    }
    Ok(out)
}

/// A `hoist server` with `extra` flags in `dir`, measured as [`per_held_poll`] says.
async fn hoist_server(
    bins: &Bins,
    dir: &Path,
    extra: &[&str],
    hosts: usize,
    tls: bool,
) -> anyhow::Result<f64> {
    let prefix = std::env::var("HOIST_BENCH_SERVER_PREFIX").unwrap_or_default();
    let prefix: Vec<&str> = prefix.split_whitespace().collect();
    let server = tokio::task::block_in_place(|| {
        Server::try_launch(
            dir,
            Launch {
                program: Some(&bins.hoist),
                extra,
                prefix: &prefix,
                log_level: "warn",
                env_remove: &["RUST_LOG"],
                ..Launch::default()
            },
        )
    })?;
    let kib = per_held_poll(&server, hosts, tls, true).await?;
    if !prefix.is_empty() {
        tokio::task::block_in_place(|| stop_under_prefix(&server));
    }
    drop(server);
    Ok(kib)
}

/// SIGTERM to the `hoist` process the prefix command started (the server under a
/// profiler), then a pause while the profiler writes its data.
fn stop_under_prefix(server: &Server) {
    let pid = server.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let is_hoist = |c: &i32| {
        std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "hoist")
    };
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter(is_hoist)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    // Until the profiler has written its data and exited (a zombie: nobody reaped it yet).
    let limit = Instant::now() + Duration::from_secs(300);
    while Instant::now() < limit {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_none_or(|rest| rest.trim_start().starts_with('Z'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server's RSS growth per held poll, in KiB, as the module doc describes. `register`:
/// the hosts register first (the real server); otherwise they poll with made-up ids.
async fn per_held_poll(
    server: &Server,
    hosts: usize,
    tls: bool,
    register_first: bool,
) -> anyhow::Result<f64> {
    let url = server.url.clone();
    let clients = clients(hosts, tls)?;
    let ids = if register_first {
        let token = registration_token(&clients[0], &url).await?;
        let mut ids = Vec::with_capacity(hosts);
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..hosts {
            if pending.len() >= 64 {
                if let Some(r) = pending.join_next().await {
                    ids.push(r.context("registration task")??);
                }
            }
            let client = clients[i / HOSTS_PER_CLIENT].clone();
            let (url, token) = (url.clone(), token.clone());
            pending
                .spawn(async move { register(&client, &url, &token, &sim_name(i), "sim").await });
        }
        while let Some(r) = pending.join_next().await {
            ids.push(r.context("registration task")??);
        }
        ids
    } else {
        (0..hosts).map(|i| HostId::made_up(&sim_name(i))).collect()
    };
    let poll_url = reqwest::Url::parse(&format!("{url}/v1/hosts/poll"))
        .with_context(|| format!("the server's address {url}"))?;
    let errors = Arc::new(AtomicU64::new(0));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sims = tokio::task::JoinSet::new();
    let half = hosts / 2;
    let pid = server.pid();
    let port = server
        .authority()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .context("the server's port")?;
    let mut readings = Vec::new();
    for (i, host) in ids.into_iter().enumerate() {
        let sim = Sim {
            client: clients[i / HOSTS_PER_CLIENT].clone(),
            poll_url: poll_url.clone(),
            host,
            name: sim_name(i),
            role: "sim".into(),
            errors: errors.clone(),
        };
        let tx = tx.clone();
        sims.spawn(async move { sim.run(tx).await });
        // Polls start at POLLS_PER_SECOND, as a fleet's polls come in over time, rather
        // than all in one instant (whose burst of queued work would be measured too).
        if (i + 1) % (POLLS_PER_SECOND / 10) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if i + 1 == half || i + 1 == hosts {
            readings.push(steady_rss(pid, port, i + 1).await?);
        }
    }
    sims.abort_all();
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    if errors > 0 {
        eprintln!("held polls: {errors} poll(s) failed against {url}");
    }
    let [first, second] = readings[..] else {
        bail!("expected two readings");
    };
    Ok((second as f64 - first as f64) / KIB / (hosts - half) as f64)
}

/// The server's RSS once `connections` connections to `port` are established and RSS has
/// stopped moving (two readings 500 ms apart within 0.2 %), up to 60 s.
async fn steady_rss(pid: u32, port: u16, connections: usize) -> anyhow::Result<u64> {
    let limit = Instant::now() + Duration::from_secs(60);
    while established(port)? < connections {
        if Instant::now() > limit {
            bail!("fewer than {connections} connections to port {port} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last = rss_bytes(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_bytes(pid)?;
        if now.abs_diff(last) as f64 <= last as f64 * 0.002 || Instant::now() > limit {
            eprintln!(
                "held polls: {connections} connections, RSS {} KiB, {} threads",
                now / 1024,
                threads(pid)
            );
            return Ok(now);
        }
        last = now;
    }
}

/// The process's thread count, 0 when unknown.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Established TCP connections whose local port is `port` (the server's side).
fn established(port: u16) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let want = format!(":{port:04X}");
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count())
}

async fn registration_token(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let resp = client
        .post(format!("{url}/v1/registration-tokens"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .context("creating a registration token")?;
    if !resp.status().is_success() {
        bail!("creating a registration token: {}", resp.status());
    }
    let t: hoist_protocol::operator::RegistrationToken =
        resp.json().await.context("the registration token")?;
    Ok(t.token)
}
