//! The one test harness of the workspace, shared by every crate's tests and by the benchmarks:
//! locating the built binaries, the scratch directory (`Scratch`), the way to require root or a
//! tool (`need_root`, `servers::need_moto`, `prometheus::need_prometheus_parser`), real Unix users, running commands and waiting for
//! conditions; `coordinator` starts the real `hoist server`, `fleet` drives it with the CLI
//! and starts real `hoist-agent run` daemons, `fake_coordinator` stands in for the server in
//! the agent's daemon tests, `postgres` runs one real PostgreSQL cluster per test binary (a
//! database per test, `need_postgres`), `reports` builds report bodies, `archive` writes bundles and
//! `servers` runs real S3, HTTP and Git servers.
//! the agent's daemon tests, `reports` builds report bodies, `archive` writes bundles and
//! `servers` runs real S3, HTTP and Git servers; `browser` starts `chromedriver` for the
//! dashboard's browser tests (`browser::need_chromium`); `receiver` is a webhook receiver
//! on loopback that checks every signature.
//!
//! Nothing here is a mock of our own code: the binaries are the ones the workspace builds, and
//! the fake coordinator speaks the real wire protocol.

pub mod archive;
pub mod browser;
pub mod coordinator;
pub mod fake_coordinator;
pub mod fleet;
pub mod postgres;
pub mod prometheus;
pub mod receiver;
pub mod reports;
pub mod scripted_http;
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a binary built by `cargo test --workspace` (or `cargo build --workspace`).
pub fn bin(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/; the binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is inside target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// The repository root (for examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

/// The one scratch directory of every crate's tests and of the benchmarks: a new directory
/// removed on drop, mode 0755 so hooks that run as another user can traverse it.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new `hoist-test-*` directory under `$TMPDIR`; fails the test when it cannot be made.
    pub fn new() -> Scratch {
        Scratch::named("hoist-test-", None).expect("creating a scratch directory")
    }

    /// A new `PREFIX*` directory under `parent` (default `$TMPDIR`), or the error (for callers
    /// that are not tests).
    pub fn named(prefix: &str, parent: Option<&Path>) -> std::io::Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(Scratch { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

// Tests that need something a plain `cargo test` may lack (root, moto_server, a tool) are
// marked `#[ignore = "needs ROOT-OR-TOOL: why"]`, so the runner lists them as ignored, and
// start with one of the `need_*` helpers below (`need_root`, `need_tool`), which fail the test loudly, naming what is
// missing, when it is run (`--include-ignored`, as CI does) without it. No test returns early
// and passes when it could not run.

/// Fails the calling test unless it runs as root; `why` says what needs root.
#[track_caller]
pub fn need_root(why: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root ({why}): run it as root, as CI does"
    );
}

/// Fails the calling test unless `tool` is on PATH; `why` says what it is for.
#[track_caller]
pub fn need_tool(tool: &str, why: &str) {
    let found = Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs {tool} ({why}): install it (CI's apt line does)"
    );
}

/// A real Unix user (and its group) that exists until dropped.
pub struct TestUser {
    pub name: String,
    /// A supplementary group made for the user ([`TestUser::with_group`]), removed with it.
    pub group: Option<String>,
    created: bool,
}

impl TestUser {
    /// Creates the user with a home directory unless it exists already (then it is kept).
    pub fn ensure(name: &str) -> TestUser {
        let exists = Command::new("id")
            .arg(name)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !exists {
            let st = Command::new("useradd")
                .args(["--create-home", "--user-group", "--shell", "/bin/sh", name])
                .status()
                .expect("run useradd");
            assert!(st.success(), "useradd {name} failed");
        }
        TestUser {
            name: name.to_string(),
            group: None,
            created: !exists,
        }
    }

    /// Creates a user `name` (with a home directory) that is also a member of a new group
    /// `group`, both names suffixed with this process's id so parallel runs do not collide.
    pub fn with_group(name: &str, group: &str) -> TestUser {
        let pid = std::process::id();
        let (name, group) = (format!("{name}-{pid}"), format!("{group}-{pid}"));
        let st = Command::new("groupadd")
            .arg(&group)
            .status()
            .expect("run groupadd");
        assert!(st.success(), "groupadd {group} failed");
        let st = Command::new("useradd")
            .args(["--create-home", "--user-group", "--shell", "/bin/sh"])
            .args(["--groups", &group, &name])
            .status()
            .expect("run useradd");
        assert!(st.success(), "useradd {name} failed");
        TestUser {
            name,
            group: Some(group),
            created: true,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.name])
                .status();
            let _ = Command::new("userdel").args(["-r", &self.name]).output();
        }
        if let Some(group) = &self.group {
            let _ = Command::new("groupdel").arg(group).output();
        }
    }
}

/// Runs a command and returns its output; stdout and stderr are echoed for test logs.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn command");
    eprintln!(
        "$ {:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies an example bundle into `dest`, replacing the install prefix `/tmp/hoist-demo` in
/// its appspec (and scripts) with `prefix`.
pub fn example_bundle(name: &str, dest: &Path, prefix: &Path) {
    copy_dir(&repo_root().join("examples").join(name), dest);
    for file in walk(dest) {
        if file.extension().is_some_and(|e| e == "yml" || e == "sh") {
            let text = std::fs::read_to_string(&file).expect("read example");
            let text = text.replace("/tmp/hoist-demo", &prefix.display().to_string());
            std::fs::write(&file, text).expect("write example");
        }
    }
}

/// Every regular file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("meta");
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Copies a tree with modes and symlinks (`cp -a`).
pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .status()
        .expect("cp");
    assert!(st.success());
}

/// True when a process with this pid exists and is not a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls `f` every 50 ms until it holds; fails the test naming `what` after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Seconds in a `Duration`'s Debug form (`178.8ms`, `1.2s`, `950µs`), as the agent logs its
/// retry delays.
pub fn debug_secs(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}
