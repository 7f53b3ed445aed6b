//! Coordinator capacity: a load generator simulating N hosts that register, long-poll
//! (`wait_secs` 30, the agent's default) and report like agents do, each over its own
//! kept-alive HTTP/1.1 connection, against a real `hoist server`. For each fleet size it
//! measures, per deployment to all hosts (AllAtOnce), the assignment latency: the time from
//! starting `hoist deploy create` to each simulated host holding its command, plus the
//! server's CPU and RSS. It counts from the start of the CLI, not from its return, because
//! hosts here hold their commands within milliseconds, often before the CLI process has
//! exited; the figure is thus an upper bound that includes one CLI round trip.
//!
//! The baseline is the same procedure with a single simulated host in the same invocation.
//! The simulated hosts report five messages per command (DownloadBundle and Install started
//! and ended, then Completed) and run nothing; they share this machine's two cores with the
//! server, which a real fleet would not. Connections come from several loopback source
//! addresses (127.0.0.2, ...) so 20 000 of them do not exhaust one address's ephemeral ports.
//! The generator runs on mimalloc (`hoist` itself on glibc): with glibc's malloc it took
//! more of the cores the servers need.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_protocol::agent::{
    PollRequest, PollResponse, RegisterRequest, RegisterResponse, Report, ReportAck,
};
use hoist_protocol::HOST_ID_HEADER;
use hoist_tests::reports;
use tokio::sync::mpsc;

use crate::procs::{cpu_time, empty_bundle, peak_rss_bytes, rss_bytes, Bins, Coordinator};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone)]
pub struct Params {
    pub fleets: Vec<usize>,
    pub deployments: usize,
    /// Replica counts run on PostgreSQL, each fleet on each.
    pub pg_replicas: Vec<usize>,
}

const MB: f64 = 1024.0 * 1024.0;
/// Hosts per loopback source address.
pub(crate) const HOSTS_PER_CLIENT: usize = 5000;

/// What one fleet size gave.
pub(crate) struct Run {
    pub(crate) hosts: usize,
    pub(crate) pickup: Vec<f64>,
    all_assigned: Vec<f64>,
    cpu_busy: Vec<f64>,
    cpu_idle: f64,
    rss: Vec<f64>,
    peak_rss: f64,
    /// Seconds from deploy create until every host's Completed was acknowledged, for the
    /// deployments that were waited for.
    pub(crate) completed: Vec<f64>,
    /// Reports acknowledged per second, from the first host holding its command to the last
    /// Completed acknowledged, for the deployments that were waited for.
    pub(crate) reports_per_sec: Vec<f64>,
    pub(crate) register_secs: f64,
    pub(crate) errors: u64,
}

/// Where the coordinator keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// One `hoist server` on SQLite in its data directory.
    Sqlite,
    /// `replicas` `hoist server` processes on one PostgreSQL database (the test harness's
    /// cluster); host `i` talks to replica `i % replicas`, deployments are created through
    /// the first.
    Postgres { replicas: usize },
}

/// Reports each simulated host sends per command.
const REPORTS_PER_COMMAND: f64 = 5.0;

/// The measurements, notes, and whether PostgreSQL was measured (only where it is installed).
pub fn run(
    bins: &Bins,
    work: &Path,
    p: &Params,
) -> anyhow::Result<(Vec<Measurement>, Vec<String>, bool)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let base = runtime.block_on(fleet(
        bins,
        &work.join("capacity-1"),
        1,
        p.deployments,
        Backend::Sqlite,
    ))?;
    let base_pickup = Stat::of(&base.pickup).context("no baseline samples")?;
    let base_cpu = Stat::of(&base.cpu_busy).context("no baseline samples")?;
    let base_rss = Stat::of(&base.rss).context("no baseline samples")?;
    let mut out = Vec::new();
    let mut sqlite = Vec::new();
    for &n in &p.fleets {
        let deployments = p.deployments;
        let r = runtime.block_on(fleet(
            bins,
            &work.join(format!("capacity-{n}")),
            n,
            deployments,
            Backend::Sqlite,
        ))?;
        let pickup = Stat::of(&r.pickup).context("no pickup samples")?;
        let met = pickup.p99 < 2.0;
        let ratio = Stat::of(&[pickup.p99 / base_pickup.p99]);
        out.push(
            Measurement::new(
                &format!("coordinator.hosts_{n}.pickup_seconds"),
                "s",
                pickup,
                format!(
                    "deploy create started -> simulated host holds its command; {} simulated hosts long-polling, {} deployment(s); registration took {:.1} s; {} request error(s); ratio is p99 over the baseline's p99",
                    r.hosts, deployments, r.register_secs, r.errors
                ),
            )
            .baseline("the same with 1 simulated host", base_pickup.clone(), ratio)
            .target("p99 < 2 s", met),
        );
        out.push(
            Measurement::new(
                &format!("coordinator.hosts_{n}.all_assigned_seconds"),
                "s",
                Stat::of(&r.all_assigned).context("no samples")?,
                "deploy create started -> the last host holds its command, per deployment",
            )
            .baseline(
                "the same with 1 simulated host",
                Stat::of(&base.all_assigned).context("no baseline samples")?,
                None,
            ),
        );
        out.push(
            Measurement::new(
                &format!("coordinator.hosts_{n}.server_cpu_percent"),
                "% of one core",
                Stat::of(&r.cpu_busy).context("no samples")?,
                format!(
                    "hoist server CPU from starting deploy create until every host holds its command, per deployment; idle with all polls held: {:.1} %; every host's five reports recorded after: {}",
                    r.cpu_idle,
                    if r.completed.is_empty() {
                        "not waited for".to_string()
                    } else {
                        r.completed.iter().map(|c| format!("{c:.1} s")).collect::<Vec<_>>().join(" / ")
                    }
                ),
            )
            .baseline("the same with 1 simulated host", base_cpu.clone(), None),
        );
        out.push(
            Measurement::new(
                &format!("coordinator.hosts_{n}.server_rss_mib"),
                "MiB",
                Stat::of(&r.rss).context("no samples")?,
                format!(
                    "hoist server VmRSS with every poll held and after each deployment; peak (VmHWM) {:.1} MiB",
                    r.peak_rss
                ),
            )
            .baseline("the same with 1 simulated host", base_rss.clone(), None),
        );
        out.push(Measurement::new(
            &format!("coordinator.hosts_{n}.reports_per_second"),
            "reports/s",
            Stat::of(&r.reports_per_sec).context("no report samples")?,
            "event reports acknowledged per second, first host holding its command -> last Completed acknowledged, per deployment waited for",
        ));
        sqlite.push(r);
    }
    let mut notes = Vec::new();
    let postgres = hoist_tests::postgres::available();
    if postgres {
        for &replicas in &p.pg_replicas {
            for r in &sqlite {
                let pg = runtime.block_on(fleet(
                    bins,
                    &work.join(format!("capacity-pg{replicas}-{}", r.hosts)),
                    r.hosts,
                    p.deployments,
                    Backend::Postgres { replicas },
                ))?;
                out.extend(crate::capacity_pg::measurements(replicas, r, &pg)?);
            }
        }
    } else {
        notes.push(
            "coordinator on PostgreSQL not measured: PostgreSQL is not installed (Debian's postgresql package)".into(),
        );
    }
    Ok((out, notes, postgres))
}

/// HTTP clients for `hosts` simulated hosts: one per loopback source address, each for
/// [`HOSTS_PER_CLIENT`] hosts. `self_signed`: trust any certificate (the bench's own,
/// on loopback).
pub(crate) fn clients(hosts: usize, self_signed: bool) -> anyhow::Result<Vec<reqwest::Client>> {
    (0..hosts.div_ceil(HOSTS_PER_CLIENT))
        .map(|k| {
            reqwest::Client::builder()
                .http1_only()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8)))
                .pool_idle_timeout(None)
                .pool_max_idle_per_host(usize::MAX)
                .timeout(Duration::from_secs(90))
                .danger_accept_invalid_certs(self_signed)
                .build()
                .context("building an HTTP client")
        })
        .collect()
}

/// What simulated hosts tell the driver.
pub(crate) enum Event {
    /// A host holds the command of this deployment, from the coordinator on this port.
    Picked(String, Instant, Option<u16>),
    /// A host's Completed report was acknowledged.
    Done(String),
}

async fn fleet(
    bins: &Bins,
    work: &Path,
    hosts: usize,
    deployments: usize,
    backend: Backend,
) -> anyhow::Result<Run> {
    eprintln!("coordinator ({backend:?}): {hosts} simulated host(s)");
    let replicas: Vec<Coordinator> = match backend {
        Backend::Sqlite => vec![Coordinator::start(bins, &work.join("coordinator"))?],
        Backend::Postgres { replicas } => {
            let db = tokio::task::block_in_place(hoist_tests::postgres::try_database)?;
            let bundles = hoist_tests::postgres::SharedBundles::start(&work.join("s3"));
            let mut flags = vec!["--database", db.url.as_str()];
            flags.extend(bundles.flags());
            (0..replicas.max(1))
                .map(|k| {
                    Coordinator::start_env(
                        bins,
                        &work.join(format!("coordinator-{k}")),
                        &flags,
                        &bundles.env(),
                    )
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    let coordinator = &replicas[0];
    empty_bundle(&work.join("bundle"))?;
    // The replicas share one bundle store (s3s-fs); simulated hosts fetch no bundle anyway.
    let (token, revision) = coordinator.setup("sim", &work.join("bundle"))?;
    let urls: Vec<String> = replicas.iter().map(|c| c.url.clone()).collect();
    let url_of = |i: usize| urls[i % urls.len()].clone();
    let pid = coordinator.pid();

    let clients = clients(hosts, false)?;

    // Register every host, 64 at a time.
    let t_reg = Instant::now();
    let mut ids = Vec::with_capacity(hosts);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..hosts {
        if pending.len() >= 64 {
            if let Some(r) = pending.join_next().await {
                ids.push(r.context("registration task")??);
            }
        }
        let client = clients[i / HOSTS_PER_CLIENT].clone();
        let (url, token) = (url_of(i), token.clone());
        pending.spawn(async move { register(&client, &url, &token, &sim_name(i), "sim").await });
    }
    while let Some(r) = pending.join_next().await {
        ids.push(r.context("registration task")??);
    }
    let register_secs = t_reg.elapsed().as_secs_f64();
    eprintln!("coordinator: {hosts} host(s) registered in {register_secs:.1} s");

    let errors = Arc::new(AtomicU64::new(0));
    let poll_urls = urls
        .iter()
        .map(|url| {
            reqwest::Url::parse(&format!("{url}/v1/hosts/poll"))
                .with_context(|| format!("the coordinator's address {url}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports: Vec<Option<u16>> = poll_urls.iter().map(|u| u.port()).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sims = tokio::task::JoinSet::new();
    for (i, host) in ids.into_iter().enumerate() {
        let sim = Sim {
            client: clients[i / HOSTS_PER_CLIENT].clone(),
            poll_url: poll_urls[i % poll_urls.len()].clone(),
            host,
            name: sim_name(i),
            role: "sim".into(),
            errors: errors.clone(),
        };
        let tx = tx.clone();
        sims.spawn(async move { sim.run(tx).await });
    }
    // Every host is in its long poll once the server has seen a poll from each; give the
    // last ones time to get there.
    tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(hosts as u64 / 4)).await;
    // A host is a target once the store has its poll (a replica writes what its polls saw
    // once a second, on a blocking pool busy with their first looks): on a slow machine,
    // hosts registered early would still count as offline and get a catch-up deployment
    // instead of the measured one.
    let settling = Instant::now();
    loop {
        let online = tokio::task::block_in_place(|| coordinator.online_hosts())?;
        if online >= hosts {
            break;
        }
        if settling.elapsed() > Duration::from_secs(300) {
            bail!("{online} of {hosts} simulated hosts online after 300 s of polling");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut rss = vec![rss_bytes(pid)? as f64 / MB];
    let idle_window = Duration::from_secs(2);
    let c0 = cpu_time(pid)?;
    tokio::time::sleep(idle_window).await;
    let cpu_idle = (cpu_time(pid)? - c0).as_secs_f64() / idle_window.as_secs_f64() * 100.0;

    let mut pickup = Vec::new();
    let mut all_assigned = Vec::new();
    let mut cpu_busy = Vec::new();
    let mut completed = Vec::new();
    let mut reports_per_sec = Vec::new();
    for d in 0..deployments {
        let c0 = cpu_time(pid)?;
        let t_create = Instant::now();
        let (id, _, _) = {
            let revision = revision.clone();
            tokio::task::block_in_place(move || coordinator.deploy(&revision))?
        };
        let (mut picked, mut done) = (0, 0);
        let mut slowest: f64 = 0.0;
        let mut first = f64::INFINITY;
        let mut first_at: Option<Instant> = None;
        let mut cpu_assigning = None;
        let mut per_replica: Vec<Vec<f64>> = vec![Vec::new(); poll_urls.len()];
        // The last deployment is not waited for: its hosts' reports only matter to let a
        // next deployment of the group start.
        let last = d + 1 == deployments;
        let limit = Instant::now() + Duration::from_secs(1800);
        while picked < hosts || (!last && done < hosts) {
            let ev = tokio::time::timeout_at(limit.into(), rx.recv())
                .await
                .with_context(|| {
                    format!("deployment {id}: after 1800 s {picked} of {hosts} hosts picked it up, {done} completed")
                })?
                .context("every simulated host stopped")?;
            match ev {
                Event::Picked(dep, at, port) if dep == id => {
                    picked += 1;
                    first_at = Some(first_at.map_or(at, |f| f.min(at)));
                    let secs = at.saturating_duration_since(t_create).as_secs_f64();
                    slowest = slowest.max(secs);
                    first = first.min(secs);
                    pickup.push(secs);
                    let k = ports.iter().position(|p| *p == port).unwrap_or(0);
                    per_replica[k].push(secs);
                    if picked == hosts {
                        let wall = t_create.elapsed().as_secs_f64();
                        cpu_assigning = Some((cpu_time(pid)? - c0).as_secs_f64() / wall * 100.0);
                    }
                }
                Event::Done(dep) if dep == id => done += 1,
                _ => {}
            }
        }
        let wall = t_create.elapsed().as_secs_f64();
        if per_replica.len() > 1 {
            for (k, v) in per_replica.iter().enumerate() {
                if let Some(s) = Stat::of(v) {
                    eprintln!(
                        "  replica {k}: {} host(s), first {:.3} s, p50 {:.3} s, p99 {:.3} s, last {:.3} s",
                        v.len(), s.min, s.median, s.p99, s.max
                    );
                }
            }
        }
        cpu_busy.extend(cpu_assigning);
        all_assigned.push(slowest);
        rss.push(rss_bytes(pid)? as f64 / MB);
        if last {
            eprintln!(
                "coordinator {hosts} host(s) deployment {}: first assigned after {first:.3} s, all after {slowest:.3} s",
                d + 1
            );
        } else {
            completed.push(wall);
            if let Some(f) = first_at {
                let secs = f.elapsed().as_secs_f64();
                reports_per_sec.push(REPORTS_PER_COMMAND * hosts as f64 / secs);
            }
            eprintln!(
                "coordinator {hosts} host(s) deployment {}: first assigned after {first:.3} s, all after {slowest:.3} s, all completed after {wall:.1} s",
                d + 1
            );
            let state = tokio::task::block_in_place(|| coordinator.deployment_state(&id))?;
            if state != "succeeded" {
                bail!("deployment {id} is {state} after every host completed");
            }
            // Let the hosts settle back into their long polls.
            tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(hosts as u64 / 10))
                .await;
        }
    }
    let peak_rss = peak_rss_bytes(pid)? as f64 / MB;
    sims.abort_all();
    drop(replicas);
    Ok(Run {
        hosts,
        pickup,
        all_assigned,
        cpu_busy,
        cpu_idle,
        rss,
        peak_rss,
        completed,
        reports_per_sec,
        register_secs,
        errors: errors.load(Ordering::Relaxed),
    })
}

pub(crate) fn sim_name(i: usize) -> String {
    format!("sim-{i:05}")
}

pub(crate) struct HostId {
    id: String,
    secret: String,
}

impl HostId {
    /// Credentials no server issued, for servers that check none (`held_polls::floor`).
    pub(crate) fn made_up(name: &str) -> HostId {
        HostId {
            id: format!("h-{name}"),
            secret: format!("hs_{name}"),
        }
    }
}

/// Registers simulated host `name` tagged `role=ROLE`.
pub(crate) async fn register(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<HostId> {
    let resp = client
        .post(format!("{url}/v1/hosts/register"))
        .bearer_auth(token)
        .json(&RegisterRequest {
            name: name.to_owned(),
            tags: [("role".to_string(), role.to_string())].into(),
            agent_version: "0.1.0-bench".into(),
        })
        .send()
        .await
        .with_context(|| format!("registering host {name}"))?;
    if !resp.status().is_success() {
        bail!("registering host {name}: {}", resp.status());
    }
    let r: RegisterResponse = resp.json().await.context("registration answer")?;
    Ok(HostId {
        id: r.host_id,
        secret: r.host_secret,
    })
}

/// One simulated host: long-polls, and reports each command it is handed as an agent
/// would, telling the driver when it holds one and when its reports are acknowledged.
pub(crate) struct Sim {
    pub(crate) client: reqwest::Client,
    /// Parsed once, like an agent's configured coordinator address.
    pub(crate) poll_url: reqwest::Url,
    pub(crate) host: HostId,
    pub(crate) name: String,
    /// Its `role` tag.
    pub(crate) role: String,
    pub(crate) errors: Arc<AtomicU64>,
}

impl Sim {
    pub(crate) async fn run(self, tx: mpsc::UnboundedSender<Event>) {
        let tags: std::collections::BTreeMap<String, String> =
            [("role".to_string(), self.role.clone())].into();
        loop {
            let poll = PollRequest {
                name: self.name.clone(),
                tags: tags.clone(),
                agent_version: "0.1.0-bench".into(),
                wait_secs: Some(30),
            };
            let answer = self.post(self.poll_url.clone(), &poll).await;
            let command = match answer {
                Ok(resp) => match resp.json::<PollResponse>().await {
                    Ok(p) => p.command,
                    Err(_) => {
                        self.failed().await;
                        continue;
                    }
                },
                Err(()) => {
                    self.failed().await;
                    continue;
                }
            };
            let Some(command) = command else { continue };
            let _ = tx.send(Event::Picked(
                command.deployment_id.clone(),
                Instant::now(),
                self.poll_url.port(),
            ));
            let bodies = [
                reports::started("DownloadBundle"),
                reports::succeeded("DownloadBundle"),
                reports::started("Install"),
                reports::succeeded("Install"),
                reports::completed_ok(),
            ];
            let Ok(reports_url) = self
                .poll_url
                .join(&format!("/v1/commands/{}/reports", command.command_id))
            else {
                self.failed().await;
                continue;
            };
            for (seq, body) in bodies.into_iter().enumerate() {
                let report = Report {
                    seq: seq as u64 + 1,
                    at_ms: crate::procs::now_ms(),
                    body,
                };
                // An agent reads the acknowledgement (it says whether to abort), and
                // resends until it has one. Reading the body also lets the connection be
                // reused, as an agent's is.
                loop {
                    let ack = match self.post(reports_url.clone(), &report).await {
                        Ok(resp) => resp.json::<ReportAck>().await.ok(),
                        Err(()) => None,
                    };
                    if ack.is_some() {
                        break;
                    }
                    self.failed().await;
                }
            }
            let _ = tx.send(Event::Done(command.deployment_id));
        }
    }

    async fn post<T: serde::Serialize>(
        &self,
        url: reqwest::Url,
        body: &T,
    ) -> Result<reqwest::Response, ()> {
        match self
            .client
            .post(url)
            .header(HOST_ID_HEADER, &self.host.id)
            .bearer_auth(&self.host.secret)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(r),
            _ => Err(()),
        }
    }

    async fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
