//! Instant rollback with `hoist.releases`: `hoist-agent rollback` between two kept releases
//! of a bundle of `files` files, against a redeploy of the same revision by `hoist-agent
//! deploy` (which copies the release again).
//!
//! - The switch: the rollback's Install event (the kept release checked, `current` switched
//!   by one rename and the directory synced), from the rollback's own record, against the
//!   Install event of the redeploy (the copy into a new release, synced, then the switch).
//! - The whole command: the rollback's wall time (stop and start hooks, records), against
//!   the redeploy's.
//!
//! Runs alternate between the two. It does not measure fetching (the bundle is a local
//! directory): a remote redeploy would add its download to the baseline.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::procs::{timed, Bins};
use crate::report::{Measurement, Stat};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub runs: usize,
    pub files: usize,
}

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<Vec<Measurement>> {
    let srv = work.join("srv");
    let state = work.join("state");
    eprintln!("rollback: {} files, {} runs", p.files, p.runs);
    let (v1, v2) = (work.join("v1"), work.join("v2"));
    bundle(&v1, &srv, "v1", p.files)?;
    bundle(&v2, &srv, "v2", p.files)?;
    let deploy = |bundle: &Path| -> anyhow::Result<f64> {
        Ok(timed(
            Command::new(&bins.agent)
                .args(["deploy", "--app", "shop", "--group", "bench", "--bundle"])
                .arg(bundle)
                .arg("--state-dir")
                .arg(&state),
        )?
        .as_secs_f64())
    };
    deploy(&v1)?;
    deploy(&v2)?;
    let (mut switch, mut whole, mut copy, mut redeploy) = (vec![], vec![], vec![], vec![]);
    for r in 0..p.runs {
        // Back to the newest kept release that is not the current one (each redeploy below
        // makes a new one).
        let to = other_release(bins, &state)?;
        let took = timed(
            Command::new(&bins.agent)
                .args(["rollback", "--app", "shop", "--group", "bench", "--to"])
                .arg(&to)
                .arg("--state-dir")
                .arg(&state),
        )?;
        whole.push(took.as_secs_f64());
        switch.push(install_secs(&state, "rollback-")?);
        redeploy.push(deploy(if r % 2 == 0 { &v1 } else { &v2 })?);
        copy.push(install_secs(&state, "local-")?);
    }
    let stat = |v: &[f64]| Stat::of(v).context("no rollback samples");
    let ratio =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    let switch_met = stat(&switch)?.median < 0.1;
    Ok(vec![
        Measurement::new(
            "rollback.switch_seconds",
            "s",
            stat(&switch)?,
            format!(
                "the Install event of hoist-agent rollback to a kept release of {} files (check, one rename, directory synced); whole milliseconds from the agent's record, 0 is under 1 ms",
                p.files
            ),
        )
        .baseline(
            "Install of a redeploy of the same revision (copy into a new release, synced, switch)",
            stat(&copy)?,
            Some(stat(&ratio(&switch, &copy))?),
        )
        .target("median < 0.1 s", switch_met),
        Measurement::new(
            "rollback.command_seconds",
            "s",
            stat(&whole)?,
            "hoist-agent rollback, start to end (stop and start hooks, records)",
        )
        .baseline(
            "hoist-agent deploy of the same revision from a local directory",
            stat(&redeploy)?,
            Some(stat(&ratio(&whole, &redeploy))?),
        ),
    ])
}

/// A bundle with `hoist.releases` installing `files` small files into `srv/current`, with
/// an ApplicationStop and an ApplicationStart hook.
fn bundle(dir: &Path, srv: &Path, version: &str, files: usize) -> anyhow::Result<()> {
    let site = dir.join("site");
    std::fs::create_dir_all(&site).with_context(|| format!("creating {}", site.display()))?;
    for i in 0..files {
        let sub = site.join(format!("d{}", i % 16));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(
            sub.join(format!("f{i}.txt")),
            format!("{version} {i}\n").repeat(32),
        )?;
    }
    let current = srv.join("current");
    std::fs::write(
        dir.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {c}\nhooks:\n  ApplicationStop:\n    - location: hook.sh\n  ApplicationStart:\n    - location: hook.sh\nhoist:\n  releases:\n    current: {c}\n    keep: 3\n",
            c = current.display()
        ),
    )?;
    let hook = dir.join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The newest kept release of the group other than the current one, from `hoist-agent
/// status --json`.
fn other_release(bins: &Bins, state: &Path) -> anyhow::Result<String> {
    let out = Command::new(&bins.agent)
        .args(["status", "--json", "--state-dir"])
        .arg(state)
        .output()
        .context("running hoist-agent status")?;
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading hoist-agent status --json")?;
    let releases = &status["groups"][0]["releases"];
    let current = releases["current"].as_str().unwrap_or_default();
    releases["kept"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["deployment_id"].as_str())
        .rfind(|id| *id != current)
        .map(String::from)
        .with_context(|| format!("no kept release other than the current one: {releases}"))
}

/// The Install duration of the newest deployment whose id starts with `prefix`, from its
/// record in the state directory.
fn install_secs(state: &Path, prefix: &str) -> anyhow::Result<f64> {
    let groups = state.join("deployment-groups");
    let mut newest: Option<(u64, PathBuf)> = None;
    for g in std::fs::read_dir(&groups).with_context(|| format!("reading {}", groups.display()))? {
        let deployments = g?.path().join("deployments");
        for d in std::fs::read_dir(&deployments)
            .into_iter()
            .flatten()
            .flatten()
        {
            if !d.file_name().to_string_lossy().starts_with(prefix) {
                continue;
            }
            let record = d.path().join("result.json");
            let Ok(text) = std::fs::read_to_string(&record) else {
                continue;
            };
            let r: serde_json::Value = serde_json::from_str(&text)?;
            let started = r["started_at_ms"].as_u64().unwrap_or(0);
            if newest.as_ref().is_none_or(|(t, _)| started >= *t) {
                newest = Some((started, record));
            }
        }
    }
    let (_, record) = newest.with_context(|| format!("no record of a {prefix}* deployment"))?;
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record)?)?;
    let ms = r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["event"] == "Install" && e["status"] == "succeeded")
        .and_then(|e| e["duration_ms"].as_u64())
        .with_context(|| format!("no successful Install in {}", record.display()))?;
    Ok(ms as f64 / 1000.0)
}
