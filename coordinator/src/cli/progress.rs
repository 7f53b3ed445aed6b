//! Following a deployment to its end (`hoist deploy create --wait`): what changed between two
//! views of it ([`diff`], pure), and three ways to show that, chosen once from where the
//! output goes ([`Output::choose`]):
//!
//! - [`Output::Live`] on a terminal: a view on stderr redrawn in place (indicatif) with a bar,
//!   the host counts and the hosts running now with their event (at most [`RUNNING_SHOWN`],
//!   so it fits one screen for any fleet); each failure is printed once above it, for good;
//! - [`Output::Lines`] elsewhere (CI logs, files): one line on stderr per host state change
//!   (started, failed with its details, finished), never one per lifecycle event;
//! - [`Output::Json`] (`--json`): one JSON object per change on stdout, one per line, events
//!   included, for scripts.
//!
//! Each ends with a summary: the outcome, how long the deployment took and which hosts
//! failed. Everything a host sent (names, events, scripts, messages, log tails) is printed
//! through [`esc`]. This module reads deployments; it starts, stops or changes none.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use hoist_protocol::operator::{CommandState, Deployment, DeploymentHost, DeploymentState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::client::{seg, Client};
use super::esc;

/// The most running hosts the live view lists; the rest are counted.
pub const RUNNING_SHOWN: usize = 10;

/// The most lines of a failed host's log tail shown with its failure.
pub const TAIL_LINES: usize = 6;

/// Where the progress of a followed deployment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Live,
    Lines,
    Json,
}

impl Output {
    /// JSON when asked, else the live view when stderr is a terminal, else lines.
    pub fn choose(json: bool) -> Output {
        if json {
            Output::Json
        } else if std::io::stderr().is_terminal() {
            Output::Live
        } else {
            Output::Lines
        }
    }
}

/// What a host's failure says, as the deployment view gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub event: Option<String>,
    pub script: Option<String>,
    pub exit_code: Option<i32>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub log_tail: Option<String>,
}

/// One change of one host between two views of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The host took its command (pending, or not seen yet, to in progress).
    Started { host: String },
    /// The host started a lifecycle event.
    Event { host: String, event: String },
    /// The host's command failed.
    Failed { host: String, failure: Box<Failure> },
    /// The host's command ended otherwise: succeeded, stopped or skipped.
    Finished {
        host: String,
        state: CommandState,
        message: Option<String>,
    },
}

impl Change {
    pub fn host(&self) -> &str {
        match self {
            Change::Started { host }
            | Change::Event { host, .. }
            | Change::Failed { host, .. }
            | Change::Finished { host, .. } => host,
        }
    }
}

fn ended(state: CommandState) -> bool {
    !matches!(
        state,
        CommandState::Pending | CommandState::InProgress | CommandState::Unknown
    )
}

/// What changed from `prev` (the previous view, `None` before the first) to `next`, host by
/// host in `next`'s order. A host seen for the first time already ended yields only its end;
/// one that ended yields no event of its own.
pub fn diff(prev: Option<&Deployment>, next: &Deployment) -> Vec<Change> {
    let before: HashMap<&str, &DeploymentHost> = prev
        .map(|p| p.hosts.iter().map(|h| (h.host_id.as_str(), h)).collect())
        .unwrap_or_default();
    let mut changes = Vec::new();
    for h in &next.hosts {
        let old = before.get(h.host_id.as_str());
        let old_state = old.map_or(CommandState::Pending, |o| o.state);
        let host = h.host_name.clone();
        if old_state == h.state && h.state != CommandState::InProgress {
            continue;
        }
        if h.state == CommandState::InProgress {
            if old_state != CommandState::InProgress {
                changes.push(Change::Started { host: host.clone() });
            }
            let old_event = old.and_then(|o| o.current_event.as_deref());
            if let Some(event) = h.current_event.as_deref().filter(|e| Some(*e) != old_event) {
                changes.push(Change::Event {
                    host,
                    event: event.to_owned(),
                });
            }
        } else if h.state == CommandState::Failed {
            changes.push(Change::Failed {
                host,
                failure: Box::new(Failure {
                    event: h.failed_event.clone(),
                    script: h.script.clone(),
                    exit_code: h.exit_code,
                    error_code: h.error_code.clone(),
                    message: h.message.clone(),
                    log_tail: h.log_tail.clone(),
                }),
            });
        } else if ended(h.state) {
            changes.push(Change::Finished {
                host,
                state: h.state,
                message: h.message.clone(),
            });
        }
    }
    changes
}

/// Seconds as `0.4s`, `12s`, `3m05s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 60.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The lines a failure is shown as: the host and what failed on the first, the last
/// [`TAIL_LINES`] of its log tail below, each indented by `indent`.
pub fn failure_lines(host: &str, f: &Failure, indent: &str) -> Vec<String> {
    let mut first = format!("{} failed", esc(host));
    if let Some(e) = &f.event {
        first.push_str(&format!(" in {}", esc(e)));
    }
    // The script and exit code, unless the message says them already.
    let said = |part: &str| f.message.as_deref().is_some_and(|m| m.contains(part));
    if let Some(s) = f.script.as_deref().filter(|s| !said(s)) {
        first.push_str(&format!(", script {}", esc(s)));
    }
    if let Some(c) = f.exit_code.filter(|c| !said(&format!("code {c}"))) {
        first.push_str(&format!(", exit code {c}"));
    }
    if let Some(m) = &f.message {
        first.push_str(&format!(": {}", esc(m)));
    } else if let Some(c) = &f.error_code {
        first.push_str(&format!(": {}", esc(c)));
    }
    let mut lines = vec![first];
    if let Some(tail) = f.log_tail.as_deref() {
        let all: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
        let skip = all.len().saturating_sub(TAIL_LINES);
        if skip > 0 {
            lines.push(format!("{indent}| ... ({skip} earlier lines)"));
        }
        lines.extend(all[skip..].iter().map(|l| format!("{indent}| {}", esc(l))));
    }
    lines
}

/// The plain rendering of one change: `None` for a lifecycle event (never a line each).
pub fn plain(change: &Change) -> Option<Vec<String>> {
    match change {
        Change::Started { host } => Some(vec![format!("{} started", esc(host))]),
        Change::Event { .. } => None,
        Change::Failed { host, failure } => Some(failure_lines(host, failure, "    ")),
        Change::Finished {
            host,
            state,
            message,
        } => {
            let mut line = format!("{} {state}", esc(host));
            if let Some(m) = message {
                line.push_str(&format!(": {}", esc(m)));
            }
            Some(vec![line])
        }
    }
}

/// One change as a JSON object (the `--json` line), `seconds` after following began.
pub fn json(change: &Change, deployment_id: &str, seconds: f64) -> serde_json::Value {
    let seconds = (seconds * 1000.0).round() / 1000.0;
    let mut v = match change {
        Change::Started { host } => serde_json::json!({"change": "started", "host": host}),
        Change::Event { host, event } => {
            serde_json::json!({"change": "event", "host": host, "event": event})
        }
        Change::Failed { host, failure } => serde_json::json!({
            "change": "failed",
            "host": host,
            "event": failure.event,
            "script": failure.script,
            "exit_code": failure.exit_code,
            "error_code": failure.error_code,
            "message": failure.message,
            "log_tail": failure.log_tail,
        }),
        Change::Finished {
            host,
            state,
            message,
        } => serde_json::json!({
            "change": "finished",
            "host": host,
            "state": state.as_str(),
            "message": message,
        }),
    };
    v["deployment_id"] = deployment_id.into();
    v["seconds"] = seconds.into();
    v
}

/// How long the deployment took: by the coordinator's clock once it ended, else as followed.
fn took(d: &Deployment, followed: Duration) -> Duration {
    match d.ended_ms {
        Some(end) if end >= d.created_ms => Duration::from_millis(end - d.created_ms),
        _ => followed,
    }
}

/// The names of the hosts that failed, in the deployment's order.
fn failed_hosts(d: &Deployment) -> Vec<String> {
    d.hosts
        .iter()
        .filter(|h| h.state == CommandState::Failed)
        .map(|h| h.host_name.clone())
        .collect()
}

/// The closing lines: outcome, time taken, counts, the failed hosts, why, the rollback.
pub fn summary(d: &Deployment, followed: Duration) -> Vec<String> {
    let c = &d.counts;
    let mut first = format!(
        "deployment {} {} in {}: {} succeeded, {} failed, {} stopped, {} skipped",
        d.id,
        d.state,
        duration(took(d, followed)),
        c.succeeded,
        c.failed,
        c.stopped,
        c.skipped
    );
    let failed = failed_hosts(d);
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(|n| esc(n)).collect();
        first.push_str(&format!("; failed on {}", names.join(", ")));
    }
    let mut lines = vec![first];
    if let Some(m) = &d.message {
        lines.push(format!("  {}", esc(m)));
    }
    if let Some(r) = &d.rolled_back_by {
        lines.push(format!("  rolling back with deployment {r}"));
    }
    lines
}

/// The summary as the last `--json` line.
pub fn summary_json(d: &Deployment, followed: Duration) -> serde_json::Value {
    serde_json::json!({
        "change": "summary",
        "deployment_id": d.id,
        "state": d.state.as_str(),
        "seconds": took(d, followed).as_secs_f64(),
        "counts": d.counts,
        "failed_hosts": failed_hosts(d),
        "message": d.message,
        "rolled_back_by": d.rolled_back_by,
    })
}

/// The live view's text under its bar: the counts, then the hosts running now.
pub fn live_message(d: &Deployment) -> String {
    let c = &d.counts;
    let mut s = format!(
        "{} succeeded, {} in progress, {} failed, {} pending, {} skipped",
        c.succeeded, c.in_progress, c.failed, c.pending, c.skipped
    );
    if c.stopped > 0 {
        s.push_str(&format!(", {} stopped", c.stopped));
    }
    let running: Vec<&DeploymentHost> = d
        .hosts
        .iter()
        .filter(|h| h.state == CommandState::InProgress)
        .collect();
    for h in running.iter().take(RUNNING_SHOWN) {
        let name: String = esc(&h.host_name).chars().take(48).collect();
        let event = h.current_event.as_deref().map(esc).unwrap_or_default();
        s.push_str(&format!("\n  {name:<24} {event}"));
    }
    if running.len() > RUNNING_SHOWN {
        s.push_str(&format!(
            "\n  ... and {} more running",
            running.len() - RUNNING_SHOWN
        ));
    }
    s
}

/// Shows changes as `output` says.
struct Renderer {
    output: Output,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Renderer {
    fn new(output: Output, d: &Deployment) -> Renderer {
        let bar = (output == Output::Live).then(|| {
            let total = d.hosts.len().max(1) as u64;
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} hosts  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Renderer {
            output,
            bar,
            started: Instant::now(),
        }
    }

    fn show(&self, d: &Deployment, changes: &[Change]) -> Result<()> {
        let secs = self.started.elapsed().as_secs_f64();
        match self.output {
            Output::Json => {
                for c in changes {
                    println!("{}", serde_json::to_string(&json(c, &d.id, secs))?);
                }
            }
            Output::Lines => {
                for lines in changes.iter().filter_map(plain) {
                    for (i, l) in lines.iter().enumerate() {
                        if i == 0 {
                            eprintln!("[{:>6}] {l}", duration(self.started.elapsed()));
                        } else {
                            eprintln!("         {l}");
                        }
                    }
                }
            }
            Output::Live => {
                if let Some(bar) = &self.bar {
                    for c in changes {
                        if let Change::Failed { host, failure } = c {
                            bar.println(failure_lines(host, failure, "    ").join("\n"));
                        }
                    }
                    let c = &d.counts;
                    bar.set_length(d.hosts.len().max(1) as u64);
                    bar.set_position(u64::from(c.succeeded + c.failed + c.stopped + c.skipped));
                    bar.set_message(live_message(d));
                }
            }
        }
        Ok(())
    }

    /// Clears the live view (its failures stay printed above it).
    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn finish(&self, d: &Deployment) -> Result<()> {
        self.clear();
        let followed = self.started.elapsed();
        if self.output == Output::Json {
            println!("{}", serde_json::to_string(&summary_json(d, followed))?);
        } else {
            for l in summary(d, followed) {
                eprintln!("{l}");
            }
        }
        Ok(())
    }
}

/// Follows deployment `d` (the answer to create) to its end, long-polling the coordinator
/// for each change and showing it as `output` says. Exits 0 when it succeeded, 1 when it
/// failed or was stopped, or when interrupted (the deployment goes on).
pub async fn follow(
    client: &Client,
    mut d: Deployment,
    output: Output,
    cancel: CancellationToken,
) -> Result<ExitCode> {
    let renderer = Renderer::new(output, &d);
    let mut prev: Option<Deployment> = None;
    loop {
        let changes = diff(prev.as_ref(), &d);
        renderer.show(&d, &changes)?;
        if d.state.is_terminal() {
            break;
        }
        let path = format!(
            "/v1/deployments/{}?since={}&wait_secs=25",
            seg(&d.id),
            d.change_seq
        );
        let next: Deployment = tokio::select! {
            r = client.get(&path) => match r {
                Ok(next) => next,
                Err(e) => {
                    renderer.clear();
                    return Err(e);
                }
            },
            _ = cancel.cancelled() => {
                renderer.clear();
                eprintln!("stopped waiting; deployment {} goes on", d.id);
                return Ok(ExitCode::FAILURE);
            }
        };
        prev = Some(std::mem::replace(&mut d, next));
    }
    renderer.finish(&d)?;
    Ok(if d.state == DeploymentState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests;
