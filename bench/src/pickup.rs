//! Pickup latency with real agents: from `hoist deploy create` returning to each agent
//! starting DownloadBundle, with 1 and with 50 idle `hoist-agent run` daemons long-polling.
//!
//! The signal is the agent's own `event_started DownloadBundle` report: the agent stamps it
//! (`at_ms`, wall clock) when it queues it, right as the event begins, and the coordinator
//! records it verbatim in its `reports` table, read here after the deployment succeeded. All
//! processes share this machine's clock, so the difference with the wall-clock time at which
//! the CLI returned is a true latency, at millisecond resolution; it can be slightly negative
//! when an agent starts before the CLI process has finished exiting.
//!
//! The baseline is one operator round trip on the same coordinator (`hoist app list`: process
//! start, one HTTP request, exit), the smallest thing the CLI does on this machine right now.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hoist_protocol::agent::{Report, ReportBody};

use crate::procs::{empty_bundle, timed, wait_until, Agent, Bins, Coordinator};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Fleet sizes, each with its own coordinator.
    pub fleets: [usize; 2],
    /// Deployments per fleet size.
    pub deployments: usize,
}

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for agents in p.fleets {
        out.extend(measure(
            bins,
            &work.join(format!("pickup-{agents}")),
            agents,
            p.deployments,
        )?);
    }
    Ok(out)
}

fn measure(
    bins: &Bins,
    work: &Path,
    agents: usize,
    deployments: usize,
) -> anyhow::Result<Vec<Measurement>> {
    eprintln!("pickup: {agents} agent(s), {deployments} deployment(s)");
    let coordinator = Coordinator::start(bins, &work.join("coordinator"))?;
    empty_bundle(&work.join("bundle"))?;
    let (token, revision) = coordinator.setup("pickup", &work.join("bundle"))?;
    let fleet = (0..agents)
        .map(|i| {
            let name = format!("pickup-{i:03}");
            Agent::start(
                bins,
                &work.join(&name),
                &name,
                &coordinator.url,
                &token,
                "pickup",
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_until("every agent online", Duration::from_secs(60), || {
        Ok(coordinator.online_hosts()? == agents)
    })?;
    // Let every agent settle into its long poll.
    std::thread::sleep(Duration::from_secs(2));

    let mut baseline = Vec::new();
    let mut latencies = Vec::new();
    let mut first_report = Vec::new();
    for d in 0..deployments {
        baseline.push(
            timed(
                std::process::Command::new(&bins.hoist)
                    .args(["app", "list"])
                    .env("HOIST_SERVER", &coordinator.url)
                    .env("HOIST_TOKEN", crate::procs::OPERATOR_TOKEN),
            )?
            .as_secs_f64(),
        );
        let (id, _, returned_ms) = coordinator.deploy(&revision)?;
        coordinator.wait_succeeded(&id, Duration::from_secs(120))?;
        let started = download_started_ms(&coordinator.data_dir.join("hoist.db"), &id)?;
        if started.len() != agents {
            anyhow::bail!(
                "deployment {id}: {} of {agents} agents reported starting DownloadBundle",
                started.len()
            );
        }
        let secs = |ms: u64| (ms as f64 - returned_ms as f64) / 1000.0;
        latencies.extend(started.iter().map(|&(_, d)| secs(d)));
        first_report.extend(started.iter().map(|&(f, _)| secs(f)));
        eprintln!(
            "pickup {agents} agent(s) deployment {}: slowest {:.3} s",
            d + 1,
            started.iter().map(|&(_, d)| d).max().map_or(0.0, secs)
        );
        // Back into the long poll before the next one.
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(fleet);
    let stat = Stat::of(&latencies).context("no pickup samples")?;
    let met = stat.median < 0.5 && stat.p99 < 2.0;
    let first = Stat::of(&first_report).context("no pickup samples")?;
    Ok(vec![Measurement::new(
        &format!("pickup.agents_{agents}.seconds"),
        "s",
        stat,
        format!(
            "deploy create returned -> agent's own DownloadBundle start report (at_ms, read from the coordinator's reports table); {agents} real hoist-agent run daemon(s), {deployments} deployment(s), one sample per agent and deployment; the agents' first report of each command (ApplicationStop started, which precedes DownloadBundle) came after median {:.3} s, p99 {:.3} s",
            first.median, first.p99
        ),
    )
    .baseline(
        "hoist app list round trip (CLI start, one request, exit)",
        Stat::of(&baseline).context("no baseline samples")?,
        None,
    )
    .target("p50 < 0.5 s, p99 < 2 s", met)])
}

/// For each command of the deployment: when its agent sent its first report and when it
/// started DownloadBundle (ms since the epoch, the agent's clock).
pub fn download_started_ms(db: &Path, deployment: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .context("setting the busy timeout")?;
    let mut stmt = conn
        .prepare(
            "SELECT r.command_id, r.body_json FROM reports r JOIN commands c ON r.command_id = c.id \
             WHERE c.deployment_id = ?1",
        )
        .context("querying reports")?;
    let rows = stmt
        .query_map([deployment], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .context("querying reports")?;
    let mut first = std::collections::HashMap::new();
    let mut download = std::collections::HashMap::new();
    for row in rows {
        let (command, body) = row.context("reading a report")?;
        let report: Report = serde_json::from_str(&body).context("parsing a recorded report")?;
        let f = first.entry(command.clone()).or_insert(report.at_ms);
        *f = (*f).min(report.at_ms);
        if let ReportBody::EventStarted { event } = &report.body {
            if event == "DownloadBundle" {
                download.insert(command, report.at_ms);
            }
        }
    }
    Ok(download
        .into_iter()
        .map(|(c, d)| (first.get(&c).copied().unwrap_or(d), d))
        .collect())
}
