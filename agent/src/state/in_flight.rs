//! The in-flight marker, kept in two files so that only what recovery needs after a power
//! loss costs a sync: `in-flight.json`, written durably once per lifecycle event (which
//! deployment, which event, and the deployment's record as far as it got, so recovery can
//! rebuild `result.json`), and `in-flight-script.json`, written without a sync before each
//! script and once its process group exists. The script's part only matters to an agent
//! restarted during the same boot (after a reboot no process group survives, and the boot id
//! says so), and the page cache keeps it for that; after a power loss it may be missing, stale
//! or torn, and is then ignored.
//!
//! It decides nothing about what a deployment does; `deployment::journal` writes the marker,
//! `recovery` and `status` read it through [`StateDir::in_flight`].

use anyhow::Context;

use super::{files, InFlight, StateDir};

impl StateDir {
    /// The deployment in flight, if any: the durable marker, with the running script, its
    /// process group and the group's identity from the script's part when that part belongs
    /// to the marker's deployment and event. A script part that cannot be read is ignored.
    pub fn in_flight(&self) -> anyhow::Result<Option<InFlight>> {
        let Some(mut marker) = files::read_json::<InFlight>(&self.in_flight_path())? else {
            return Ok(None);
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

    /// Writes the marker at the start of an event, durably; the previous event's script part
    /// is removed (it no longer applies either way: it names another event).
    pub fn begin_in_flight(&self, marker: &InFlight) -> anyhow::Result<()> {
        files::write_json(&self.in_flight_path(), marker)?;
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

    /// Removes both parts of the marker once the deployment's end is recorded.
    pub fn clear_in_flight(&self) -> anyhow::Result<()> {
        files::remove_file(&self.in_flight_script_path())?;
        files::remove_file(&self.in_flight_path())
    }
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
        state.begin_in_flight(&begun).expect("begin");
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
            .begin_in_flight(&marker("ApplicationStart", 6))
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
        assert!(!state.in_flight_path().exists());
        assert!(!state.in_flight_script_path().exists());
        assert_eq!(state.in_flight().expect("read"), None);
    }
}
