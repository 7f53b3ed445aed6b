//! Runs a hook's script and supervises it to its end: its own process group, stdin null,
//! the environment given and nothing else, the timeout (SIGTERM to the group, a grace
//! period, then SIGKILL), the agent's stop (a grace period to finish first), and the group
//! killed if the supervising future is dropped.
//!
//! Everything that can fail without a process is settled before the fork, in this order:
//! the script found in the bundle (`script`), the user resolved (`runas`), the output files
//! created (`output`). What an outcome says in the log is `mod.rs`'s.

use std::fs::File;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::log::HookLog;
use super::output::{create_output_files, Tailer};
use super::runas::{resolve_user, Identity};
use super::script::{resolve_script, Resolved};
use super::{outcome_of, HookOutcome, HookRun};

/// How often the output files are read while a script runs.
const POLL: Duration = Duration::from_millis(50);
/// How much is read from one output file per poll, so a flood cannot stall the loop.
const READ_PER_POLL: u64 = 1 << 20;
/// How long, after SIGKILL, the group may take to disappear before the outcome is given anyway.
const KILL_SETTLE: Duration = Duration::from_secs(2);
/// How much the final drain reads at most, because a daemon may still be writing.
const READ_FINAL: u64 = 16 << 20;

/// Runs the hook to its end; `run_hook` documents `stop`, `on_spawn` and dropping.
pub(super) async fn run_to_end(
    run: &HookRun,
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
                log.note_hook(&run.label, "the script had no execute permission: added it");
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
    run: &HookRun,
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
                log.note_hook(&run.label, &format!(
                    "timeout of {} reached: sending SIGTERM to process group {pgid}",
                    humantime::format_duration(run.timeout),
                ));
                kill_group(log, &run.label, pgid, Signal::SIGTERM);
                ending = Some((Ending::Timeout, after(run.kill_grace)));
            }
            _ = stop.cancelled(), if stop_deadline.is_none() && ending.is_none() => {
                log.note_hook(&run.label, &format!(
                    "the agent is stopping: the script may run {} more",
                    humantime::format_duration(run.stop_grace),
                ));
                stop_deadline = Some(after(run.stop_grace));
            }
            _ = sleep_until(stop_deadline.unwrap_or(far)), if stop_deadline.is_some() && ending.is_none() => {
                log.note_hook(&run.label, &format!(
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

fn send_sigkill(log: &HookLog, run: &HookRun, pgid: Pid) {
    log.note_hook(
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
        Err(err) => log.note_hook(
            label,
            &format!("sending {signal} to process group {pgid}: {err}"),
        ),
    }
}

/// Kills the script's process group if `run_hook` is dropped while the script runs, so an
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

fn spawn(
    run: &HookRun,
    script: &Path,
    identity: Option<&Identity>,
    out: &File,
    err: &File,
    log: &HookLog,
) -> Result<Child, HookOutcome> {
    let first = command(run, script, None, identity, out, err).and_then(|mut c| c.spawn());
    let result = match first {
        Err(e) if e.raw_os_error() == Some(Errno::ENOEXEC as i32) => {
            log.note_hook(
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
                    reason: format!("{reason} (as user {:?})", id.name),
                }
            }
            _ => HookOutcome::SpawnFailed { reason },
        }
    })
}

fn command(
    run: &HookRun,
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
        id.apply(&mut cmd);
    }
    Ok(cmd)
}
