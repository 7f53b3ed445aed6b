//! `hoist-bench`: measures the real `hoist` and `hoist-agent` binaries — bundle apply, instant
//! rollback, pickup
//! latency, agent footprint, coordinator capacity, catch-up at scale — each against a baseline run in the same
//! invocation, prints a table (median, min, max, ratio) and writes the same as JSON.
//!
//! It builds its own inputs (bundles, an S3 server, a coordinator, agents, simulated hosts)
//! in a scratch directory and removes them at the end. It is not a regression gate: targets
//! are reported as met or not, and the exit code says only whether every measurement ran and
//! gave a well-formed figure (for `all`, every one of them; `.ci/run` runs `all --quick`).

mod apply;
mod apply_small;
mod capacity;
mod capacity_pg;
mod convergence;
mod footprint;
mod held_polls;
mod pickup;
mod procs;
mod report;
mod rollback;
mod s3;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::report::{Document, Machine, Measurement};

/// The load generator's allocator (`capacity`): glibc's malloc took more of the cores the
/// servers under test share with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "hoist-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Which,
}

#[derive(Debug, Clone, Subcommand)]
enum Which {
    /// Bundle apply by `hoist-agent deploy` from S3, against sha256sum + tar/unzip + cp -a;
    /// the web-app example's fixed cost, quiet and on a busy host, and its syncs.
    Apply(#[command(flatten)] Opts),
    /// `hoist-agent rollback` to a kept release (hoist.releases) against a redeploy.
    Rollback(#[command(flatten)] Opts),
    /// Time from `hoist deploy create` returning to agents starting DownloadBundle.
    Pickup(#[command(flatten)] Opts),
    /// RSS and CPU of an idle agent; RSS after many deployments.
    Footprint(#[command(flatten)] Opts),
    /// Assignment latency, CPU, RSS and reports per second of the coordinator with many
    /// simulated hosts (on PostgreSQL too, one replica and two, where it is installed), and
    /// its memory per held long poll (HTTP and HTTPS) against a bare hyper server's.
    Coordinator(#[command(flatten)] Opts),
    /// An operator's deployment to one group while many hosts of another come back at once
    /// and catch up, against the same deployment with none coming back.
    Convergence(#[command(flatten)] Opts),
    /// Only the coordinator's memory per held long poll (part of `coordinator`).
    HeldPolls(#[command(flatten)] Opts),
    /// Everything above, in that order (`held-polls` as part of `coordinator`).
    All(#[command(flatten)] Opts),
    /// The bare hyper server that is the held-poll baseline (started by `coordinator`).
    #[command(hide = true)]
    Server(held_polls::floor::FloorArgs),
}

#[derive(Debug, Clone, Args)]
struct Opts {
    /// Small inputs and short windows: seconds instead of minutes.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Directory holding `hoist` and `hoist-agent` (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Scratch directory (default: a new one under $TMPDIR, removed at the end).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Bundle size for `apply`, in MB of file contents (default 200, quick 2).
    #[arg(long, value_name = "MB")]
    apply_mb: Option<u64>,
    /// Number of files in the bundle for `apply` (default 20000, quick 200).
    #[arg(long, value_name = "N")]
    apply_files: Option<usize>,
    /// For `apply`: also run this `hoist-agent` build in the same runs as the large bundle's
    /// baseline (time and memory of the one under test against it).
    #[arg(long, value_name = "PATH")]
    base_agent: Option<PathBuf>,
    /// For `apply`: only the large bundle (not the small bundle's fixed cost).
    #[arg(long)]
    apply_large_only: bool,
    /// Repetitions of each measurement (default 5, quick 3).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Largest simulated fleet for `coordinator`: runs 1000, 5000 and 20000 up to it
    /// (default 20000; quick runs 20 and 100).
    #[arg(long, value_name = "N")]
    max_hosts: Option<usize>,
    /// The fleet sizes `coordinator` runs instead (comma-separated, each capped by
    /// RLIMIT_NOFILE like the default ones), such as `10000,20000`.
    #[arg(long, value_name = "N,N", value_delimiter = ',')]
    fleets: Option<Vec<usize>>,
    /// The replica counts `coordinator` runs on PostgreSQL (comma-separated; default 1,2).
    #[arg(long, value_name = "N,N", value_delimiter = ',')]
    pg_replicas: Option<Vec<usize>>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoist-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(which: Which) -> anyhow::Result<()> {
    if let Which::Server(args) = which {
        return held_polls::floor::serve(args);
    }
    let (Which::Apply(o)
    | Which::Rollback(o)
    | Which::Pickup(o)
    | Which::Footprint(o)
    | Which::Coordinator(o)
    | Which::Convergence(o)
    | Which::HeldPolls(o)
    | Which::All(o)) = &which
    else {
        anyhow::bail!("not a measurement");
    };
    let bins = procs::Bins::locate(o.bin_dir.as_deref())?;
    if let Some(d) = &o.work_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The tests' scratch directory (0755: the agents' hooks may run as other users).
    let scratch = hoist_tests::Scratch::named("hoist-bench-", o.work_dir.as_deref())
        .context("creating the scratch directory")?;
    let work = scratch.path();
    let all = matches!(which, Which::All(_));
    let runs = o.runs.unwrap_or(if o.quick { 3 } else { 5 }).max(1);
    let started_utc = utc_now();
    let mut notes = vec![format!(
        "binaries: {} and {}",
        bins.hoist.display(),
        bins.agent.display()
    )];
    let mut measurements: Vec<Measurement> = Vec::new();
    // Whether the coordinator was measured on PostgreSQL too (where it is installed).
    let mut postgres = false;

    if all || matches!(which, Which::Apply(_)) {
        let p = apply::Params {
            total_bytes: o.apply_mb.unwrap_or(if o.quick { 2 } else { 200 }) * 1_000_000,
            files: o.apply_files.unwrap_or(if o.quick { 200 } else { 20_000 }),
            runs,
            base_agent: o.base_agent.clone(),
        };
        measurements.extend(apply::run(&bins, &work.join("apply"), p)?);
    }
    if (all || matches!(which, Which::Apply(_))) && !o.apply_large_only {
        let p = apply_small::Params {
            runs: o.runs.unwrap_or(if o.quick { 5 } else { 30 }).max(1),
            dirty_mb: if o.quick { 64 } else { 2048 },
        };
        let (small, small_notes) = apply_small::run(&bins, &work.join("apply-small"), p)?;
        measurements.extend(small);
        notes.extend(small_notes);
    }
    if all || matches!(which, Which::Rollback(_)) {
        let p = rollback::Params {
            runs: o.runs.unwrap_or(if o.quick { 4 } else { 10 }).max(2),
            files: if o.quick { 200 } else { 5000 },
        };
        measurements.extend(rollback::run(&bins, &work.join("rollback"), p)?);
    }
    if all || matches!(which, Which::Pickup(_)) {
        let p = pickup::Params {
            fleets: if o.quick { [1, 5] } else { [1, 50] },
            deployments: if o.quick { 3 } else { 20 },
        };
        measurements.extend(pickup::run(&bins, work, p)?);
    }
    if all || matches!(which, Which::Footprint(_)) {
        let p = footprint::Params {
            idle: Duration::from_secs(if o.quick { 3 } else { 60 }),
            deployments: if o.quick { 10 } else { 200 },
        };
        measurements.extend(footprint::run(&bins, &work.join("footprint"), p)?);
    }
    if all || matches!(which, Which::Coordinator(_)) {
        let max = o.max_hosts.unwrap_or(20_000);
        let wanted: Vec<usize> = if let Some(f) = &o.fleets {
            f.clone()
        } else if o.quick {
            vec![20, 100]
        } else {
            [1000, 5000, 20_000]
                .into_iter()
                .filter(|&n| n <= max)
                .collect()
        };
        // The server and the load generator each hold one socket per simulated host.
        let need = wanted.iter().max().copied().unwrap_or(0) as u64 + FD_MARGIN;
        let (note, limit) = raise_nofile(need)?;
        notes.push(note);
        let fit = limit.saturating_sub(FD_MARGIN) as usize;
        let fleets: Vec<usize> = wanted
            .iter()
            .map(|&n| {
                if n > fit {
                    notes.push(format!(
                        "{n} simulated hosts do not fit under RLIMIT_NOFILE {limit}: measured {fit} instead"
                    ));
                    fit
                } else {
                    n
                }
            })
            .collect();
        let p = capacity::Params {
            fleets,
            deployments: if o.quick { 2 } else { 3 },
            pg_replicas: o.pg_replicas.clone().unwrap_or_else(|| vec![1, 2]),
        };
        let (found, found_notes, with_postgres) = capacity::run(&bins, work, &p)?;
        measurements.extend(found);
        notes.extend(found_notes);
        postgres = with_postgres;
    }
    if all || matches!(which, Which::Coordinator(_) | Which::HeldPolls(_)) {
        let max = o.max_hosts.unwrap_or(5000).min(5000);
        let (note, limit) = raise_nofile(max as u64 + FD_MARGIN)?;
        notes.push(note);
        let p = held_polls::Params {
            hosts: if o.quick {
                400
            } else {
                max.min(limit.saturating_sub(FD_MARGIN) as usize)
            },
            runs: if o.quick { 1 } else { 3 },
        };
        measurements.extend(held_polls::run(&bins, &work.join("held-polls"), p)?);
    }

    if all || matches!(which, Which::Convergence(_)) {
        let p = if o.quick {
            convergence::Params {
                fleet: 50,
                wave: 10,
                other: 5,
                runs: 2,
            }
        } else {
            convergence::Params {
                fleet: 5000,
                wave: 500,
                other: 50,
                runs: 3,
            }
        };
        let (note, _) = raise_nofile((p.fleet + p.other) as u64 + FD_MARGIN)?;
        notes.push(note);
        measurements.extend(convergence::run(&bins, work, &p)?);
    }

    notes.push(
        "ratios: apply per alternating run pair; others median over the baseline's median unless the note says otherwise".into(),
    );
    let doc = Document {
        tool: format!("hoist-bench {}", env!("CARGO_PKG_VERSION")),
        quick: o.quick,
        started_utc,
        machine: Machine::probe(),
        measurements,
        notes,
    };
    let table = report::table(&doc.measurements);
    println!("{table}");
    for n in &doc.notes {
        println!("note: {n}");
    }
    for m in &doc.measurements {
        println!("{}: {}", m.name, m.note);
    }
    if let Some(path) = &o.json {
        report::write_json(path, &doc)?;
    }
    // A full run measures at sizes of its own (fleets of 1000 hosts and more), so only a
    // quick `all` has a fixed list of names.
    let expected = (all && o.quick).then(|| report::quick_all_measurements(postgres));
    let expected: Option<Vec<&str>> = expected
        .as_ref()
        .map(|names| names.iter().map(String::as_str).collect());
    let problems = report::problems(&doc, &table, expected.as_deref());
    if !problems.is_empty() {
        anyhow::bail!("malformed results:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Descriptors a process needs beside its sockets to simulated hosts.
const FD_MARGIN: u64 = 64;

/// Raises RLIMIT_NOFILE (inherited by the coordinator) towards `need`, as far as the hard
/// limit allows when it cannot be raised (no CAP_SYS_RESOURCE): a note and the new limit.
fn raise_nofile(need: u64) -> anyhow::Result<(String, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft >= need {
        return Ok((format!("RLIMIT_NOFILE already {soft}"), soft));
    }
    if hard < need && setrlimit(Resource::RLIMIT_NOFILE, need, need).is_ok() {
        return Ok((
            format!("RLIMIT_NOFILE raised from {soft} (hard {hard}) to {need} for this process and the coordinator it starts"),
            need,
        ));
    }
    let new = need.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)
        .with_context(|| format!("raising RLIMIT_NOFILE from {soft} to {new}"))?;
    let why = if new < need {
        format!(
            "; {need} wanted, but the hard limit cannot be raised here (setrlimit: EPERM, no CAP_SYS_RESOURCE)"
        )
    } else {
        String::new()
    };
    Ok((
        format!("RLIMIT_NOFILE raised from {soft} to {new} for this process and the coordinator it starts{why}"),
        new,
    ))
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
