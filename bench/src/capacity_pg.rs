//! The coordinator's capacity on PostgreSQL, side by side with SQLite: for one replica and
//! for two (the simulated hosts split between them, deployments created through the first),
//! pickup latency and reports recorded per second, each with the SQLite figure of the same
//! fleet in the same invocation as its baseline. The load itself is `capacity`'s; this file
//! only turns two runs into measurements. Not here: starting PostgreSQL (the test
//! harness's `postgres`) or the simulated hosts.

use anyhow::Context;

use crate::capacity::Run;
use crate::report::{Measurement, Stat};

/// Measurements of `pg` (a run on `replicas` replicas) against `sqlite` (the same fleet).
pub fn measurements(replicas: usize, sqlite: &Run, pg: &Run) -> anyhow::Result<Vec<Measurement>> {
    let n = pg.hosts;
    let prefix = format!("coordinator.postgres_{replicas}.hosts_{n}");
    let split = if replicas > 1 {
        format!("{replicas} replicas on one database, hosts split between them, deployments created through the first")
    } else {
        "one replica".to_string()
    };
    let pickup = Stat::of(&pg.pickup).context("no pickup samples")?;
    let base_pickup = Stat::of(&sqlite.pickup).context("no SQLite pickup samples")?;
    let ratio = Stat::of(&[pickup.p99 / base_pickup.p99]);
    let met = pickup.p99 < 2.0;
    let reports = Stat::of(&pg.reports_per_sec).context("no report samples")?;
    let base_reports = Stat::of(&sqlite.reports_per_sec).context("no SQLite report samples")?;
    Ok(vec![
        Measurement::new(
            &format!("{prefix}.pickup_seconds"),
            "s",
            pickup,
            format!(
                "PostgreSQL, {split}: deploy create started -> simulated host holds its command; {n} simulated hosts long-polling; registration took {:.1} s; {} request error(s); ratio is p99 over SQLite's p99",
                pg.register_secs, pg.errors
            ),
        )
        .baseline("SQLite, the same fleet", base_pickup, ratio)
        .target("p99 < 2 s", met),
        Measurement::new(
            &format!("{prefix}.reports_per_second"),
            "reports/s",
            reports,
            format!(
                "PostgreSQL, {split}: event reports acknowledged per second, first host holding its command -> last Completed acknowledged"
            ),
        )
        .baseline("SQLite, the same fleet", base_reports, None),
    ])
}
