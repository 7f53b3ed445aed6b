//! Catch-up at scale: a deployment group of N simulated hosts (the capacity benchmark's
//! simulated hosts, long-polling and reporting as agents do) of which K at a time come back
//! at once, against an operator's deployment to another, small group of M hosts started at
//! the same moment. The figure is that deployment's time (create → every host's Completed
//! acknowledged) during the catch-up wave, against the same deployment with no wave, in the
//! same run (runs alternate: without, with, ...), and against the same deployment started
//! with an ordinary deployment of as many hosts of a third group (what the wave's work would
//! cost if an operator had asked for it); and how long the wave took to be caught up.
//!
//! The returning hosts registered at the start and stay silent until their wave, so they
//! come back to a group whose target revision they do not run. Not measured here: how
//! fast one host's catch-up is (that is `pickup`), or real agents' work.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_protocol::operator::Creator;
use tokio::sync::mpsc;

use crate::capacity::{clients, register, sim_name, Event, HostId, Sim, HOSTS_PER_CLIENT};
use crate::procs::{empty_bundle, Bins, Coordinator};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone)]
pub struct Params {
    /// Hosts in the catching-up group, the returning ones included.
    pub fleet: usize,
    /// Hosts coming back at once, per wave.
    pub wave: usize,
    /// Hosts in the other group.
    pub other: usize,
    /// Waves (and as many runs without one).
    pub runs: usize,
}

/// Longest any one wait here.
const LIMIT: Duration = Duration::from_secs(1800);

pub fn run(bins: &Bins, work: &Path, p: &Params) -> anyhow::Result<Vec<Measurement>> {
    if p.wave * p.runs >= p.fleet {
        bail!(
            "{} waves of {} hosts do not fit in a group of {}",
            p.runs,
            p.wave,
            p.fleet
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(measure(bins, work, p))
}

async fn measure(bins: &Bins, work: &Path, p: &Params) -> anyhow::Result<Vec<Measurement>> {
    let n = p.fleet;
    eprintln!(
        "convergence: {n} hosts, waves of {} returning, {} in the other group",
        p.wave, p.other
    );
    let work = work.join(format!("convergence-{n}"));
    let coordinator = Coordinator::start(bins, &work.join("coordinator"))?;
    empty_bundle(&work.join("bundle"))?;
    let (token, revision) = coordinator.setup("sim", &work.join("bundle"))?;
    for group in ["other", "peer"] {
        coordinator.hoist(&[
            "group",
            "create",
            group,
            "--app",
            "bench",
            "--tag",
            &format!("role={group}"),
            "--config",
            "AllAtOnce",
        ])?;
    }
    let url = coordinator.url.clone();
    // The fleet's group, the other group, and a peer group as large as a wave.
    let total = n + p.other + p.wave;
    let role = |i: usize| {
        if i < n {
            "sim"
        } else if i < n + p.other {
            "other"
        } else {
            "peer"
        }
    };
    let clients = clients(total, false)?;

    // Everyone registers; the fleet's group first, then the other group's hosts.
    let mut numbered: Vec<(usize, HostId)> = Vec::with_capacity(total);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..total {
        if pending.len() >= 64 {
            if let Some(r) = pending.join_next().await {
                numbered.push(r.context("registration task")??);
            }
        }
        let client = clients[i / HOSTS_PER_CLIENT].clone();
        let (url, token) = (url.clone(), token.clone());
        let role = role(i);
        pending.spawn(async move {
            let r = register(&client, &url, &token, &sim_name(i), role).await;
            r.map(|h| (i, h))
        });
    }
    while let Some(r) = pending.join_next().await {
        numbered.push(r.context("registration task")??);
    }
    numbered.sort_by_key(|(i, _)| *i);
    let ids = numbered.into_iter().map(|(_, h)| h);

    let errors = Arc::new(AtomicU64::new(0));
    let poll_url = reqwest::Url::parse(&format!("{url}/v1/hosts/poll"))
        .with_context(|| format!("the coordinator's address {url}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sims = tokio::task::JoinSet::new();
    // The hosts of the waves (the fleet's last ones) stay silent for now.
    let returning = p.wave * p.runs;
    let mut waves: Vec<Vec<Sim>> = (0..p.runs).map(|_| Vec::new()).collect();
    for (i, host) in ids.enumerate() {
        let sim = Sim {
            client: clients[i / HOSTS_PER_CLIENT].clone(),
            poll_url: poll_url.clone(),
            host,
            name: sim_name(i),
            role: role(i).into(),
            errors: errors.clone(),
        };
        let from_end = n.checked_sub(i + 1);
        match from_end {
            Some(k) if k < returning => waves[k / p.wave].push(sim),
            _ => {
                let tx = tx.clone();
                sims.spawn(async move { sim.run(tx).await });
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(total as u64 / 4)).await;

    // The group's target: a deployment to the hosts online now.
    let (first, _, _) = tokio::task::block_in_place(|| coordinator.deploy(&revision))?;
    let online = n - returning;
    wait_done(&mut rx, &first, online).await?;
    tokio::task::block_in_place(|| coordinator.wait_succeeded(&first, LIMIT))?;
    let other_revision = coordinator
        .hoist(&[
            "push",
            &work.join("bundle").display().to_string(),
            "--app",
            "bench",
        ])
        .context("pushing the other group's revision")?;
    tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(total as u64 / 10)).await;

    let deploy = |group: &str| {
        tokio::task::block_in_place(|| {
            coordinator.hoist(&[
                "deploy",
                "create",
                "--app",
                "bench",
                "--group",
                group,
                "--revision",
                &other_revision,
            ])
        })
    };
    let deploy_other = || deploy("other");
    let mut quiet = Vec::new();
    let mut beside_peer = Vec::new();
    let mut during = Vec::new();
    let mut caught_up = Vec::new();
    let mut catch_up_deployments = 0;
    for wave in waves {
        // Without a wave.
        let t0 = Instant::now();
        let id = deploy_other()?;
        wait_done(&mut rx, &id, p.other).await?;
        quiet.push(t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Beside an operator's deployment to as many hosts as a wave, just started (timed
        // from then, as the wave is timed from its hosts' return).
        let peer = deploy("peer")?;
        let t0 = Instant::now();
        let id = deploy_other()?;
        let (other_secs, _, _) =
            wait_both(&mut rx, &id, p.other, p.wave, t0, |d| d == peer).await?;
        beside_peer.push(other_secs);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // With one: the wave's hosts come back as the other group's deployment starts.
        let t0 = Instant::now();
        for sim in wave {
            let tx = tx.clone();
            sims.spawn(async move { sim.run(tx).await });
        }
        let id = deploy_other()?;
        let (other_secs, wave_secs, ids) =
            wait_both(&mut rx, &id, p.other, p.wave, t0, |d| d != id && d != first).await?;
        during.push(other_secs);
        caught_up.push(wave_secs);
        for d in &ids {
            let shown = tokio::task::block_in_place(|| coordinator.deployment(d))?;
            if shown.creator != Creator::CatchUp {
                bail!(
                    "deployment {d} reached a returning host but was created by {}",
                    shown.creator
                );
            }
        }
        catch_up_deployments += ids.len();
        tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(total as u64 / 10)).await;
    }
    sims.abort_all();
    drop(coordinator);
    let errors = errors.load(Ordering::Relaxed);
    let quiet_stat = Stat::of(&quiet).context("no samples")?;
    let during_stat = Stat::of(&during).context("no samples")?;
    let peer_stat = Stat::of(&beside_peer).context("no samples")?;
    let ratio = during_stat.median / quiet_stat.median;
    let peer_ratio = during_stat.median / peer_stat.median;
    Ok(vec![
        Measurement::new(
            &format!("convergence.hosts_{n}.other_group_seconds"),
            "s",
            during_stat.clone(),
            format!(
                "an operator's deployment to another group of {} hosts (create -> every Completed acknowledged) while {} hosts of a {n}-host group come back at once and are caught up; {} request error(s); ratio is median over the baseline's median",
                p.other, p.wave, errors
            ),
        )
        .baseline("the same deployment with no hosts coming back", quiet_stat, None)
        .target("ratio <= 1.5", ratio <= 1.5),
        Measurement::new(
            &format!("convergence.hosts_{n}.other_group_seconds_vs_ordinary_deployment"),
            "s",
            during_stat,
            format!(
                "the same figure against the same deployment started with an operator's deployment to {} hosts of a third group: what catching up costs beyond the work of deploying to as many hosts",
                p.wave
            ),
        )
        .baseline(
            "beside an operator's deployment to as many hosts",
            peer_stat,
            None,
        )
        .target("ratio <= 1.5", peer_ratio <= 1.5),
        Measurement::new(
            &format!("convergence.hosts_{n}.catch_up_seconds"),
            "s",
            Stat::of(&caught_up).context("no samples")?,
            format!(
                "{} hosts come back at once -> every one's catch-up Completed acknowledged, with the other group's deployment running; {} catch-up deployment(s) for {} waves",
                p.wave,
                catch_up_deployments,
                caught_up.len()
            ),
        ),
    ])
}

/// Waits until `hosts` simulated hosts completed deployment `id`, dropping other events.
async fn wait_done(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    id: &str,
    hosts: usize,
) -> anyhow::Result<()> {
    let limit = Instant::now() + LIMIT;
    let mut done = 0;
    while done < hosts {
        let ev = tokio::time::timeout_at(limit.into(), rx.recv())
            .await
            .with_context(|| format!("deployment {id}: {done} of {hosts} hosts completed"))?
            .context("every simulated host stopped")?;
        if let Event::Done(d) = ev {
            if d == id {
                done += 1;
            }
        }
    }
    Ok(())
}

/// Waits for both: `other` hosts completing deployment `id`, and `wave` hosts completing
/// a deployment that `theirs` accepts (their catch-ups, or an operator's). Seconds since
/// `t0` for each, and those deployments.
async fn wait_both(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    id: &str,
    other: usize,
    wave: usize,
    t0: Instant,
    theirs: impl Fn(&str) -> bool,
) -> anyhow::Result<(f64, f64, Vec<String>)> {
    let limit = Instant::now() + LIMIT;
    let (mut done_other, mut done_wave) = (0, 0);
    let (mut other_secs, mut wave_secs) = (None, None);
    let mut catch_ups: Vec<String> = Vec::new();
    while done_other < other || done_wave < wave {
        let ev = tokio::time::timeout_at(limit.into(), rx.recv())
            .await
            .with_context(|| {
                format!(
                    "{done_other} of {other} hosts completed {id}, {done_wave} of {wave} caught up"
                )
            })?
            .context("every simulated host stopped")?;
        let Event::Done(d) = ev else { continue };
        if d == id {
            done_other += 1;
            if done_other == other {
                other_secs = Some(t0.elapsed().as_secs_f64());
            }
        } else if theirs(&d) {
            done_wave += 1;
            if !catch_ups.contains(&d) {
                catch_ups.push(d);
            }
            if done_wave == wave {
                wave_secs = Some(t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok((
        other_secs.unwrap_or_default(),
        wave_secs.unwrap_or_default(),
        catch_ups,
    ))
}
