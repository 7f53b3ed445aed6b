//! The whole system under test: a real `hoist server` and real `hoist-agent run` daemons with
//! their own state directories and tags, driven through the operator CLI. Not a fake of
//! either: both are the binaries the workspace builds.

use std::fs;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use crate::coordinator::{Launch, Server};
use crate::{bin, run, Scratch};

pub use crate::coordinator::OPERATOR_TOKEN;

/// Anything that serves the agent API at a base URL: the real [`Coordinator`] or the
/// [`crate::fake_coordinator::FakeCoordinator`], so one agent starter serves both.
pub trait Endpoint {
    /// `http://HOST:PORT`
    fn url(&self) -> &str;
}

/// A bare URL: for a coordinator that is not there (a closed port).
impl Endpoint for String {
    fn url(&self) -> &str {
        self
    }
}

impl Endpoint for Coordinator {
    fn url(&self) -> &str {
        &self.url
    }
}

/// A running `hoist server` ([`Server`], killed on drop) and the operator CLI against it.
pub struct Coordinator(Server);

impl Deref for Coordinator {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl DerefMut for Coordinator {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}

impl Coordinator {
    /// A `hoist server` on a free loopback port with `data_dir`.
    pub fn start(data_dir: &Path) -> Coordinator {
        Coordinator::start_with(data_dir, "127.0.0.1:0", &[])
    }

    pub fn hoist(&self, args: &[&str]) -> Output {
        run(Command::new(bin("hoist"))
            .args(args)
            .env("HOIST_SERVER", &self.url)
            .env("HOIST_TOKEN", OPERATOR_TOKEN))
    }

    pub fn hoist_ok(&self, args: &[&str]) -> String {
        let out = self.hoist(args);
        assert!(out.status.success(), "hoist {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A running `hoist-agent run`, stopped with SIGTERM on drop.
pub struct Agent {
    pub child: Child,
    pub config: PathBuf,
    pub dir: PathBuf,
    /// [`AgentOptions::private_dir`], kept so that [`Agent::restart`] starts the daemon in a
    /// mount namespace of the same shape again.
    private_dir: Option<PathBuf>,
}

impl Agent {
    /// `hoist-agent run` for host `name` with `tags` (YAML flow-map entries), registering with
    /// `token`; its hooks see `$OUT`, a directory of its own.
    pub fn start(
        s: &Scratch,
        name: &str,
        coordinator: &impl Endpoint,
        token: &str,
        tags: &str,
    ) -> Agent {
        Agent::start_with(s, name, coordinator, token, tags, AgentOptions::default())
    }

    pub fn events(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("out/events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = run(Command::new(bin("hoist-agent"))
            .args(["status", "--json", "--config"])
            .arg(&self.config));
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Coordinator {
    /// `hoist ARGS` with extra environment variables (e.g. the AWS_* ones `hoist push --s3`
    /// reads).
    pub fn hoist_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin("hoist"));
        cmd.args(args)
            .env("HOIST_SERVER", &self.url)
            .env("HOIST_TOKEN", OPERATOR_TOKEN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    /// A `hoist server` on `addr` (e.g. `127.0.0.1:40123`, the address of one stopped
    /// earlier) with `data_dir`, so a restart keeps the address agents were given.
    pub fn start_on(data_dir: &Path, addr: &str) -> Coordinator {
        Coordinator::start_with(data_dir, addr, &[])
    }

    /// A `hoist server` on `listen` with extra environment variables (the `AWS_*` ones a
    /// pipeline's S3 source reads), its log echoed on stderr.
    pub fn start_env(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Coordinator {
        Coordinator(Server::launch(
            data_dir,
            Launch {
                listen,
                env,
                echo: true,
                ..Launch::default()
            },
        ))
    }

    /// A `hoist server` listening on `listen` (`127.0.0.1:0` for a free port) with extra
    /// `hoist server` flags such as `--host-lease 2s`. Its log is echoed on stderr. A port
    /// freed a moment ago may still be taken briefly: starting is retried for 10 s.
    pub fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> Coordinator {
        Coordinator::launch(
            data_dir,
            Launch {
                listen,
                extra,
                ..Launch::default()
            },
        )
    }

    /// A `hoist server` started as `how` says (flags, environment), its log echoed on
    /// stderr.
    pub fn launch(data_dir: &Path, how: Launch<'_>) -> Coordinator {
        Coordinator(Server::launch(data_dir, Launch { echo: true, ..how }))
    }
}

/// What [`Agent::start_with`] adds to [`Agent::start`].
#[derive(Debug, Default, Clone, Copy)]
pub struct AgentOptions<'a> {
    /// YAML appended to the agent's config: top-level keys such as `s3:` or `git:`.
    pub extra_yaml: &'a str,
    /// Run the agent (and its hooks) in its own mount namespace, where this directory shows
    /// the agent's own `DIR/private` instead: agents on one machine then install an appspec's
    /// destination into separate trees, as separate hosts would. Needs root and `unshare`.
    pub private_dir: Option<&'a Path>,
    /// Replicas after the coordinator's URL: the config then lists them all in
    /// `coordinator.urls`, the coordinator's first.
    pub more_urls: &'a [&'a str],
}

impl Agent {
    /// [`Agent::start`] with more configuration and, optionally, a private view of a directory.
    pub fn start_with(
        s: &Scratch,
        name: &str,
        coordinator: &impl Endpoint,
        token: &str,
        tags: &str,
        options: AgentOptions<'_>,
    ) -> Agent {
        let dir = s.join(name);
        fs::create_dir_all(dir.join("out")).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(
            dir.join("hook.env"),
            format!("OUT={}\n", dir.join("out").display()),
        )
        .expect("env");
        let config = dir.join("agent.yaml");
        fs::write(
            &config,
            format!(
                "coordinator:\n  {}\n  registration_token: {token}\nhost:\n  name: {name}\n  tags: {{{tags}}}\nstate_dir: {}\npoll:\n  wait_secs: 20\n  initial_backoff_ms: 100\n  max_backoff_secs: 1\nhooks:\n  environment_file: {}\n  kill_grace_secs: 2\n  stop_grace_secs: 2\n{}",
                if options.more_urls.is_empty() {
                    format!("url: {}", coordinator.url())
                } else {
                    format!("urls: [{}, {}]", coordinator.url(), options.more_urls.join(", "))
                },
                dir.join("state").display(),
                dir.join("hook.env").display(),
                options.extra_yaml
            ),
        )
        .expect("config");
        let private_dir = options.private_dir.map(Path::to_path_buf);
        let child = spawn(&dir, &config, private_dir.as_deref());
        Agent {
            child,
            config,
            dir,
            private_dir,
        }
    }

    /// `agent.log` so far: the daemon's own log (stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Starts `hoist-agent run` again exactly as [`Agent::start_with`] did (same config, state
    /// directory and, with a private directory, a new mount namespace showing the same
    /// `DIR/private`), after the previous process was stopped; the log is appended to.
    pub fn restart(&mut self) {
        self.child = spawn(&self.dir, &self.config, self.private_dir.as_deref());
    }

    /// Stops it with `signal` (SIGKILL: a crash; SIGTERM: a clean stop) and waits for it.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
        let _ = self.child.wait();
    }
}

/// Spawns `hoist-agent run --config CONFIG` for the agent in `dir`, its stderr appended to
/// `DIR/agent.log`. With `private_dir`, the daemon runs in a mount namespace of its own
/// where `private_dir` shows `DIR/private`: that directory lives on disk, so a daemon
/// started again in a new namespace sees what the one before it installed.
fn spawn(dir: &Path, config: &Path, private_dir: Option<&Path>) -> Child {
    let agent = bin("hoist-agent");
    let wrapper = private_dir.map(|shared| {
        let own = dir.join("private");
        fs::create_dir_all(&own).expect("mkdir");
        fs::create_dir_all(shared).expect("mkdir");
        // unshare and sh exec in turn, so the child's pid is the agent's.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$1\" \"$2\" && agent=\"$3\" && shift 3 && exec \"$agent\" \"$@\"")
            .arg("sh")
            .arg(&own)
            .arg(shared);
        cmd
    });
    spawn_agent(&agent, wrapper, config, &dir.join("agent.log"), "info").expect("start hoist-agent")
}

/// The one way tests and benchmarks start the agent daemon: `AGENT run --config CONFIG`
/// (after `wrapper`'s program and arguments when given, which must exec it) with
/// `HOIST_LOG=log_level`, stdin and stdout null, stderr appended to `log`.
pub fn spawn_agent(
    agent: &Path,
    wrapper: Option<Command>,
    config: &Path,
    log: &Path,
    log_level: &str,
) -> std::io::Result<Child> {
    let mut cmd = match wrapper {
        Some(mut w) => {
            w.arg(agent);
            w
        }
        None => Command::new(agent),
    };
    let log = fs::OpenOptions::new().append(true).create(true).open(log)?;
    cmd.args(["run", "--config"])
        .arg(config)
        .env("HOIST_LOG", log_level)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
}

impl Coordinator {
    /// Creates application `shop` and its group `web` (hosts tagged `role=web`) with
    /// `group_args` (e.g. `--config OneAtATime`), and returns a new registration token.
    pub fn shop_web(&self, group_args: &[&str]) -> String {
        self.hoist_ok(&["app", "create", "shop"]);
        let mut args = vec![
            "group", "create", "web", "--app", "shop", "--tag", "role=web",
        ];
        args.extend_from_slice(group_args);
        self.hoist_ok(&args);
        self.hoist_ok(&["token", "create"])
    }

    /// `hoist push DIR --app shop`: the new revision's id.
    pub fn push(&self, dir: &Path) -> String {
        self.hoist_ok(&["push", dir.to_str().expect("utf-8"), "--app", "shop"])
    }

    /// `hoist deploy create` of `revision` to shop/web; with `wait`, `--wait`. Returns the
    /// exit code and the deployment id.
    pub fn deploy(&self, revision: &str, wait: bool) -> (Option<i32>, String) {
        let mut args = vec![
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--revision",
            revision,
        ];
        if wait {
            args.push("--wait");
        }
        let out = self.hoist(&args);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.code(), id)
    }
}
