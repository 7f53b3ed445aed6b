//! Runs one hook script: its own process group, stdin closed, a clean environment, `runas`,
//! a timeout with SIGTERM then SIGKILL to the whole group, and output captured with
//! timestamps into the deployment's hook log.
//!
//! The script's stdout and stderr are not pipes but two append-only files beside the hook
//! log, which the agent tails while the script runs. A script that starts a daemon without
//! redirecting its output therefore neither hangs the deployment (the script's own exit
//! decides) nor gets that daemon killed by SIGPIPE once the agent stops reading or exits:
//! the daemon simply goes on writing to its file.
//!
//! It deliberately knows nothing of lifecycle events' order or of reports: the caller
//! (`deployment`) decides what runs and what an outcome means, and builds the environment.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// How much recent output [`HookLog::take_tail`] keeps (whole lines).
const TAIL_BYTES: usize = 4096;
/// A line longer than this (no newline in sight) is cut and logged in pieces, so one
/// runaway line cannot grow the agent's memory.
const MAX_LINE: usize = 8192;
/// How often the output files are read while a script runs.
const POLL: Duration = Duration::from_millis(50);
/// How much is read from one output file per poll, so a flood cannot stall the loop.
const READ_PER_POLL: u64 = 1 << 20;
/// How long, after SIGKILL, the group may take to disappear before the outcome is given anyway.
const KILL_SETTLE: Duration = Duration::from_secs(2);
/// How much the final drain reads at most, because a daemon may still be writing.
const READ_FINAL: u64 = 16 << 20;

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

/// The hook log of one deployment: a file of timestamped lines plus the last few KB in memory.
///
/// Shared by reference between the deployment driver (which writes notes) and the script
/// runner (which writes output lines); the mutex keeps each line whole in the file.
pub struct HookLog {
    path: PathBuf,
    inner: Mutex<LogInner>,
    /// Structured fields every logged line carries (the journal's DEPLOYMENT_ID, ...).
    fields: Mutex<LogFields>,
}

/// What a hook log's lines are about, for the structured log.
#[derive(Debug, Clone, Default)]
pub struct LogFields {
    pub deployment_id: String,
    pub application: String,
    pub deployment_group: String,
    /// The lifecycle event running now; set by the deployment before each event.
    pub lifecycle_event: String,
}

struct LogInner {
    file: File,
    /// Formatted lines since the last `take_tail`, at most `TAIL_BYTES` in all.
    tail: VecDeque<String>,
    tail_bytes: usize,
    /// Set once a write failed, so a full disk is reported once and not per line.
    write_failed: bool,
}

impl HookLog {
    /// Opens (appending) or creates the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<HookLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        Ok(HookLog {
            path: path.to_path_buf(),
            inner: Mutex::new(LogInner {
                file,
                tail: VecDeque::new(),
                tail_bytes: 0,
                write_failed: false,
            }),
            fields: Mutex::new(LogFields::default()),
        })
    }

    /// Sets the fields every later line carries in the structured log.
    pub fn set_fields(&self, fields: LogFields) {
        *self
            .fields
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fields;
    }

    /// Sets the lifecycle event of every later line.
    pub fn set_event(&self, event: &str) {
        self.fields
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .lifecycle_event = event.to_string();
    }

    fn fields(&self) -> LogFields {
        self.fields
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a line from the agent itself (event start, end, outcome).
    pub fn note(&self, line: &str) {
        self.write(format!("{} hoist| {}", timestamp(), line));
    }

    /// The output kept since the last call to `take_tail` (at most a few KB, whole lines).
    /// It holds the same lines as the end of the log file, notes included.
    pub fn take_tail(&self) -> String {
        let mut inner = self.lock();
        let tail = std::mem::take(&mut inner.tail);
        inner.tail_bytes = 0;
        let mut out = String::with_capacity(TAIL_BYTES + 64);
        for line in tail {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The directory holding scripts' raw output files: `<log path>.d`.
    pub fn output_dir(&self) -> PathBuf {
        let mut dir: OsString = self.path.as_os_str().to_owned();
        dir.push(".d");
        PathBuf::from(dir)
    }

    /// A line about one script, written by the agent.
    fn note_script(&self, label: &str, line: &str) {
        let f = self.fields();
        tracing::info!(
            deployment_id = %f.deployment_id,
            application = %f.application,
            deployment_group = %f.deployment_group,
            lifecycle_event = %f.lifecycle_event,
            script = %label,
            "{line}"
        );
        self.write(format!("{} [{}] hoist| {}", timestamp(), label, line));
    }

    /// A line of a script's output.
    fn output_line(&self, label: &str, stream: Stream, line: &str) {
        let f = self.fields();
        tracing::info!(
            deployment_id = %f.deployment_id,
            application = %f.application,
            deployment_group = %f.deployment_group,
            lifecycle_event = %f.lifecycle_event,
            script = %label,
            stream = stream.name(),
            "{line}"
        );
        self.write(format!(
            "{} [{}] {}| {}",
            timestamp(),
            label,
            stream.name(),
            line
        ));
    }

    fn write(&self, line: String) {
        let mut inner = self.lock();
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(err) = inner.file.write_all(&bytes) {
            if !inner.write_failed {
                inner.write_failed = true;
                tracing::error!(path = %self.path.display(), "writing the hook log: {err}");
            }
        }
        let kept = truncate_at_char(&line, TAIL_BYTES - 1).to_string();
        inner.tail_bytes += kept.len() + 1;
        inner.tail.push_back(kept);
        while inner.tail_bytes > TAIL_BYTES {
            match inner.tail.pop_front() {
                Some(old) => inner.tail_bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        // A panic while holding the lock leaves nothing half-done that matters here: the
        // worst is a missing line, so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Runs one script to its end. `on_spawn` receives the process group id as soon as the
/// script started (so the caller can record it durably).
///
/// If `stop` is already cancelled, the script is not started and the outcome is
/// `Interrupted`. If the returned future is dropped while the script runs, the script's
/// process group is killed.
pub async fn run_script(
    run: &ScriptRun,
    log: &HookLog,
    stop: CancellationToken,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
) -> HookOutcome {
    let outcome = run_script_inner(run, log, stop, on_spawn).await;
    let line = match &outcome {
        HookOutcome::Succeeded => "succeeded".to_string(),
        HookOutcome::Failed(ScriptExit::Code(c)) => format!("failed with exit code {c}"),
        HookOutcome::Failed(ScriptExit::Signal(s)) => {
            format!("failed: killed by {}", signal_name(*s))
        }
        HookOutcome::TimedOut { after } => {
            format!("timed out after {}", humantime::format_duration(*after))
        }
        HookOutcome::Missing => format!(
            "script {} does not exist in the bundle",
            quoted(&run.location)
        ),
        HookOutcome::NotExecutable { reason } => format!("not executable: {reason}"),
        HookOutcome::RunAsFailed { reason } => format!("runas failed: {reason}"),
        HookOutcome::Interrupted => "interrupted: the agent is stopping".to_string(),
        HookOutcome::SpawnFailed { reason } => format!("could not start: {reason}"),
    };
    log.note_script(&run.label, &line);
    outcome
}

async fn run_script_inner(
    run: &ScriptRun,
    log: &HookLog,
    stop: CancellationToken,
    on_spawn: &(dyn Fn(i32) + Send + Sync),
) -> HookOutcome {
    let script = match resolve_script(&run.bundle_root, &run.location) {
        Ok(Resolved {
            path,
            made_executable,
        }) => {
            if made_executable {
                log.note_script(&run.label, "the script had no execute permission: added it");
            }
            path
        }
        Err(outcome) => return outcome,
    };
    let identity = match &run.runas {
        Some(name) => match resolve_user(name) {
            Ok(identity) => Some(identity),
            Err(reason) => return HookOutcome::RunAsFailed { reason },
        },
        None => None,
    };
    if stop.is_cancelled() {
        return HookOutcome::Interrupted;
    }
    let (out_file, err_file, mut tailer) = match create_output_files(log, &run.label) {
        Ok(files) => files,
        Err(reason) => return HookOutcome::SpawnFailed { reason },
    };

    let mut child = match spawn(run, &script, identity.as_ref(), &out_file, &err_file, log) {
        Ok(child) => child,
        Err(outcome) => return outcome,
    };
    // The child holds its own descriptors now; the agent keeps only its read handles.
    drop(out_file);
    drop(err_file);
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return HookOutcome::SpawnFailed {
            reason: "the started process has no id".to_string(),
        };
    };
    // `process_group(0)` made the script the leader of a new group whose id is its pid.
    let pgid = Pid::from_raw(pid);
    let mut guard = GroupGuard { pgid: Some(pgid) };
    on_spawn(pid);

    let outcome = supervise(run, log, &stop, &mut child, pgid, &mut tailer).await;
    guard.disarm();
    // Whatever is in the files now is the script's; a daemon it left behind may go on
    // writing there, but the agent reads no further.
    tailer.pump(log, &run.label, READ_FINAL, true);
    outcome
}

/// Why the agent is ending the script's process group.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Timeout,
    Stop,
}

async fn supervise(
    run: &ScriptRun,
    log: &HookLog,
    stop: &CancellationToken,
    child: &mut Child,
    pgid: Pid,
    tailer: &mut Tailer,
) -> HookOutcome {
    let started = Instant::now();
    let far = started + Duration::from_secs(100 * 365 * 24 * 3600);
    // Durations come from configuration: one too large to add means "never".
    let after = |d: Duration| Instant::now().checked_add(d).unwrap_or(far).min(far);
    let deadline = after(run.timeout);
    let mut stop_deadline: Option<Instant> = None;
    // Set once SIGTERM went to the group: why, and when SIGKILL follows.
    let mut ending: Option<(Ending, Instant)> = None;
    let mut killed = false;
    let mut exited: Option<ExitStatus> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if let Some(status) = exited {
            match ending {
                // The script ended on its own: its group (perhaps a daemon it started on
                // purpose) is left alone.
                None => return outcome_of(status),
                Some((why, kill_at)) => {
                    // The script is gone, but what it started may still be in its group
                    // and ignore SIGTERM: SIGKILL follows unless the group is empty.
                    if !group_alive(pgid) {
                        return ended_outcome(why, run.timeout);
                    }
                    if killed {
                        // SIGKILL is delivered asynchronously; give the kernel a moment so
                        // that the outcome means the group is gone, but never hang on a
                        // process stuck in the kernel.
                        if Instant::now() >= kill_at.checked_add(KILL_SETTLE).unwrap_or(far) {
                            return ended_outcome(why, run.timeout);
                        }
                        tick.tick().await;
                        continue;
                    }
                    if Instant::now() >= kill_at {
                        send_sigkill(log, run, pgid);
                        killed = true;
                        continue;
                    }
                }
            }
        }

        tokio::select! {
            status = child.wait(), if exited.is_none() => {
                match status {
                    Ok(status) => exited = Some(status),
                    Err(err) => {
                        // Waiting failed (it should not): make sure nothing is left running.
                        kill_group(log, &run.label, pgid, Signal::SIGKILL);
                        return HookOutcome::SpawnFailed {
                            reason: format!("waiting for the script: {err}"),
                        };
                    }
                }
            }
            _ = sleep_until(deadline), if ending.is_none() => {
                log.note_script(&run.label, &format!(
                    "timeout of {} reached: sending SIGTERM to process group {pgid}",
                    humantime::format_duration(run.timeout),
                ));
                kill_group(log, &run.label, pgid, Signal::SIGTERM);
                ending = Some((Ending::Timeout, after(run.kill_grace)));
            }
            _ = stop.cancelled(), if stop_deadline.is_none() && ending.is_none() => {
                log.note_script(&run.label, &format!(
                    "the agent is stopping: the script may run {} more",
                    humantime::format_duration(run.stop_grace),
                ));
                stop_deadline = Some(after(run.stop_grace));
            }
            _ = sleep_until(stop_deadline.unwrap_or(far)), if stop_deadline.is_some() && ending.is_none() => {
                log.note_script(&run.label, &format!(
                    "stop grace period over: sending SIGTERM to process group {pgid}"
                ));
                kill_group(log, &run.label, pgid, Signal::SIGTERM);
                ending = Some((Ending::Stop, after(run.kill_grace)));
            }
            _ = sleep_until(ending.map(|(_, at)| at).unwrap_or(far)), if ending.is_some() && !killed => {
                send_sigkill(log, run, pgid);
                killed = true;
            }
            _ = tick.tick() => {
                tailer.pump(log, &run.label, READ_PER_POLL, false);
            }
        }
    }
}

fn send_sigkill(log: &HookLog, run: &ScriptRun, pgid: Pid) {
    log.note_script(
        &run.label,
        &format!(
            "process group {pgid} still running {} after SIGTERM: sending SIGKILL",
            humantime::format_duration(run.kill_grace),
        ),
    );
    kill_group(log, &run.label, pgid, Signal::SIGKILL);
}

fn ended_outcome(why: Ending, timeout: Duration) -> HookOutcome {
    match why {
        Ending::Timeout => HookOutcome::TimedOut { after: timeout },
        Ending::Stop => HookOutcome::Interrupted,
    }
}

fn outcome_of(status: ExitStatus) -> HookOutcome {
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

/// Whether some process of the group is still running. Zombies do not count: where PID 1
/// does not reap orphans, a dead grandchild would otherwise keep the group "alive".
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc, signal 0 is the best answer there is.
        return true;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some((_, after)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid.as_raw()) && state != Some("Z")
    })
}

fn kill_group(log: &HookLog, label: &str, pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => log.note_script(
            label,
            &format!("sending {signal} to process group {pgid}: {err}"),
        ),
    }
}

fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// Kills the script's process group if `run_script` is dropped while the script runs, so an
/// abandoned script cannot live on unsupervised.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

struct Resolved {
    path: PathBuf,
    made_executable: bool,
}

/// Finds the script of `location` inside `bundle_root`, refusing anything outside it (by
/// `..` or by a symbolic link), and makes it executable if it is not.
fn resolve_script(bundle_root: &Path, location: &str) -> Result<Resolved, HookOutcome> {
    let not_exec = |reason: String| HookOutcome::NotExecutable { reason };
    let shown = quoted(location);
    let relative =
        normalize_location(location).map_err(|why| not_exec(format!("{shown} {why}")))?;
    let root = std::fs::canonicalize(bundle_root).map_err(|err| HookOutcome::SpawnFailed {
        reason: format!("bundle root {}: {err}", bundle_root.display()),
    })?;
    let joined = root.join(&relative);
    let path = match std::fs::canonicalize(&joined) {
        Ok(path) => path,
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                || err.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
        {
            return Err(HookOutcome::Missing)
        }
        Err(err) => return Err(not_exec(format!("{shown}: {err}"))),
    };
    if !path.starts_with(&root) {
        return Err(not_exec(format!(
            "{shown} resolves to {}, outside the bundle",
            path.display()
        )));
    }
    let meta = std::fs::metadata(&path).map_err(|err| not_exec(format!("{shown}: {err}")))?;
    if !meta.is_file() {
        return Err(not_exec(format!("{shown} is not a regular file")));
    }
    let mode = meta.permissions().mode();
    let mut made_executable = false;
    if mode & 0o111 != 0o111 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o111))
            .map_err(|err| not_exec(format!("{shown} could not be made executable: {err}")))?;
        made_executable = true;
    }
    Ok(Resolved {
        path,
        made_executable,
    })
}

/// `location` as a path relative to the bundle root, or why it is refused.
fn normalize_location(location: &str) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in Path::new(location).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("is outside the bundle");
                }
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file");
    }
    Ok(out)
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The user a script runs as, resolved before the fork (the password and group databases
/// may need NSS modules, which are not safe to call between fork and exec).
struct Identity {
    name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    home: String,
    shell: String,
    /// False when the agent already is this user: then nothing is switched.
    switch: bool,
}

fn resolve_user(name: &str) -> Result<Identity, String> {
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => return Err(format!("user {} does not exist", quoted(name))),
        Err(err) => return Err(format!("looking up user {}: {err}", quoted(name))),
    };
    let me = nix::unistd::geteuid();
    let switch = user.uid != me;
    if switch && !me.is_root() {
        return Err(format!(
            "cannot run as user {}: the agent runs as uid {me}, not root",
            quoted(name)
        ));
    }
    let groups = if switch {
        let cname =
            CString::new(name).map_err(|_| format!("user {} is not a valid name", quoted(name)))?;
        nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|err| format!("reading the groups of user {}: {err}", quoted(name)))?
    } else {
        Vec::new()
    };
    Ok(Identity {
        name: user.name.clone(),
        uid: user.uid,
        gid: user.gid,
        groups,
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
        switch,
    })
}

fn spawn(
    run: &ScriptRun,
    script: &Path,
    identity: Option<&Identity>,
    out: &File,
    err: &File,
    log: &HookLog,
) -> Result<Child, HookOutcome> {
    let first = command(run, script, None, identity, out, err).and_then(|mut c| c.spawn());
    let result = match first {
        Err(e) if e.raw_os_error() == Some(Errno::ENOEXEC as i32) => {
            log.note_script(
                &run.label,
                "the script has no #! line the kernel can run: running it with /bin/sh",
            );
            command(run, script, Some(Path::new("/bin/sh")), identity, out, err)
                .and_then(|mut c| c.spawn())
        }
        other => other,
    };
    result.map_err(|e| {
        let reason = format!("starting {}: {e}", script.display());
        match (identity, e.raw_os_error()) {
            (Some(id), Some(code))
                if id.switch && (code == Errno::EPERM as i32 || code == Errno::EACCES as i32) =>
            {
                HookOutcome::RunAsFailed {
                    reason: format!("{reason} (as user {})", quoted(&id.name)),
                }
            }
            _ => HookOutcome::SpawnFailed { reason },
        }
    })
}

fn command(
    run: &ScriptRun,
    script: &Path,
    interpreter: Option<&Path>,
    identity: Option<&Identity>,
    out: &File,
    err: &File,
) -> std::io::Result<Command> {
    let mut cmd = match interpreter {
        Some(sh) => {
            let mut cmd = Command::new(sh);
            cmd.arg(script);
            cmd
        }
        None => Command::new(script),
    };
    cmd.env_clear()
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&run.bundle_root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?))
        .process_group(0);
    if let Some(id) = identity {
        cmd.env("HOME", &id.home)
            .env("USER", &id.name)
            .env("LOGNAME", &id.name)
            .env("SHELL", &id.shell);
        if id.switch {
            switch_user_before_exec(&mut cmd, id.uid, id.gid, id.groups.clone());
        }
    }
    Ok(cmd)
}

/// Switches the child to `uid`, `gid` and `groups` between fork and exec. All three are done
/// here, in this order: std's own `uid()`/`gid()` run before `pre_exec` closures, and after
/// `setuid` the process may no longer call `setgroups`.
#[allow(unsafe_code)]
fn switch_user_before_exec(cmd: &mut Command, uid: Uid, gid: Gid, groups: Vec<Gid>) {
    // SAFETY: the closure runs in the forked child before exec. It makes only the three
    // async-signal-safe system calls setgroups, setgid and setuid on data prepared before
    // the fork; it allocates nothing, takes no lock and calls into no NSS module.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
}

/// Creates the two files a script writes its output to, `<log>.d/<n>-<label>.stdout` and
/// `.stderr` (append-only), and opens them again, separately, for the agent to read (a
/// shared descriptor would share its offset with the script's appends).
fn create_output_files(log: &HookLog, label: &str) -> Result<(File, File, Tailer), String> {
    let dir = log.output_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("creating the output directory {}: {e}", dir.display()))?;
    let stem = file_stem(label);
    let mut n = next_number(&dir);
    let (out_path, out) = loop {
        let path = dir.join(format!("{n:03}-{stem}.stdout"));
        match OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
        {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100_000 => n += 1,
            Err(e) => return Err(format!("creating {}: {e}", path.display())),
        }
    };
    let err_path = dir.join(format!("{n:03}-{stem}.stderr"));
    let err = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&err_path)
        .map_err(|e| format!("creating {}: {e}", err_path.display()))?;
    let reader = |path: &Path| {
        File::open(path).map_err(|e| format!("opening {} for reading: {e}", path.display()))
    };
    let tailer = Tailer {
        streams: [
            StreamTail::new(Stream::Stdout, reader(&out_path)?),
            StreamTail::new(Stream::Stderr, reader(&err_path)?),
        ],
    };
    Ok((out, err, tailer))
}

/// The label as a file name: letters, digits, `.`, `-` and `_` kept, the rest `_`.
fn file_stem(label: &str) -> String {
    let stem: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if stem.is_empty() {
        "script".to_string()
    } else {
        stem
    }
}

/// One more than the highest number prefixing a file in `dir`.
fn next_number(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |n| n.saturating_add(1))
}

/// Reads what a script appended to its output files and writes it into the log as lines.
struct Tailer {
    streams: [StreamTail; 2],
}

impl Tailer {
    /// Reads up to `limit` new bytes per stream; `last` also flushes an unfinished line.
    fn pump(&mut self, log: &HookLog, label: &str, limit: u64, last: bool) {
        for stream in &mut self.streams {
            stream.pump(log, label, limit, last);
        }
    }
}

struct StreamTail {
    stream: Stream,
    file: File,
    /// Bytes after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
    /// Set after a read error was noted, so it is noted once.
    failed: bool,
}

impl StreamTail {
    fn new(stream: Stream, file: File) -> StreamTail {
        StreamTail {
            stream,
            file,
            partial: Vec::new(),
            failed: false,
        }
    }

    fn pump(&mut self, log: &HookLog, label: &str, limit: u64, last: bool) {
        let mut fresh = Vec::new();
        if let Err(err) = (&mut self.file).take(limit).read_to_end(&mut fresh) {
            if !self.failed {
                self.failed = true;
                log.note_script(label, &format!("reading {}: {err}", self.stream.name()));
            }
        }
        self.partial.extend_from_slice(&fresh);
        for line in split_lines(&mut self.partial, last) {
            log.output_line(label, self.stream, &line);
        }
    }
}

/// Takes the complete lines out of `buf` (without their `\n` or `\r\n`), leaving an
/// unfinished line in it, unless `last`. A line longer than `MAX_LINE` is cut.
fn split_lines(buf: &mut Vec<u8>, last: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < buf.len() {
        let rest = &buf[start..];
        let (end, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (start + i, start + i + 1),
            _ if rest.len() > MAX_LINE => (start + MAX_LINE, start + MAX_LINE),
            _ if last => (buf.len(), buf.len()),
            _ => break,
        };
        let mut line = &buf[start..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
        start = next;
    }
    buf.drain(..start);
    lines
}

/// Reads an operator environment file: `KEY=VALUE` lines, `#` comments and blank lines
/// ignored, optional `export ` prefix, values optionally in single or double quotes.
///
/// Nothing is expanded (`$X` stays as written). In double quotes a backslash escapes
/// `"`, `\`, `$` and `` ` ``; single quotes keep everything literally. An unquoted value ends
/// at a ` #` comment.
pub fn read_environment_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading environment file {}", path.display()))?;
    parse_environment(&text).map_err(|(line, why)| {
        anyhow::anyhow!("environment file {} line {line}: {why}", path.display())
    })
}

/// Parses the text of an environment file; an error carries the 1-based line number.
fn parse_environment(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair = parse_environment_line(line).map_err(|e| (number, e.to_string()))?;
        vars.push(pair);
    }
    Ok(vars)
}

fn parse_environment_line(line: &str) -> anyhow::Result<(String, String)> {
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    };
    let Some((key, value)) = line.split_once('=') else {
        bail!("expected KEY=VALUE, found {}", quoted(line));
    };
    let key = key.trim_end();
    let valid_key = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        bail!("{} is not a valid variable name", quoted(key));
    }
    let value = value.trim_start();
    let (value, rest) = if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        let Some(end) = end else {
            bail!("unterminated double quote in the value of {key}");
        };
        (out, &body[end..])
    } else if let Some(body) = value.strip_prefix('\'') {
        let Some(end) = body.find('\'') else {
            bail!("unterminated single quote in the value of {key}");
        };
        (body[..end].to_string(), &body[end + 1..])
    } else {
        let end = value
            .char_indices()
            .find(|&(i, c)| c == '#' && i > 0 && value[..i].ends_with([' ', '\t']))
            .map_or(value.len(), |(i, _)| i);
        (value[..end].trim_end().to_string(), "")
    };
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        bail!(
            "unexpected {} after the quoted value of {key}",
            quoted(rest)
        );
    }
    if value.contains('\0') {
        bail!("the value of {key} contains a NUL byte");
    }
    Ok((key.to_string(), value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The (name, value) pairs of one tracing event.
    type Fields = Vec<(String, String)>;

    /// Records the fields of every tracing event.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<Mutex<Vec<Fields>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Visit(Vec<(String, String)>);
            impl tracing::field::Visit for Visit {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push((f.name().to_string(), format!("{v:?}")));
                }
            }
            let mut visit = Visit(Vec::new());
            event.record(&mut visit);
            self.0.lock().unwrap().push(visit.0);
        }
    }

    #[test]
    fn output_lines_carry_the_deployment_and_event_as_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let dir = tempfile::tempdir().unwrap();
        let log = HookLog::open(&dir.path().join("hooks.log")).unwrap();
        log.set_fields(LogFields {
            deployment_id: "d-1".into(),
            application: "shop".into(),
            deployment_group: "web".into(),
            lifecycle_event: String::new(),
        });
        log.set_event("AfterInstall");
        tracing::subscriber::with_default(subscriber, || {
            log.output_line("AfterInstall run.sh", Stream::Stdout, "hello");
            log.note_script("AfterInstall run.sh", "exited 0");
        });
        let events = capture.0.lock().unwrap().clone();
        assert_eq!(events.len(), 2);
        for fields in &events {
            for (name, value) in [
                ("deployment_id", "d-1"),
                ("application", "shop"),
                ("deployment_group", "web"),
                ("lifecycle_event", "AfterInstall"),
            ] {
                assert!(
                    fields.iter().any(|(n, v)| n == name && v == value),
                    "{name}={value} missing from {fields:?}"
                );
            }
        }
    }

    fn check(text: &str, expected: &[(&str, &str)]) {
        let got = parse_environment(text).unwrap();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "input: {text:?}");
    }

    fn check_err(text: &str, line: usize, contains: &str) {
        let (got_line, why) = parse_environment(text).unwrap_err();
        assert_eq!(got_line, line, "input: {text:?}: {why}");
        assert!(
            why.contains(contains),
            "{why:?} should contain {contains:?}"
        );
    }

    #[test]
    fn environment_file_values() {
        check("", &[]);
        check("\n# comment\n   \n", &[]);
        check("A=1", &[("A", "1")]);
        check("A=", &[("A", "")]);
        check("export A=1", &[("A", "1")]);
        check("export\tA=1", &[("A", "1")]);
        check("exported=1", &[("exported", "1")]);
        check("  A = 1  ", &[("A", "1")]);
        check("A=a b c", &[("A", "a b c")]);
        check("A=b # comment", &[("A", "b")]);
        check("A=http://x/#frag", &[("A", "http://x/#frag")]);
        check("A=x=y", &[("A", "x=y")]);
        check(
            "A=\"quoted # not a comment\"",
            &[("A", "quoted # not a comment")],
        );
        check(
            "A=\"a \\\"b\\\" \\\\ \\$X \\n\"",
            &[("A", "a \"b\" \\ $X \\n")],
        );
        check("A='$HOME \\ \"x\"'", &[("A", "$HOME \\ \"x\"")]);
        check("A='x' # trailing comment", &[("A", "x")]);
        check("A=$HOME", &[("A", "$HOME")]);
        check("_A1=1\nB=2\r\n", &[("_A1", "1"), ("B", "2")]);
        check("A=1\nA=2", &[("A", "1"), ("A", "2")]);
    }

    #[test]
    fn environment_file_errors() {
        check_err("A=1\nnot a pair\n", 2, "expected KEY=VALUE");
        check_err("1A=x", 1, "not a valid variable name");
        check_err("A-B=x", 1, "not a valid variable name");
        check_err("=x", 1, "not a valid variable name");
        check_err("# ok\n\nA=\"open", 3, "unterminated double quote");
        check_err("A='open", 1, "unterminated single quote");
        check_err("A='x' y", 1, "unexpected");
        check_err("export A", 1, "expected KEY=VALUE");
    }

    #[test]
    fn environment_file_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.env");
        std::fs::write(&path, "A=1\n\nbroken\n").unwrap();
        let err = read_environment_file(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let missing = read_environment_file(&dir.path().join("nope")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope"), "{missing:#}");
    }

    #[test]
    fn split_lines_keeps_unfinished_line() {
        let mut buf = b"one\ntwo\r\nthr".to_vec();
        assert_eq!(split_lines(&mut buf, false), vec!["one", "two"]);
        assert_eq!(buf, b"thr");
        buf.extend_from_slice(b"ee\nfour");
        assert_eq!(split_lines(&mut buf, false), vec!["three"]);
        assert_eq!(split_lines(&mut buf, true), vec!["four"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn split_lines_cuts_runaway_line() {
        let mut buf = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = split_lines(&mut buf, false);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn location_normalization() {
        let ok = [
            ("scripts/a.sh", "scripts/a.sh"),
            ("/scripts/a.sh", "scripts/a.sh"),
            ("./scripts/../a.sh", "a.sh"),
            ("//a.sh", "a.sh"),
        ];
        for (input, want) in ok {
            assert_eq!(
                normalize_location(input),
                Ok(PathBuf::from(want)),
                "{input}"
            );
        }
        for bad in ["../a.sh", "/../a.sh", "scripts/../../a.sh", "", "/", "."] {
            assert!(normalize_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tail_keeps_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = HookLog::open(&dir.path().join("hooks.log")).unwrap();
        for i in 0..1000 {
            log.note(&format!("line {i}"));
        }
        let tail = log.take_tail();
        assert!(tail.len() <= TAIL_BYTES, "{}", tail.len());
        assert!(tail.len() > TAIL_BYTES / 2, "{}", tail.len());
        assert!(tail.ends_with("hoist| line 999\n"), "{tail}");
        assert!(!tail.contains("line 0\n"));
        // Every kept line is whole: it starts with a timestamp.
        for line in tail.lines() {
            assert!(
                line.starts_with("20") && line.contains(" hoist| line "),
                "{line}"
            );
        }
        assert_eq!(log.take_tail(), "");
        let file = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(file.lines().count(), 1000);
    }
}
