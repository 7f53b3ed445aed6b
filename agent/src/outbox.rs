//! The report outbox: every event report is written here before it is sent and removed only
//! once the coordinator acknowledged it, so neither a coordinator outage nor an agent restart
//! loses one.
//!
//! Layout ([`OutboxDir`]): `outbox/<command>/next-seq` (the next sequence number of the
//! command) and `outbox/<command>/<seq, 10 digits>.json` (one [`Report`] each). Sequence
//! numbers make the coordinator's recording idempotent, so resending after an unacknowledged
//! attempt never duplicates a report. This module stores and orders; `daemon` sends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use hoist_protocol::agent::{Report, ReportBody};
use tokio::sync::Notify;

use crate::state::{self, OutboxDir, StateDir};

#[derive(Clone)]
pub struct Outbox {
    dir: OutboxDir,
    /// Wakes the sender when a report is queued.
    notify: Arc<Notify>,
    /// Wakes whoever waits for a command's reports to be acknowledged.
    acked: Arc<Notify>,
    /// Serializes sequence-number allocation between the deployment and recovery.
    seq_lock: Arc<Mutex<()>>,
}

/// A queued report and the file that holds it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub command_id: String,
    pub report: Report,
    pub path: PathBuf,
}

impl Outbox {
    pub fn open(state: &StateDir) -> anyhow::Result<Outbox> {
        let dir = state.outbox();
        state::create_private_dir(dir.path())?;
        Ok(Outbox {
            dir,
            notify: Arc::new(Notify::new()),
            acked: Arc::new(Notify::new()),
            seq_lock: Arc::new(Mutex::new(())),
        })
    }

    fn command_dir(&self, command_id: &str) -> PathBuf {
        self.dir.command_dir(command_id)
    }

    /// The sequence number the next report of `command_id` gets, read without writing
    /// anything (for a report sent directly because the outbox cannot be written).
    pub fn next_seq(&self, command_id: &str) -> u64 {
        std::fs::read_to_string(self.dir.next_seq_path(command_id))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1)
    }

    /// Queues a report durably and returns its sequence number.
    pub fn push(&self, command_id: &str, body: ReportBody) -> anyhow::Result<u64> {
        let _guard = self
            .seq_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = self.command_dir(command_id);
        state::create_private_dir(&dir)?;
        let seq_path = self.dir.next_seq_path(command_id);
        let seq = match std::fs::read_to_string(&seq_path) {
            Ok(t) => t
                .trim()
                .parse::<u64>()
                .with_context(|| format!("corrupt {}", seq_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e).with_context(|| format!("reading {}", seq_path.display())),
        };
        let report = Report {
            seq,
            at_ms: state::now_ms(),
            body,
        };
        // The report first, then the counter: a crash in between re-uses the number for the
        // same report content position, never skips or duplicates one.
        state::write_json(&self.dir.report_path(command_id, seq), &report)?;
        state::write_atomic(&seq_path, format!("{}\n", seq + 1).as_bytes(), 0o600)?;
        self.notify.notify_one();
        Ok(seq)
    }

    /// Every queued report, oldest command directory first, in sequence order.
    pub fn pending(&self) -> anyhow::Result<Vec<Pending>> {
        let mut commands = Vec::new();
        let root = self.dir.path();
        for entry in
            std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            if entry.path().is_dir() {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                commands.push((modified, entry.path()));
            }
        }
        commands.sort();
        let mut out = Vec::new();
        for (_, dir) in commands {
            let command_id = OutboxDir::command_id_of(&dir);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| OutboxDir::is_report(p))
                .collect();
            files.sort();
            for path in files {
                match state::read_json::<Report>(&path) {
                    Ok(Some(report)) => out.push(Pending {
                        command_id: command_id.clone(),
                        report,
                        path,
                    }),
                    Ok(None) => {}
                    Err(e) => {
                        // A report that cannot be read can never be sent; keep it aside for
                        // inspection rather than blocking every later report.
                        tracing::error!("unreadable queued report, moved aside: {e:#}");
                        let _ = std::fs::rename(&path, OutboxDir::corrupt_path(&path));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes an acknowledged report; the command's directory goes with its last report
    /// once the command is complete.
    pub fn ack(&self, pending: &Pending) -> anyhow::Result<()> {
        state::remove_file(&pending.path)?;
        self.acked.notify_waiters();
        if matches!(pending.report.body, ReportBody::Completed { .. }) {
            if let Some(dir) = pending.path.parent() {
                let only_counter = std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .all(|e| OutboxDir::is_next_seq(&e.file_name()))
                    })
                    .unwrap_or(false);
                if only_counter {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
            }
        }
        Ok(())
    }

    /// Sets aside a report the coordinator will never take, as `*.refused` for inspection;
    /// like an acknowledgement, it no longer waits to be sent.
    pub fn set_aside(&self, pending: &Pending) -> anyhow::Result<()> {
        let aside = OutboxDir::refused_path(&pending.path);
        std::fs::rename(&pending.path, &aside)
            .with_context(|| format!("moving {} aside", pending.path.display()))?;
        self.acked.notify_waiters();
        Ok(())
    }

    /// Whether any report of `command_id` still waits to be acknowledged.
    pub fn has_pending(&self, command_id: &str) -> bool {
        std::fs::read_dir(self.command_dir(command_id))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .any(|e| OutboxDir::is_report(&e.path()))
            })
            .unwrap_or(false)
    }

    /// Waits until no report of `command_id` waits to be acknowledged.
    pub async fn settled(&self, command_id: &str) {
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if !self.has_pending(command_id) {
                return;
            }
            acked.await;
        }
    }

    /// Waits until a report is queued (or returns at once if one was queued since the last
    /// wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_protocol::agent::CommandStatus;

    #[test]
    fn reports_survive_reopening_in_order_and_vanish_when_acked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        let outbox = Outbox::open(&state).expect("outbox");
        for event in ["ApplicationStop", "DownloadBundle"] {
            outbox
                .push(
                    "cmd-1",
                    ReportBody::EventStarted {
                        event: event.into(),
                    },
                )
                .expect("push");
        }
        let seq = outbox
            .push(
                "cmd-1",
                ReportBody::Completed {
                    status: CommandStatus::Succeeded,
                    failed_event: None,
                    message: None,
                },
            )
            .expect("push");
        assert_eq!(seq, 3);

        let reopened = Outbox::open(&state).expect("outbox");
        let pending = reopened.pending().expect("pending");
        assert_eq!(
            pending.iter().map(|p| p.report.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(pending.iter().all(|p| p.command_id == "cmd-1"));
        for p in &pending {
            reopened.ack(p).expect("ack");
        }
        assert!(reopened.pending().expect("pending").is_empty());
        assert!(!reopened.command_dir("cmd-1").exists());
    }

    #[tokio::test]
    async fn settled_returns_once_the_commands_last_report_is_acknowledged() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        let outbox = Outbox::open(&state).expect("outbox");
        assert!(!outbox.has_pending("cmd-1"));
        outbox.settled("cmd-1").await;
        for event in ["Install", "ApplicationStart"] {
            let body = ReportBody::EventStarted {
                event: event.into(),
            };
            outbox.push("cmd-1", body).expect("push");
        }
        outbox
            .push("cmd-2", ReportBody::Unknown)
            .expect("push another command's report");
        assert!(outbox.has_pending("cmd-1"));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.settled("cmd-1").await }
        });
        let pending = outbox.pending().expect("pending");
        let mine: Vec<&Pending> = pending.iter().filter(|p| p.command_id == "cmd-1").collect();
        outbox.ack(mine[0]).expect("ack");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one of its reports is still queued");
        outbox.ack(mine[1]).expect("ack");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("settled once both are acknowledged")
            .expect("waiter");
        // Another command's queued report does not count.
        assert!(!outbox.has_pending("cmd-1") && outbox.has_pending("cmd-2"));
    }
}
