//! The whole system under test: a real `hoist server` and real `hoist-agent run` daemons with
//! their own state directories and tags, driven through the operator CLI. Not a fake of
//! either: both are the binaries the workspace builds.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::{bin, run, Scratch};

pub const OPERATOR_TOKEN: &str = "e2e-operator-token";

/// A running `hoist server`, killed on drop.
pub struct Coordinator {
    pub child: Child,
    pub url: String,
}

impl Coordinator {
    pub fn start(data_dir: &Path) -> Coordinator {
        let mut child = Command::new(bin("hoist"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("HOIST_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hoist server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("hoist server exited before listening")
                .expect("read stderr");
            eprintln!("server: {line}");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.trim().to_string();
            }
        };
        // Keep draining the server's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Coordinator {
            child,
            url: format!("http://{addr}"),
        }
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

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `hoist-agent run`, stopped with SIGTERM on drop.
pub struct Agent {
    pub child: Child,
    pub config: PathBuf,
    pub dir: PathBuf,
}

impl Agent {
    pub fn start(
        s: &Scratch,
        name: &str,
        coordinator: &Coordinator,
        token: &str,
        tags: &str,
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
                "coordinator:\n  url: {}\n  registration_token: {token}\nhost:\n  name: {name}\n  tags: {{{tags}}}\nstate_dir: {}\npoll:\n  wait_secs: 20\n  initial_backoff_ms: 100\n  max_backoff_secs: 1\nhooks:\n  environment_file: {}\n  kill_grace_secs: 2\n  stop_grace_secs: 2\n",
                coordinator.url,
                dir.join("state").display(),
                dir.join("hook.env").display()
            ),
        )
        .expect("config");
        let child = Command::new(bin("hoist-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("HOIST_LOG", "info")
            .stderr(fs::File::create(dir.join("agent.log")).expect("log"))
            .spawn()
            .expect("start hoist-agent");
        Agent { child, config, dir }
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
}

impl Agent {
    /// [`Agent::start`] with more configuration and, optionally, a private view of a directory.
    pub fn start_with(
        s: &Scratch,
        name: &str,
        coordinator: &Coordinator,
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
                "coordinator:\n  url: {}\n  registration_token: {token}\nhost:\n  name: {name}\n  tags: {{{tags}}}\nstate_dir: {}\npoll:\n  wait_secs: 20\n  initial_backoff_ms: 100\n  max_backoff_secs: 1\nhooks:\n  environment_file: {}\n  kill_grace_secs: 2\n  stop_grace_secs: 2\n{}",
                coordinator.url,
                dir.join("state").display(),
                dir.join("hook.env").display(),
                options.extra_yaml
            ),
        )
        .expect("config");
        let mut cmd = match options.private_dir {
            None => Command::new(bin("hoist-agent")),
            Some(shared) => {
                let own = dir.join("private");
                fs::create_dir_all(&own).expect("mkdir");
                fs::create_dir_all(shared).expect("mkdir");
                // unshare and sh exec in turn, so the child's pid is the agent's.
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg("mount --bind \"$1\" \"$2\" && agent=\"$3\" && shift 3 && exec \"$agent\" \"$@\"")
                    .arg("sh")
                    .arg(&own)
                    .arg(shared)
                    .arg(bin("hoist-agent"));
                cmd
            }
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&config)
            .env("HOIST_LOG", "info")
            .stderr(fs::File::create(dir.join("agent.log")).expect("log"))
            .spawn()
            .expect("start hoist-agent");
        Agent { child, config, dir }
    }
}
