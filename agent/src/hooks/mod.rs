//! Runs one hook: its script in its own process group, stdin closed, a clean environment,
//! `runas`, a timeout with SIGTERM then SIGKILL to the whole group, and output captured with
//! timestamps into the deployment's hook log.
//!
//! The script's stdout and stderr are not pipes but two append-only files beside the hook
//! log, which the agent tails while the script runs. A script that starts a daemon without
//! redirecting its output therefore neither hangs the deployment (the script's own exit
//! decides) nor gets that daemon killed by SIGPIPE once the agent stops reading or exits:
//! the daemon simply goes on writing to its file.
//!
//! Layout: this file is the public API (one hook in, a [`HookOutcome`] out) and what an
//! outcome says in the log; `script` finds the script in the bundle without leaving it;
//! `runas` resolves the user before the fork and switches to it between fork and exec;
//! `run` spawns and supervises the process group (timeout, stop, TERM then KILL); `output`
//! owns the output files and the tailer that copies them into the log; `log` is the hook log
//! itself (timestamped lines, the tail for reports, the journal's fields); `env` builds a
//! hook's environment (the allowlist, the operator's environment file, then the deployment's
//! variables); `identity` tells a hook's process group apart across restarts (boot id and
//! the leader's start time) for recovery.
//!
//! It deliberately knows nothing of lifecycle events' order or of reports: the caller
//! (`deployment`) decides what runs and what an outcome means, and supplies the deployment's
//! variables.

mod env;
pub mod identity;
mod log;
mod output;
mod run;
mod runas;
mod script;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

pub use env::hook_environment;
pub use log::{HookLog, LogFields};

/// One hook to run: its appspec entry (the script's `location`, `timeout`, `runas`) and
/// what running it needs.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// `location` as written in the appspec (relative to the bundle root; a leading `/` is
    /// the bundle root).
    pub location: String,
    pub bundle_root: PathBuf,
    pub timeout: Duration,
    pub runas: Option<String>,
    /// The complete environment, apart from HOME/USER/LOGNAME/SHELL which `runas` sets.
    pub env: Vec<(String, String)>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long a running script may go on once `stop` is cancelled, before SIGTERM.
    pub stop_grace: Duration,
    /// Marks log lines, e.g. `AfterInstall scripts/start.sh`.
    pub label: String,
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Succeeded,
    /// Non-zero exit or death by a signal.
    Failed(ScriptExit),
    TimedOut {
        after: Duration,
    },
    /// The location does not exist in the bundle.
    Missing,
    /// Not a regular file, escapes the bundle, or could not be made executable.
    NotExecutable {
        reason: String,
    },
    RunAsFailed {
        reason: String,
    },
    /// `stop` was cancelled and the script was stopped after the grace period.
    Interrupted,
    /// The process could not be started for another reason.
    SpawnFailed {
        reason: String,
    },
}

/// How a script that failed ended: exactly one of an exit code and a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptExit {
    Code(i32),
    Signal(i32),
}

/// Runs one hook to its end. `on_spawn` receives the process group id as soon as the
/// script started (so the caller can record it durably).
///
/// If `stop` is already cancelled, the script is not started and the outcome is
/// `Interrupted`. If the returned future is dropped while the script runs, the script's
/// process group is killed.
pub async fn run_hook(
    run: &HookRun,
    log: &HookLog,
    stop: CancellationToken,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
) -> HookOutcome {
    let outcome = run::run_to_end(run, log, stop, on_spawn).await;
    let line = match &outcome {
        HookOutcome::Succeeded => "succeeded".to_string(),
        HookOutcome::Failed(ScriptExit::Code(c)) => format!("failed with exit code {c}"),
        HookOutcome::Failed(ScriptExit::Signal(s)) => {
            format!("failed: killed by {}", signal_name(*s))
        }
        HookOutcome::TimedOut { after } => {
            format!("timed out after {}", humantime::format_duration(*after))
        }
        HookOutcome::Missing => {
            format!("script {:?} does not exist in the bundle", run.location)
        }
        HookOutcome::NotExecutable { reason } => format!("not executable: {reason}"),
        HookOutcome::RunAsFailed { reason } => format!("runas failed: {reason}"),
        HookOutcome::Interrupted => "interrupted: the agent is stopping".to_string(),
        HookOutcome::SpawnFailed { reason } => format!("could not start: {reason}"),
    };
    log.note_hook(&run.label, &line);
    outcome
}

pub(super) fn outcome_of(status: ExitStatus) -> HookOutcome {
    if status.success() {
        HookOutcome::Succeeded
    } else {
        // A status from wait() without WUNTRACED has one or the other.
        HookOutcome::Failed(match status.code() {
            Some(code) => ScriptExit::Code(code),
            None => ScriptExit::Signal(status.signal().unwrap_or(0)),
        })
    }
}

fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}
