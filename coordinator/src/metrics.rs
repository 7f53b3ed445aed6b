//! The coordinator's Prometheus metrics: the registry, the series observed as requests
//! are served (HTTP requests by route pattern, method and status; how long polls were held;
//! how long a report took to be written and acknowledged), the fleet's figures set at each
//! scrape, and the process's replica id. Encoded in the text format by `prometheus-client`.
//!
//! Not here: who may read them (`api`, any operator token or `--metrics-public`) or how the
//! figures are counted (`service::figures`). The replica id is the replica's row id in
//! the store (`replicas`), stable for the process's life.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::service::Figures;
use hoist_protocol::operator::{CommandState, DeploymentState, SyncState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route's pattern (`/v1/deployments/{id}`), never the path asked for.
    route: String,
    method: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica_id: String,
}

pub struct Metrics {
    /// Encoding reads the registry while scrapes set the figures: one scrape at a time.
    registry: Mutex<Registry>,
    replica_id: String,
    requests: Family<RequestLabels, Counter>,
    poll_hold: Histogram,
    report_write: Histogram,
    hosts: Family<StateLabel, Gauge>,
    host_sync: Family<StateLabel, Gauge>,
    deployments: Family<StateLabel, Gauge>,
    commands: Family<StateLabel, Gauge>,
    catch_ups_pending: Gauge,
    releases_awaiting_approval: Gauge,
}

impl Metrics {
    /// The registry of replica `replica_id` (its id in the store's `replicas`).
    pub fn new(replica_id: String) -> Metrics {
        let mut registry = Registry::with_prefix("hoist");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            requests.clone(),
        );
        // 10 ms to about 41 s: an idle poll is held up to 30 s.
        let poll_hold = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        registry.register(
            "poll_hold_seconds",
            "How long a host's poll was held before its answer",
            poll_hold.clone(),
        );
        // 0.5 ms to about 4 s: a group commit waits for one sync of the database.
        let report_write = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "report_write_seconds",
            "How long an event report took from its arrival to its durable acknowledgement",
            report_write.clone(),
        );
        let hosts = Family::<StateLabel, Gauge>::default();
        registry.register(
            "hosts",
            "Hosts by state (online, lost, revoked)",
            hosts.clone(),
        );
        let host_sync = Family::<StateLabel, Gauge>::default();
        registry.register(
            "host_sync",
            "Hosts not revoked, per deployment group they match, by sync state",
            host_sync.clone(),
        );
        let deployments = Family::<StateLabel, Gauge>::default();
        registry.register("deployments", "Deployments by state", deployments.clone());
        let commands = Family::<StateLabel, Gauge>::default();
        registry.register(
            "commands",
            "Commands of the deployments not ended, by state",
            commands.clone(),
        );
        let catch_ups_pending = Gauge::default();
        registry.register(
            "catch_ups_pending",
            "Hosts (per group) a catch-up is on its way to or due at their next poll",
            catch_ups_pending.clone(),
        );
        let releases_awaiting_approval = Gauge::default();
        registry.register(
            "releases_awaiting_approval",
            "Releases waiting at a manual approval",
            releases_awaiting_approval.clone(),
        );
        registry.register(
            "replica",
            "This coordinator process (its replica id, as `hoist server replicas` lists it)",
            Info::new(ReplicaLabel {
                replica_id: replica_id.clone(),
            }),
        );
        Metrics {
            registry: Mutex::new(registry),
            replica_id,
            requests,
            poll_hold,
            report_write,
            hosts,
            host_sync,
            deployments,
            commands,
            catch_ups_pending,
            releases_awaiting_approval,
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// One answered request; `route` is the matched pattern (or a fixed word for none).
    pub fn request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn poll_held(&self, d: Duration) {
        self.poll_hold.observe(d.as_secs_f64());
    }

    pub fn report_written(&self, d: Duration) {
        self.report_write.observe(d.as_secs_f64());
    }

    /// The text format, the fleet's figures set from `f`. Every known state has a series,
    /// zero included, so a state that empties reads 0 rather than vanishing.
    pub fn render(&self, f: &Figures) -> Result<String, std::fmt::Error> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        set(&self.hosts, "online", f.hosts_online);
        set(&self.hosts, "lost", f.hosts_lost);
        set(&self.hosts, "revoked", f.hosts_revoked);
        for s in [
            SyncState::InSync,
            SyncState::CatchingUp,
            SyncState::OutOfSync,
            SyncState::NeverDeployed,
        ] {
            set(&self.host_sync, s.as_str(), count(&f.sync, s));
        }
        for s in [
            DeploymentState::Pending,
            DeploymentState::InProgress,
            DeploymentState::Succeeded,
            DeploymentState::Failed,
            DeploymentState::Stopped,
        ] {
            set(&self.deployments, s.as_str(), count(&f.deployments, s));
        }
        for s in [
            CommandState::Pending,
            CommandState::InProgress,
            CommandState::Succeeded,
            CommandState::Failed,
            CommandState::Stopped,
            CommandState::Skipped,
            CommandState::Interrupted,
            CommandState::Unknown,
        ] {
            set(&self.commands, s.as_str(), count(&f.commands, s));
        }
        self.catch_ups_pending.set(gauge_value(f.catch_ups_pending));
        self.releases_awaiting_approval
            .set(gauge_value(f.releases_awaiting_approval));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

fn count<S: PartialEq + Copy>(counts: &[(S, u64)], state: S) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| *s == state)
        .map(|(_, n)| n)
        .sum()
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn set(family: &Family<StateLabel, Gauge>, state: &str, n: u64) {
    family
        .get_or_create(&StateLabel {
            state: state.to_owned(),
        })
        .set(gauge_value(n));
}
