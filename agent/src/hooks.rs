//! Runs one hook script: its own process group, stdin closed, a clean environment, `runas`,
//! a timeout with SIGTERM then SIGKILL to the whole group, and output captured with
//! timestamps into the deployment's hook log.
//!
//! It deliberately knows nothing of lifecycle events' order or of reports: the caller
//! (`deployment`) decides what runs and what an outcome means.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// One script to run.
#[derive(Debug, Clone)]
pub struct ScriptRun {
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
    /// Non-zero exit (`code`) or death by a signal (`signal`).
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
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

/// The hook log of one deployment: a file of timestamped lines plus the last few KB in memory.
pub struct HookLog {
    path: PathBuf,
}

impl HookLog {
    /// Opens (appending) or creates the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<HookLog> {
        Ok(HookLog {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a line from the agent itself (event start, end, outcome).
    pub fn note(&self, line: &str) {
        let _ = line;
    }

    /// The output kept since the last call to `take_tail` (at most a few KB, whole lines).
    pub fn take_tail(&self) -> String {
        String::new()
    }
}

/// Runs one script to its end. `on_spawn` receives the process group id as soon as the
/// script started (so the caller can record it durably).
pub async fn run_script(
    run: &ScriptRun,
    log: &HookLog,
    stop: CancellationToken,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
) -> HookOutcome {
    let _ = (run, log, stop, on_spawn);
    HookOutcome::SpawnFailed {
        reason: "not built yet".into(),
    }
}

/// Reads an operator environment file: `KEY=VALUE` lines, `#` comments and blank lines
/// ignored, optional `export ` prefix, values optionally in single or double quotes.
pub fn read_environment_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let _ = path;
    Ok(Vec::new())
}
