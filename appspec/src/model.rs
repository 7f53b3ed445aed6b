//! The validated appspec: plain data, no YAML types leak out of this crate.

use std::path::PathBuf;

/// The lifecycle events of an EC2/on-premises deployment, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleEvent {
    BeforeBlockTraffic,
    AfterBlockTraffic,
    ApplicationStop,
    DownloadBundle,
    BeforeInstall,
    Install,
    AfterInstall,
    ApplicationStart,
    ValidateService,
    BeforeAllowTraffic,
    AfterAllowTraffic,
}

impl LifecycleEvent {
    /// All events in execution order.
    pub const ALL: [LifecycleEvent; 11] = [
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::DownloadBundle,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::Install,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::BeforeBlockTraffic => "BeforeBlockTraffic",
            LifecycleEvent::AfterBlockTraffic => "AfterBlockTraffic",
            LifecycleEvent::ApplicationStop => "ApplicationStop",
            LifecycleEvent::DownloadBundle => "DownloadBundle",
            LifecycleEvent::BeforeInstall => "BeforeInstall",
            LifecycleEvent::Install => "Install",
            LifecycleEvent::AfterInstall => "AfterInstall",
            LifecycleEvent::ApplicationStart => "ApplicationStart",
            LifecycleEvent::ValidateService => "ValidateService",
            LifecycleEvent::BeforeAllowTraffic => "BeforeAllowTraffic",
            LifecycleEvent::AfterAllowTraffic => "AfterAllowTraffic",
        }
    }

    /// Events whose hooks come from the previous successful revision, not the new one.
    pub fn uses_previous_revision(self) -> bool {
        matches!(
            self,
            LifecycleEvent::BeforeBlockTraffic
                | LifecycleEvent::AfterBlockTraffic
                | LifecycleEvent::ApplicationStop
        )
    }

    /// Events the agent implements itself; an appspec may not attach hooks to them.
    pub fn is_builtin(self) -> bool {
        matches!(
            self,
            LifecycleEvent::DownloadBundle | LifecycleEvent::Install
        )
    }
}

impl std::fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LifecycleEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LifecycleEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown lifecycle event {s:?}"))
    }
}

/// What Install does when a target exists that Hoist did not install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileExistsBehavior {
    /// Fail the deployment, naming the path (CodeDeploy's default).
    #[default]
    Disallow,
    Overwrite,
    Retain,
}

impl FileExistsBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            FileExistsBehavior::Disallow => "DISALLOW",
            FileExistsBehavior::Overwrite => "OVERWRITE",
            FileExistsBehavior::Retain => "RETAIN",
        }
    }
}

impl std::str::FromStr for FileExistsBehavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "DISALLOW" => Ok(FileExistsBehavior::Disallow),
            "OVERWRITE" => Ok(FileExistsBehavior::Overwrite),
            "RETAIN" => Ok(FileExistsBehavior::Retain),
            other => Err(format!(
                "must be one of DISALLOW, OVERWRITE, RETAIN, got {other:?}"
            )),
        }
    }
}

/// A validated appspec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppSpec {
    /// Always "0.0" once validated.
    pub version: String,
    /// Always "linux" once validated on this agent.
    pub os: String,
    pub files: Vec<FileMapping>,
    /// `None` when the appspec does not say; the deployment's option then applies.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    pub permissions: Vec<Permission>,
    /// Hooks per event, in appspec order within each event. Only known, non-built-in events.
    pub hooks: Vec<(LifecycleEvent, Vec<Hook>)>,
    /// The Hoist section's release layout (`hoist.releases`); `None` installs in place, as
    /// CodeDeploy does.
    pub releases: Option<Releases>,
}

impl AppSpec {
    /// The scripts of one event, in appspec order (empty when the event has none).
    pub fn hooks_for(&self, event: LifecycleEvent) -> &[Hook] {
        self.hooks
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, h)| h.as_slice())
            .unwrap_or(&[])
    }
}

/// `hoist.releases`: files bound for `current` are installed into a new
/// `releases/<deployment id>/` beside it, and `current` becomes a symlink to that directory
/// by one atomic rename at the end of Install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releases {
    /// Absolute and normalized; equal to one of the appspec's `files[].destination`.
    pub current: PathBuf,
    /// Releases kept on the host, the current and the previous one always among them.
    pub keep: usize,
}

impl Releases {
    /// The directory holding the releases: `releases/` beside `current`.
    pub fn releases_dir(&self) -> PathBuf {
        match self.current.parent() {
            Some(parent) => parent.join("releases"),
            // The parser refuses `/` as `current`.
            None => PathBuf::from("/releases"),
        }
    }
}

/// The releases kept when `hoist.releases.keep` is not given.
pub const DEFAULT_RELEASES_KEEP: usize = 5;
/// The bounds of `hoist.releases.keep`: the current and the previous release, at least.
pub const RELEASES_KEEP_RANGE: std::ops::RangeInclusive<usize> = 2..=50;

/// One `files` entry. `source` is relative to the bundle root ("/" or "" means the whole
/// bundle); `destination` is an absolute path on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMapping {
    pub source: String,
    pub destination: PathBuf,
}

/// What a `permissions` entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    File,
    Directory,
}

/// One `permissions` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Permission {
    /// Absolute path of a file or directory on the host.
    pub object: PathBuf,
    /// Glob matched against names below `object` (default `**`).
    pub pattern: String,
    /// Globs excluded.
    pub except: Vec<String>,
    /// Which kinds of entries it applies to (default both; empty if the appspec says `[]`).
    pub types: Vec<ObjectType>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Mode bits, e.g. 0o644 for `mode: 644` or `mode: 0644`.
    pub mode: Option<u32>,
    /// Validated ACL entries in the canonical form `setfacl -m` takes:
    /// `[default:]user|group|mask|other:name:rwx` with `-` for a permission not granted.
    /// The appspec's `u:bob:rw` arrives as `user:bob:rw-`, `d:g:web:5` as
    /// `default:group:web:r-x`. Base entries (`u::rwx`, `g::r-x`, `o::r`) are rejected by
    /// the parser, as by CodeDeploy: `mode` sets those.
    pub acls: Vec<String>,
    pub context: Option<SelinuxContext>,
}

/// An SELinux `context` of a `permissions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelinuxContext {
    /// SELinux user (`name` in the appspec), e.g. `unconfined_u`.
    pub user: Option<String>,
    /// SELinux type, e.g. `httpd_sys_content_t` (required).
    pub type_: String,
    /// MLS/MCS range, e.g. `s0` or `s0-s0:c0.c1023`.
    pub range: Option<String>,
}

/// One script of a lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Path of the script relative to the bundle root (a leading `/` is allowed and means
    /// the bundle root, as in CodeDeploy).
    pub location: String,
    /// Seconds; default 3600.
    pub timeout_secs: u64,
    /// User to run as; `None` runs as the agent's user.
    pub runas: Option<String>,
}

/// The default timeout of a hook script in seconds.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 3600;
