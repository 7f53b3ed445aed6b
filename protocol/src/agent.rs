//! Agent ↔ coordinator messages.
//!
//! Routes (all JSON, all under [`crate::API_PREFIX`]):
//! - `POST /v1/hosts/register` with `Authorization: Bearer <registration token>`:
//!   [`RegisterRequest`] → [`RegisterResponse`].
//! - `POST /v1/hosts/poll` with host auth: [`PollRequest`] → [`PollResponse`]; held open until
//!   a command exists for the host or `wait_secs` pass.
//! - `POST /v1/commands/{command_id}/reports` with host auth: [`Report`] → [`ReportAck`];
//!   idempotent on (command id, `seq`).
//! - `POST /v1/hosts/heartbeat` with host auth: [`Heartbeat`] → [`HeartbeatAck`]; sent
//!   while a command runs (a hook may be silent for an hour) so the host's lease holds.
//! - `GET /v1/bundles/{sha256}` with host auth: the bundle bytes; honours `Range`.
//!
//! Host auth is the header [`crate::HOST_ID_HEADER`] with the host id plus
//! `Authorization: Bearer <host secret>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub host_id: String,
    /// Shown once; the coordinator keeps only its hash.
    pub host_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    pub name: String,
    /// The host's tags from its config, sent on every poll. The coordinator takes a host's
    /// tags at registration only; a later difference is recorded as a request that an
    /// operator accepts (`hoist hosts tag HOST --accept`). The name likewise.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub agent_version: String,
    /// How long the coordinator may hold the request; it caps this (about 30 s).
    #[serde(default)]
    pub wait_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollResponse {
    /// `None` when the wait ended with no work.
    #[serde(default)]
    pub command: Option<Command>,
    /// How often the agent should send a [`Heartbeat`] while it runs a command, derived
    /// from the coordinator's host lease. Absent from older coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Where this host stands in each deployment group it matches, as the coordinator
    /// sees it. Absent from older coordinators (`None`, unlike an empty list: no groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Vec<GroupSync>>,
}

/// This host in one of its deployment groups: whether it runs the group's target revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSync {
    pub application: String,
    pub deployment_group: String,
    pub deployment_group_id: String,
    pub sync: crate::operator::SyncState,
    /// The revision it runs for the group, described ([`Revision::describe`]).
    #[serde(default)]
    pub revision: Option<String>,
    /// Out of sync: the failing event and the error.
    #[serde(default)]
    pub failed_event: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// "This host is alive and still working": keeps the host's lease while a command runs
/// with nothing to report (a long hook, a big download).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The command the host is running, if any.
    #[serde(default)]
    pub command_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The running command's deployment was stopped (or the host was declared lost): finish
    /// the current script, report, and stop.
    #[serde(default)]
    pub aborted: bool,
}

/// `POST /v1/hosts/rollbacks`: the host switched a group back to a release it kept, by
/// `hoist-agent rollback` on the box rather than by a command, and now runs the revision of
/// deployment `deployment_id` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRollback {
    pub group_id: String,
    /// The deployment that installed the release now current.
    pub deployment_id: String,
    /// The host's own id of the rollback (its local deployment record).
    pub rollback_id: String,
    pub rolled_back_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRollbackAck {
    /// The host is now shown out of sync in the group, with the rollback as the reason.
    pub recorded: bool,
}

/// One host's share of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub command_id: String,
    pub deployment_id: String,
    pub application: String,
    pub deployment_group: String,
    pub deployment_group_id: String,
    pub revision: Revision,
    /// Path of the appspec inside the bundle when not `appspec.yml`/`appspec.yaml`.
    #[serde(default)]
    pub appspec_path: Option<String>,
    /// `DISALLOW`, `OVERWRITE` or `RETAIN`; the appspec's own value wins.
    #[serde(default)]
    pub file_exists_behavior: Option<String>,
    /// Lifecycle event names to run, any subset; the agent runs them in lifecycle order.
    pub events: Vec<String>,
    #[serde(default)]
    pub ignore_application_stop_failures: bool,
    /// The deployment's variables, each an environment variable of its hooks (names as
    /// [`crate::variables`] allows). Absent from older coordinators, and left out when
    /// empty so older agents see the message they know.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// The revision's signed manifest, when it has one; the agent verifies it against the
    /// keys it trusts (`trust:`). Left out when absent, so older agents see the message
    /// they know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signature::SignedManifest>,
}

/// Where a revision's bundle is and how to verify it.
///
/// A kind this build does not know (from a newer coordinator) decodes as
/// [`Revision::Unknown`] naming it, so the rest of the message still decodes and the agent can
/// report what it did not understand; it encodes back as `{"kind": KIND}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", remote = "Self")]
pub enum Revision {
    /// In the coordinator's own content-addressed store: `GET /v1/bundles/{sha256}`.
    Coordinator { sha256: String, size: u64 },
    S3 {
        bucket: String,
        key: String,
        #[serde(default)]
        version_id: Option<String>,
        #[serde(default)]
        etag: Option<String>,
        sha256: String,
    },
    /// An HTTPS (or, for tests and closed networks, HTTP) URL, e.g. a presigned S3 URL.
    Url { url: String, sha256: String },
    /// A Git repository pinned to a full commit id (40 hex digits, or 64 for SHA-256 repos).
    Git { repository: String, commit: String },
    /// A revision kind from a newer peer: only its `kind` is kept.
    #[serde(skip)]
    Unknown { kind: String },
}

/// The `kind` tags [`Revision`] knows.
const REVISION_KINDS: [&str; 4] = ["coordinator", "s3", "url", "git"];

impl Serialize for Revision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Revision::Unknown { kind } => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("kind", kind)?;
                map.end()
            }
            // The derived (remote = "Self") encoding of the known kinds.
            known => Revision::serialize(known, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Buffered once, so a known kind is decoded by the derived code (with its precise
        // errors: a missing field is named) and an unknown one keeps its name.
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = match value.get("kind") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            Some(_) => return Err(D::Error::custom("revision kind must be a string")),
            None => return Err(D::Error::missing_field("kind")),
        };
        if REVISION_KINDS.contains(&kind.as_str()) {
            Revision::deserialize(value).map_err(D::Error::custom)
        } else {
            Ok(Revision::Unknown { kind })
        }
    }
}

impl Revision {
    /// A short human description, e.g. `s3://bucket/key` or `git repo@abc1234`. Safe to log
    /// and report: a URL's user info, query string (a presigned URL's signature) and fragment
    /// are left out.
    pub fn describe(&self) -> String {
        match self {
            Revision::Coordinator { sha256, .. } => {
                format!("coordinator bundle {}", short(sha256))
            }
            Revision::S3 {
                bucket,
                key,
                version_id,
                ..
            } => match version_id {
                Some(v) => format!("s3://{bucket}/{key}?versionId={v}"),
                None => format!("s3://{bucket}/{key}"),
            },
            Revision::Url { url, .. } => without_secrets(url),
            Revision::Git { repository, commit } => {
                format!("{}@{}", without_secrets(repository), short(commit))
            }
            Revision::Unknown { kind } => format!("revision of unsupported kind {kind:?}"),
        }
    }
}

/// `scheme://[user[:password]@]host/path[?query][#fragment]` without the user info, query and
/// fragment; anything that is not such a URL (a path, `host:repo`) unchanged.
fn without_secrets(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// 1, 2, 3, ... per command; the coordinator records each (command, seq) once, takes
    /// at most 256 per command, and none on a command that has ended (409) except an
    /// identical resend. Event names must be lifecycle events; long text is cut.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the agent wrote the report.
    pub at_ms: u64,
    #[serde(flatten)]
    pub body: ReportBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReportBody {
    EventStarted {
        event: String,
    },
    EventEnded {
        event: String,
        status: EventStatus,
        #[serde(default)]
        error_code: Option<ErrorCode>,
        /// A sentence: `script scripts/start.sh exited with code 3`.
        #[serde(default)]
        message: Option<String>,
        /// The failing script's location, when one failed.
        #[serde(default)]
        script: Option<String>,
        #[serde(default)]
        exit_code: Option<i32>,
        /// The last few KB of the event's hook output.
        #[serde(default)]
        log_tail: Option<String>,
        duration_ms: u64,
    },
    /// The command is over; no report follows.
    Completed {
        status: CommandStatus,
        #[serde(default)]
        failed_event: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    /// A report type from a newer agent; recorded but not interpreted.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Succeeded,
    Failed,
    /// Failed but ignored (`ignore_application_stop_failures`).
    FailedIgnored,
    /// Nothing to run (no hooks, or no previous revision).
    Skipped,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Succeeded,
    Failed,
    /// Stopped on the coordinator's "aborted" answer or on agent shutdown.
    Stopped,
    #[serde(other)]
    Unknown,
}

/// Why an event failed, for the coordinator to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ScriptMissing,
    ScriptNotExecutable,
    ScriptFailed,
    ScriptTimedOut,
    /// `runas` user unknown or the switch failed.
    RunAsFailed,
    AgentRestarted,
    BundleFetchFailed,
    BundleChecksumMismatch,
    BundleInvalid,
    AppspecInvalid,
    InstallFailed,
    Aborted,
    /// The host trusts signing keys and the revision's signature is missing or wrong.
    SignatureRefused,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// False when this (command, seq) was already recorded.
    pub recorded: bool,
    /// The deployment was stopped: finish the current script, report, and stop.
    #[serde(default)]
    pub aborted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_round_trips_with_kind_tag() {
        let r = Revision::S3 {
            bucket: "b".into(),
            key: "k.tgz".into(),
            version_id: Some("v1".into()),
            etag: None,
            sha256: "ab".into(),
        };
        let json = serde_json::to_string(&r).expect("serializes");
        assert!(json.contains(r#""kind":"s3""#), "{json}");
        assert_eq!(serde_json::from_str::<Revision>(&json).expect("parses"), r);
    }

    #[test]
    fn descriptions_leave_out_credentials_and_signatures() {
        let url = |url: &str| Revision::Url {
            url: url.into(),
            sha256: "ab".into(),
        };
        let git = |repository: &str| Revision::Git {
            repository: repository.into(),
            commit: "0123456789abcdef0123".into(),
        };
        let cases = [
            (
                url("https://s3.example/b/k.tgz?X-Amz-Credential=AK&X-Amz-Signature=sig"),
                "https://s3.example/b/k.tgz",
            ),
            (
                url("https://user:pw@cdn.example:8443/x.zip#frag"),
                "https://cdn.example:8443/x.zip",
            ),
            (url("http://127.0.0.1:9000?a=b"), "http://127.0.0.1:9000"),
            (
                git("https://ci:token@git.example/app.git"),
                "https://git.example/app.git@0123456789ab",
            ),
            (
                git("git@git.example:team/app.git"),
                "git@git.example:team/app.git@0123456789ab",
            ),
            (git("/srv/git/app.git"), "/srv/git/app.git@0123456789ab"),
        ];
        for (revision, shown) in cases {
            assert_eq!(revision.describe(), shown, "{revision:?}");
        }
    }

    #[test]
    fn unknown_fields_and_variants_from_newer_peers_are_tolerated() {
        let json = r#"{"seq":3,"at_ms":1,"type":"event_ended","event":"Install",
            "status":"quarantined","error_code":"disk_on_fire","duration_ms":5,"new_field":1}"#;
        let r: Report = serde_json::from_str(json).expect("parses");
        match r.body {
            ReportBody::EventEnded {
                status, error_code, ..
            } => {
                assert_eq!(status, EventStatus::Unknown);
                assert_eq!(error_code, Some(ErrorCode::Unknown));
            }
            other => panic!("unexpected body {other:?}"),
        }
        let r: Report =
            serde_json::from_str(r#"{"seq":4,"at_ms":1,"type":"teleported"}"#).expect("parses");
        assert_eq!(r.body, ReportBody::Unknown);
    }

    #[test]
    fn unknown_revision_kind_decodes_and_keeps_the_rest_of_the_command() {
        let json = r#"{"command_id":"c1","deployment_id":"d1","application":"shop",
            "deployment_group":"web","deployment_group_id":"g1","events":["Install"],
            "revision":{"kind":"oci","image":"registry.example/app@sha256:ab"}}"#;
        let command: Command = serde_json::from_str(json).expect("an unknown kind still decodes");
        assert_eq!(command.command_id, "c1");
        assert_eq!(command.revision, Revision::Unknown { kind: "oci".into() });
        let poll = format!(r#"{{"command":{json},"heartbeat_ms":500}}"#);
        let old: PollResponse = serde_json::from_str(&poll).expect("an older answer decodes");
        assert_eq!(old.sync, None, "an older coordinator says nothing of sync");
        let poll: PollResponse = serde_json::from_str(&poll).expect("the poll answer decodes");
        assert_eq!(
            poll.command.map(|c| c.revision),
            Some(command.revision.clone())
        );
        // It encodes as its kind alone and decodes back to the same value.
        let encoded = serde_json::to_string(&command.revision).expect("serializes");
        assert_eq!(encoded, r#"{"kind":"oci"}"#);
        assert_eq!(
            serde_json::from_str::<Revision>(&encoded).expect("parses"),
            command.revision
        );
    }

    #[test]
    fn known_revision_kinds_keep_their_errors() {
        let err = serde_json::from_str::<Revision>(r#"{"kind":"url","url":"https://x/b"}"#)
            .expect_err("sha256 is missing");
        assert!(err.to_string().contains("sha256"), "{err}");
        let err =
            serde_json::from_str::<Revision>(r#"{"url":"https://x/b"}"#).expect_err("no kind");
        assert!(err.to_string().contains("kind"), "{err}");
        let err = serde_json::from_str::<Revision>(r#"{"kind":7}"#).expect_err("not a string");
        assert!(err.to_string().contains("kind"), "{err}");
        for revision in [
            Revision::Coordinator {
                sha256: "ab".into(),
                size: 3,
            },
            Revision::Url {
                url: "https://x/b".into(),
                sha256: "ab".into(),
            },
            Revision::Git {
                repository: "https://git.example/r.git".into(),
                commit: "c".repeat(40),
            },
        ] {
            let json = serde_json::to_string(&revision).expect("serializes");
            assert_eq!(
                serde_json::from_str::<Revision>(&json).expect("parses"),
                revision
            );
        }
    }

    #[test]
    fn missing_required_field_is_an_error_naming_it() {
        let err = serde_json::from_str::<PollRequest>(r#"{"tags":{}}"#).expect_err("must fail");
        assert!(err.to_string().contains("name"), "{err}");
    }
}
