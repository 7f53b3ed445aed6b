//! A small deployment's fixed cost: `hoist-agent deploy` of the web-app example (a local
//! directory, every lifecycle event, nine hooks, three installed files), on a quiet host and
//! on a busy one, and the durable syncs it makes.
//!
//! - Quiet: against the floor of the same work without an agent, one `sh` doing the copies
//!   (`cp -a` of the bundle, then of its files to their destinations, `chmod`) and running
//!   the nine hook scripts in lifecycle order with their variables. Runs alternate.
//! - Busy: each quiet run is paired with one made right after another process wrote
//!   `dirty_mb` MB to the same filesystem without syncing (a database, a log shipper, a
//!   build); the ratio is per pair. That data is deleted (and the disk synced) untimed after
//!   each busy run.
//! - Syncs: one more run under `strace -f -c`, detached from each hook at its `execve`, so
//!   only the agent's own `fsync`, `fdatasync`, `syncfs` and `sync` calls are counted; the
//!   baseline is the number of lifecycle events run, so the ratio is syncs per event. Left out
//!   with a note when strace is not installed.
//!
//! Every deployment after the first (untimed) one is a second revision of the group: the
//! previous revision's stop hooks run and its files are removed, as on a real host. It does
//! not measure fetching or extracting (`apply` does, on a large bundle).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::procs::{timed, Bins};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub runs: usize,
    /// Unrelated dirty data written before each busy run, in MB.
    pub dirty_mb: u64,
}

/// The hooks of the web-app example, in lifecycle order (the floor runs them like this).
const HOOKS: [(&str, &str); 9] = [
    ("BeforeBlockTraffic", "record-event.sh"),
    ("AfterBlockTraffic", "record-event.sh"),
    ("ApplicationStop", "stop.sh"),
    ("BeforeInstall", "record-event.sh"),
    ("AfterInstall", "record-event.sh"),
    ("ApplicationStart", "start.sh"),
    ("ValidateService", "validate.sh"),
    ("BeforeAllowTraffic", "record-event.sh"),
    ("AfterAllowTraffic", "record-event.sh"),
];

/// Lifecycle events of one deployment of every event: the nine hooks' events plus
/// DownloadBundle and Install.
const EVENTS: f64 = 11.0;

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<(Vec<Measurement>, Vec<String>)> {
    let hoist_demo = work.join("hoist-demo");
    let floor_demo = work.join("floor-demo");
    let bundle = work.join("web-app");
    let state = work.join("state");
    // The example's destinations and proof files, moved into the work directory.
    hoist_tests::example_bundle("web-app", &bundle, &hoist_demo);
    eprintln!(
        "apply (small): web-app, {} runs, {} MB of unrelated dirty data in busy runs",
        p.runs, p.dirty_mb
    );
    let deploy = || -> anyhow::Result<f64> {
        Ok(timed(
            Command::new(&bins.agent)
                .args(["deploy", "--bundle"])
                .arg(&bundle)
                .args(["--app", "web-app", "--group", "bench", "--state-dir"])
                .arg(&state),
        )?
        .as_secs_f64())
    };
    let result = (|| {
        // A first deployment of each, so every timed one replaces a previous revision.
        deploy()?;
        floor(&bundle, &work.join("floor-copy"), &floor_demo)?;
        let (mut quiet, mut busy, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..p.runs {
            sync()?;
            if r % 2 == 0 {
                base.push(floor(&bundle, &work.join("floor-copy"), &floor_demo)?);
                quiet.push(deploy()?);
            } else {
                quiet.push(deploy()?);
                base.push(floor(&bundle, &work.join("floor-copy"), &floor_demo)?);
            }
            let dirty = work.join("unrelated-dirty-data");
            write_unsynced(&dirty, p.dirty_mb)?;
            busy.push(deploy()?);
            std::fs::remove_file(&dirty).context("removing the dirty data")?;
        }
        sync()?;
        let mut notes = Vec::new();
        let syncs = match count_syncs(bins, &bundle, &state, &work.join("strace.txt")) {
            Ok(n) => Some(n),
            Err(e) => {
                notes.push(format!("apply.web_app.syncs left out: {e:#}"));
                None
            }
        };
        Ok::<_, anyhow::Error>((quiet, busy, base, syncs, notes))
    })();
    stop_server(&hoist_demo);
    stop_server(&floor_demo);
    let (quiet, busy, base, syncs, notes) = result?;

    let stat = |v: &[f64]| Stat::of(v).context("no small-bundle samples");
    let ratios: Vec<f64> = quiet.iter().zip(&base).map(|(h, f)| h / f).collect();
    let busy_ratios: Vec<f64> = busy.iter().zip(&quiet).map(|(b, q)| b / q).collect();
    let quiet_met = stat(&quiet)?.median < 0.045;
    let busy_ratio = stat(&busy_ratios)?;
    let busy_met = busy_ratio.median <= 1.5;
    let mut out = vec![
        Measurement::new(
            "apply.web_app.seconds",
            "s",
            stat(&quiet)?,
            "hoist-agent deploy of examples/web-app (local directory, 11 events, 9 hooks), a second revision each time",
        )
        .baseline(
            "sh: cp -a + chmod + the 9 hooks",
            stat(&base)?,
            Some(stat(&ratios)?),
        )
        .target("median < 0.045 s", quiet_met),
        Measurement::new(
            "apply.web_app.busy_seconds",
            "s",
            stat(&busy)?,
            format!(
                "the same, right after another process wrote {} MB to the same filesystem without syncing",
                p.dirty_mb
            ),
        )
        .baseline("the quiet run of the pair", stat(&quiet)?, Some(busy_ratio))
        .target("ratio <= 1.5", busy_met),
    ];
    if let Some(n) = syncs {
        let one = |v: f64| Stat {
            n: 1,
            median: v,
            min: v,
            max: v,
            p99: v,
        };
        out.push(
            Measurement::new(
                "apply.web_app.syncs",
                "calls",
                one(n as f64),
                "fsync + fdatasync + syncfs + sync calls of hoist-agent itself in one web-app deployment (strace -f, hooks not traced)",
            )
            .baseline("lifecycle events run", one(EVENTS), None),
        );
    }
    Ok((out, notes))
}

/// The floor: the same copies and hooks by one `sh`, without an agent; its time.
fn floor(bundle: &Path, copy: &Path, demo: &Path) -> anyhow::Result<f64> {
    let mut script = String::from("set -eu\n");
    script.push_str(&format!(
        "rm -rf '{copy}' && cp -a '{bundle}' '{copy}'\n",
        copy = copy.display(),
        bundle = bundle.display()
    ));
    script.push_str(&format!(
        "mkdir -p '{demo}/www' '{demo}/etc' && cp -a '{copy}/site/.' '{demo}/www/' && cp -a '{copy}/config/app.conf' '{demo}/etc/'\n\
         chmod 644 '{demo}/www/index.html' '{demo}/www/static/style.css' && chmod 600 '{demo}/etc/app.conf'\n",
        demo = demo.display(),
        copy = copy.display()
    ));
    for (event, hook) in HOOKS {
        script.push_str(&format!(
            "LIFECYCLE_EVENT={event} DEPLOYMENT_ID=floor APPLICATION_NAME=web-app DEPLOYMENT_GROUP_NAME=bench \
             HOIST_DEMO_DIR='{demo}' '{copy}/scripts/{hook}' > /dev/null 2>&1\n",
            demo = demo.display(),
            copy = copy.display()
        ));
    }
    Ok(timed(Command::new("sh").arg("-c").arg(script))?.as_secs_f64())
}

/// Writes `mb` MB to `path` without syncing: dirty pages of another process.
fn write_unsynced(path: &Path, mb: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // Not zeros only, so no filesystem can skip the blocks.
    let block: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for _ in 0..mb {
        file.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The agent's own sync calls in one deployment, counted by `strace -c`.
fn count_syncs(bins: &Bins, bundle: &Path, state: &Path, out: &Path) -> anyhow::Result<u64> {
    let traced = Command::new("strace")
        .args([
            "-f",
            "-b",
            "execve",
            "-c",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync",
            "-o",
        ])
        .arg(out)
        .arg(&bins.agent)
        .args(["deploy", "--bundle"])
        .arg(bundle)
        .args(["--app", "web-app", "--group", "bench", "--state-dir"])
        .arg(state)
        .output();
    match traced {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("strace is not installed"),
        Err(e) => return Err(e).context("running strace"),
        Ok(o) if !o.status.success() => bail!(
            "strace hoist-agent deploy failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok(sync_calls(&text))
}

/// Sums the calls column of `strace -c` rows for the sync system calls.
fn sync_calls(summary: &str) -> u64 {
    summary
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.last()?;
            let calls = fields.get(3)?.parse::<u64>().ok()?;
            ["fsync", "fdatasync", "syncfs", "sync"]
                .contains(name)
                .then_some(calls)
        })
        .sum()
}

/// Stops the example's background server (started by its ApplicationStart hook).
fn stop_server(demo: &Path) {
    let pid_file: PathBuf = demo.join("server.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 1)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn sync() -> anyhow::Result<()> {
    timed(&mut Command::new("sync")).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_calls_are_summed_from_the_strace_summary() {
        let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 66.63    0.002138          68        31           fsync
 29.92    0.000960         320         3           fdatasync
  3.46    0.000111          37         3         1 sync_file_range
------ ----------- ----------- --------- --------- ----------------
100.00    0.003209          86        37         1 total
";
        assert_eq!(sync_calls(summary), 34);
    }
}
