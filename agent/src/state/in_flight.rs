//! The in-flight marker, kept in two files so that only what recovery needs after a power
//! loss costs a sync.
//!
//! - `in-flight.log`: one line per lifecycle event (which deployment, which event, and the
//!   deployment's record as far as it got, so recovery can rebuild `result.json`), appended
//!   and made durable with one `fdatasync`. The file is created at the deployment's first
//!   event (then, and only then, its directory is synced too) and removed when the
//!   deployment's end is recorded. Each line is `<checksum> <json>`: the last line whose
//!   checksum matches is the marker, so a line torn by a power loss during its append leaves
//!   the previous event's marker in force, which is what recovery would have seen had the
//!   append not begun. Nothing is renamed, so no event needs a directory sync.
//! - `in-flight-script.json`, written without a sync before each script and once its process
//!   group exists. The script's part only matters to an agent restarted during the same boot
//!   (after a reboot no process group survives, and the boot id says so), and the page cache
//!   keeps it for that; after a power loss it may be missing, stale or torn, and is then
//!   ignored.
//!
//! `in-flight.json` (one durable JSON document, replaced by rename at every event) is what
//! versions before the log wrote: it is still read when there is no log, so an agent upgraded
//! in place recovers the deployment its predecessor left in flight, and is removed with the
//! marker.
//!
//! It decides nothing about what a deployment does; `deployment::journal` writes the marker,
//! `recovery` and `status` read it through [`StateDir::in_flight`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::{files, InFlight, StateDir};

impl StateDir {
    /// The deployment in flight, if any: the durable marker, with the running script, its
    /// process group and the group's identity from the script's part when that part belongs
    /// to the marker's deployment and event. A script part that cannot be read is ignored.
    pub fn in_flight(&self) -> anyhow::Result<Option<InFlight>> {
        let mut marker = match read_marker_log(&self.in_flight_log_path())? {
            Some(marker) => marker,
            // Left by a version before the log.
            None => match files::read_json::<InFlight>(&self.in_flight_path())? {
                Some(marker) => marker,
                None => return Ok(None),
            },
        };
        match files::read_json::<InFlight>(&self.in_flight_script_path()) {
            Ok(Some(script))
                if script.deployment_id == marker.deployment_id
                    && script.event == marker.event
                    && script.event_started_at_ms == marker.event_started_at_ms =>
            {
                marker.script = script.script;
                marker.pgid = script.pgid;
                marker.boot_id = script.boot_id;
                marker.pgid_start_time = script.pgid_start_time;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring the running script's marker: {e:#}"),
        }
        Ok(Some(marker))
    }

    /// Writes the marker at the start of an event, durably: appended to `in-flight.log` and
    /// synced once. `first` (the deployment's first event) starts the log afresh, and syncs
    /// the state directory so the new file's entry is durable too. The previous event's
    /// script part is removed (it no longer applies either way: it names another event).
    pub fn begin_in_flight(&self, marker: &InFlight, first: bool) -> anyhow::Result<()> {
        let path = self.in_flight_log_path();
        let mut line = serde_json::to_vec(marker)
            .with_context(|| format!("serializing {}", path.display()))?;
        let mut framed = checksum(&line).into_bytes();
        framed.push(b' ');
        framed.append(&mut line);
        framed.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut file = open_log(&path, first)?;
            file.write_all(&framed)?;
            file.sync_data()?;
            if first {
                File::open(self.root())?.sync_all()?;
            }
            Ok(())
        };
        write().with_context(|| format!("writing {}", path.display()))?;
        files::remove_file(&self.in_flight_script_path())
    }

    /// Records the running script of the marker's event (and, once known, its process group)
    /// without a sync. The deployment's record is not repeated in it.
    pub fn record_running_script(&self, marker: &InFlight) -> anyhow::Result<()> {
        let part = InFlight {
            record: None,
            ..marker.clone()
        };
        files::write_json_unsynced(&self.in_flight_script_path(), &part)
            .context("recording the running script")
    }

    /// Removes the marker (both parts, and a previous version's `in-flight.json`) once the
    /// deployment's end is recorded.
    pub fn clear_in_flight(&self) -> anyhow::Result<()> {
        files::remove_file(&self.in_flight_script_path())?;
        files::remove_file(&self.in_flight_path())?;
        files::remove_file(&self.in_flight_log_path())
    }
}

/// `in-flight.log` for appending; created (or emptied) when `fresh`.
fn open_log(path: &Path, fresh: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).mode(0o600);
    if fresh {
        // Truncating in append mode: set_len, as O_TRUNC cannot be combined with append in std.
        let file = options.create(true).open(path)?;
        file.set_len(0)?;
        Ok(file)
    } else {
        options.open(path)
    }
}

/// The checksum of one marker line: the first 8 bytes of its SHA-256, in hex.
fn checksum(json: &[u8]) -> String {
    Sha256::digest(json)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last intact marker of `in-flight.log`; `Ok(None)` when the file does not exist or holds
/// no intact line. Reading stops at the first line that is torn (no newline, or a checksum
/// that does not match): a line is appended only once the one before it is synced, so a torn
/// line is the last one written.
pub fn read_marker_log(path: &Path) -> anyhow::Result<Option<InFlight>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut last = None;
    let mut rest = &bytes[..];
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            break;
        };
        let (sum, json) = (&line[..space], &line[space + 1..]);
        if sum != checksum(json).as_bytes() {
            break;
        }
        match serde_json::from_slice::<InFlight>(json) {
            Ok(marker) => last = Some(marker),
            Err(e) => {
                // Intact but unreadable: written by another version; say so, do not guess.
                return Err(e).with_context(|| format!("parsing {}", path.display()));
            }
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SCHEMA_VERSION;

    fn marker(event: &str, started: u64) -> InFlight {
        InFlight {
            schema_version: SCHEMA_VERSION,
            deployment_id: "d-1".into(),
            command_id: None,
            application: "shop".into(),
            group: "web".into(),
            group_id: Some("g-1".into()),
            agent_pid: 1,
            started_at_ms: 1,
            event: event.into(),
            event_started_at_ms: started,
            script: None,
            pgid: None,
            boot_id: None,
            pgid_start_time: None,
            record: None,
        }
    }

    #[test]
    fn the_script_part_applies_only_to_the_event_it_names_and_a_torn_one_is_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        assert_eq!(state.in_flight().expect("read"), None);

        let begun = marker("ApplicationStart", 5);
        state.begin_in_flight(&begun, true).expect("begin");
        let running = InFlight {
            script: Some("start.sh".into()),
            pgid: Some(42),
            boot_id: Some("boot".into()),
            pgid_start_time: Some(7),
            ..begun.clone()
        };
        state.record_running_script(&running).expect("script");
        assert_eq!(state.in_flight().expect("read"), Some(running.clone()));

        // The same event name started again later (another deployment's, or a retry):
        // the older script part does not apply.
        state
            .begin_in_flight(&marker("ApplicationStart", 6), false)
            .expect("begin");
        assert!(!state.in_flight_script_path().exists(), "removed at begin");
        state.record_running_script(&running).expect("script");
        assert_eq!(
            state.in_flight().expect("read"),
            Some(marker("ApplicationStart", 6))
        );

        // Torn by a crash of the host: the durable marker is still read.
        std::fs::write(state.in_flight_script_path(), "{\"schema_ver").expect("tear");
        assert_eq!(
            state.in_flight().expect("read"),
            Some(marker("ApplicationStart", 6))
        );

        state.clear_in_flight().expect("clear");
        assert!(!state.in_flight_log_path().exists());
        assert!(!state.in_flight_script_path().exists());
        assert_eq!(state.in_flight().expect("read"), None);
    }

    /// The log's lines, as written.
    fn lines(state: &StateDir) -> Vec<String> {
        std::fs::read_to_string(state.in_flight_log_path())
            .expect("log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_last_intact_line_is_the_marker_and_a_torn_append_leaves_the_one_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        state
            .begin_in_flight(&marker("BeforeInstall", 1), true)
            .expect("begin");
        state
            .begin_in_flight(&marker("Install", 2), false)
            .expect("begin");
        assert_eq!(state.in_flight().expect("read"), Some(marker("Install", 2)));
        let written = lines(&state);
        assert_eq!(written.len(), 2, "one line per event: {written:?}");

        // A power loss during the third append: only part of its line reached the disk.
        let third = {
            state
                .begin_in_flight(&marker("AfterInstall", 3), false)
                .expect("begin");
            lines(&state).pop().expect("third line")
        };
        for cut in [1, 16, 17, third.len() / 2, third.len()] {
            let torn = format!("{}\n{}\n{}", written[0], written[1], &third[..cut]);
            std::fs::write(state.in_flight_log_path(), torn).expect("tear");
            assert_eq!(
                state.in_flight().expect("read"),
                Some(marker("Install", 2)),
                "torn after {cut} bytes"
            );
        }

        // A whole line whose bytes are not what was synced (a stale or reused block): its
        // checksum fails and neither it nor anything after it counts.
        let flipped = written[1].replacen("Install", "Instull", 1);
        std::fs::write(
            state.in_flight_log_path(),
            format!("{}\n{flipped}\n{third}\n", written[0]),
        )
        .expect("corrupt");
        assert_eq!(
            state.in_flight().expect("read"),
            Some(marker("BeforeInstall", 1))
        );

        // Nothing intact at all: no marker, not an error.
        std::fs::write(state.in_flight_log_path(), &third[..10]).expect("torn first");
        assert_eq!(state.in_flight().expect("read"), None);
    }

    #[test]
    fn a_new_deployment_starts_the_log_afresh() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        // A previous deployment's lines, left behind (its removal did not reach the disk).
        state
            .begin_in_flight(&marker("ValidateService", 1), true)
            .expect("begin");
        let next = InFlight {
            deployment_id: "d-2".into(),
            ..marker("BeforeBlockTraffic", 9)
        };
        state.begin_in_flight(&next, true).expect("begin");
        assert_eq!(lines(&state).len(), 1);
        assert_eq!(state.in_flight().expect("read"), Some(next));
    }

    #[test]
    fn a_marker_written_by_a_version_before_the_log_is_read_and_cleared() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        // As the previous version wrote it: pretty JSON, replaced by rename.
        files::write_json(&state.in_flight_path(), &marker("AfterInstall", 4)).expect("old");
        let running = InFlight {
            script: Some("after.sh".into()),
            pgid: Some(77),
            ..marker("AfterInstall", 4)
        };
        state.record_running_script(&running).expect("script");
        assert_eq!(state.in_flight().expect("read"), Some(running));

        state.clear_in_flight().expect("clear");
        assert!(!state.in_flight_path().exists());
        assert_eq!(state.in_flight().expect("read"), None);
    }
}
