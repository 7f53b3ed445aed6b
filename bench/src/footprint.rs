//! Agent footprint: RSS and CPU of one idle `hoist-agent run` long-polling a real coordinator,
//! sampled once a second over a window (a minute by default), then RSS after each of many
//! consecutive small deployments to see whether it grows.
//!
//! Baselines: for idle RSS, a `sleep` process started alongside (the least any process costs
//! here); for RSS after deployments, the agent's own RSS after the first few deployments (a
//! warmed-up agent), so the ratio is the growth. Idle CPU has no meaningful baseline (an idle
//! process uses none); it is reported as measured, without a ratio.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::procs::{cpu_time, empty_bundle, rss_bytes, wait_until, Agent, Bins, Coordinator};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub idle: Duration,
    pub deployments: usize,
}

const MB: f64 = 1024.0 * 1024.0;

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<Vec<Measurement>> {
    eprintln!(
        "footprint: idle for {:?}, then {} deployments",
        p.idle, p.deployments
    );
    let coordinator = Coordinator::start(bins, &work.join("coordinator"))?;
    empty_bundle(&work.join("bundle"))?;
    let (token, revision) = coordinator.setup("footprint", &work.join("bundle"))?;
    let agent = Agent::start(
        bins,
        &work.join("agent"),
        "footprint-0",
        &coordinator.url,
        &token,
        "footprint",
    )?;
    wait_until("the agent online", Duration::from_secs(60), || {
        Ok(coordinator.online_hosts()? == 1)
    })?;
    std::thread::sleep(Duration::from_secs(2));

    // The floor any process pays here, sampled over the same window.
    let mut sleeper = Command::new("sleep")
        .arg(format!("{}", p.idle.as_secs() + 5))
        .stdin(Stdio::null())
        .spawn()
        .context("starting sleep")?;
    let pid = agent.pid();
    let mut rss = Vec::new();
    let mut floor_rss = Vec::new();
    let mut cpu_pct = Vec::new();
    let t0 = Instant::now();
    let cpu0 = cpu_time(pid)?;
    let mut last = (t0, cpu0);
    while t0.elapsed() < p.idle {
        std::thread::sleep(Duration::from_secs(1));
        let (now, cpu) = (Instant::now(), cpu_time(pid)?);
        cpu_pct.push((cpu - last.1).as_secs_f64() / (now - last.0).as_secs_f64() * 100.0);
        last = (now, cpu);
        rss.push(rss_bytes(pid)? as f64 / MB);
        floor_rss.push(rss_bytes(sleeper.id())? as f64 / MB);
    }
    let window = t0.elapsed();
    let cpu_total = (cpu_time(pid)? - cpu0).as_secs_f64();
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let mut after = Vec::new();
    for d in 0..p.deployments {
        let (id, _, _) = coordinator.deploy(&revision)?;
        coordinator.wait_succeeded(&id, Duration::from_secs(60))?;
        after.push(rss_bytes(pid)? as f64 / MB);
        if (d + 1) % 50 == 0 {
            eprintln!("footprint: {} deployments, RSS {:.1} MB", d + 1, after[d]);
        }
    }
    // First and last tenth (at least one each) of the series.
    let k = (p.deployments / 10).max(1);
    let warm = &after[..k.min(after.len())];
    let late = &after[after.len().saturating_sub(k)..];
    let idle_rss = Stat::of(&rss).context("no RSS samples")?;
    let late_stat = Stat::of(late).context("no RSS samples after deployments")?;
    let warm_stat = Stat::of(warm).context("no RSS samples after deployments")?;
    let growth = late_stat.median / warm_stat.median;
    Ok(vec![
        Measurement::new(
            "footprint.idle_rss_mib",
            "MiB",
            idle_rss.clone(),
            format!(
                "VmRSS of an idle hoist-agent run, once a second for {:.0} s",
                window.as_secs_f64()
            ),
        )
        .baseline(
            "VmRSS of coreutils sleep",
            Stat::of(&floor_rss).context("no sleep RSS samples")?,
            None,
        )
        .target("max < 10 MiB", idle_rss.max < 10.0),
        Measurement::new(
            "footprint.idle_cpu_percent",
            "% of one core",
            Stat::of(&cpu_pct).context("no CPU samples")?,
            format!(
                "per-second CPU (user+system, 10 ms ticks) of the idle agent; over the whole window: {:.3} s CPU in {:.0} s = {:.3} %",
                cpu_total,
                window.as_secs_f64(),
                cpu_total / window.as_secs_f64() * 100.0
            ),
        ),
        Measurement::new(
            "footprint.rss_after_deployments_mib",
            "MiB",
            late_stat,
            format!(
                "VmRSS after each of the last {k} of {} consecutive deployments of an appspec-only bundle",
                p.deployments
            ),
        )
        .baseline(
            &format!("VmRSS after each of the first {k} deployments"),
            warm_stat,
            None,
        )
        .target("ratio <= 1.1 (no growth beyond noise)", growth <= 1.1),
    ])
}
