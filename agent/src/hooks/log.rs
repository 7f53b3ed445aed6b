//! The hook log of one deployment: timestamped lines in a file (the agent's notes and the
//! scripts' output, stdout and stderr marked), the last few KB kept in memory for the event
//! report, and every line also sent to `tracing` with the deployment's fields (the journal's
//! DEPLOYMENT_ID, ...).
//!
//! It is not where a script's output first lands: that is `output`, whose tailer hands the
//! lines over here.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// How much recent output [`HookLog::take_tail`] keeps (whole lines).
const TAIL_BYTES: usize = 4096;

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
    pub(super) fn note_hook(&self, label: &str, line: &str) {
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
    pub(super) fn output_line(&self, label: &str, stream: Stream, line: &str) {
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

/// Which of a script's two output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(super) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
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
            log.note_hook("AfterInstall run.sh", "exited 0");
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
