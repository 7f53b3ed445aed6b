//! Helpers: the real `hoist server` on a free port in a temp data dir (started by
//! `hoist_tests::coordinator`, the one starter every crate's tests share), the real `hoist`
//! CLI against it, and simulated hosts speaking the agent protocol over HTTP. Not a fake of
//! the server: for the agent's side of the protocol see `hoist_tests::fake_coordinator`.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hoist_protocol::agent::{
    self, CommandStatus, EventStatus, PollRequest, PollResponse, RegisterRequest, RegisterResponse,
    Report, ReportAck, ReportBody,
};
use hoist_protocol::operator::Deployment;
use hoist_protocol::HOST_ID_HEADER;

pub use hoist_tests::coordinator::{Launch, OPERATOR_TOKEN as TOKEN};
use hoist_tests::reports::started;
pub use hoist_tests::reports::succeeded;
pub use hoist_tests::Scratch;
pub const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

/// The real `hoist server` (`hoist_tests::coordinator::Server`, started from the `hoist`
/// this package built) with the CLI and HTTP helpers these tests share.
pub struct Server(hoist_tests::coordinator::Server);

impl Deref for Server {
    type Target = hoist_tests::coordinator::Server;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Server {
    /// Starts `hoist server --listen 127.0.0.1:0 --data-dir DIR` and reads the port from
    /// its `listening on ADDR` line.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[], Some(TOKEN))
    }

    pub fn start_with(data_dir: &Path, extra: &[&str], token: Option<&str>) -> Server {
        Self::launch(
            data_dir,
            Launch {
                extra,
                token,
                ..Launch::default()
            },
        )
    }

    /// Starts `[PREFIX...] hoist server --listen L --data-dir DIR EXTRA...` as `how` says.
    pub fn launch(data_dir: &Path, how: Launch<'_>) -> Server {
        let program = Path::new(HOIST);
        Server(hoist_tests::coordinator::Server::launch(
            data_dir,
            Launch {
                program: Some(how.program.unwrap_or(program)),
                ..how
            },
        ))
    }

    /// Runs the real CLI against this server.
    pub async fn hoist(&self, args: &[&str]) -> Out {
        hoist_with(&self.url, Some(TOKEN), args).await
    }

    /// `hoist push DIR --app APP`: the new revision's id.
    pub async fn push(&self, dir: &str, app: &str) -> String {
        self.hoist(&["push", dir, "--app", app])
            .await
            .ok()
            .to_owned()
    }

    /// `hoist deploy create` of a revision: the new deployment's id.
    pub async fn deploy(&self, app: &str, group: &str, revision: &str) -> String {
        self.hoist(&[
            "deploy",
            "create",
            "--app",
            app,
            "--group",
            group,
            "--revision",
            revision,
        ])
        .await
        .ok()
        .to_owned()
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn deployment(&self, id: &str) -> Deployment {
        let resp = self
            .client()
            .get(format!("{}/v1/deployments/{id}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json().await.unwrap()
    }

    /// Waits until the deployment is in `state` (as text), up to 10 s.
    pub async fn wait_state(&self, id: &str, state: &str) -> Deployment {
        let start = Instant::now();
        loop {
            let d = self.deployment(id).await;
            if d.state.to_string() == state {
                return d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "deployment {id} is {} not {state}",
                d.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stdout.trim()
    }
}

pub async fn hoist_with(server: &str, token: Option<&str>, args: &[&str]) -> Out {
    hoist_cmd(server, token, args, &[]).await
}

/// The CLI with the operator token and extra environment variables.
pub async fn hoist_env(server: &str, args: &[&str], env: &[(&str, String)]) -> Out {
    hoist_cmd(server, Some(TOKEN), args, env).await
}

async fn hoist_cmd(
    server: &str,
    token: Option<&str>,
    args: &[&str],
    env: &[(&str, String)],
) -> Out {
    let mut cmd = tokio::process::Command::new(HOIST);
    for k in [
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.args(args)
        .env("HOIST_SERVER", server)
        .env_remove("HOIST_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("HOIST_TOKEN", t);
    }
    let out = cmd.output().await.expect("run hoist");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A host speaking the agent protocol, without the agent.
#[derive(Clone)]
pub struct SimHost {
    http: reqwest::Client,
    base: String,
    pub id: String,
    pub secret: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// What its first poll (at registration) was handed: a catch-up, when it joins a
    /// group that has a target revision.
    pub first: Option<agent::Command>,
}

pub fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl SimHost {
    pub async fn register(
        base: &str,
        reg_token: &str,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> SimHost {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/v1/hosts/register"))
            .bearer_auth(reg_token)
            .json(&RegisterRequest {
                name: name.into(),
                tags: tags.clone(),
                agent_version: "0.1.0-test".into(),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "register {name}");
        let r: RegisterResponse = resp.json().await.unwrap();
        let mut host = SimHost {
            http,
            base: base.into(),
            id: r.host_id,
            secret: r.host_secret,
            name: name.into(),
            tags,
            first: None,
        };
        // A first short poll, as an agent does on start, so the host counts as seen.
        host.first = host.poll(0).await;
        host
    }

    /// The same host talking to another address (after a server restart).
    pub fn at(&self, base: &str) -> SimHost {
        SimHost {
            base: base.into(),
            ..self.clone()
        }
    }

    pub fn with_secret(&self, secret: &str) -> SimHost {
        SimHost {
            secret: secret.into(),
            ..self.clone()
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(HOST_ID_HEADER, &self.id)
            .bearer_auth(&self.secret)
    }

    pub async fn poll_raw(&self, wait_secs: u64) -> reqwest::Response {
        self.req(reqwest::Method::POST, "/v1/hosts/poll")
            .json(&PollRequest {
                name: self.name.clone(),
                tags: self.tags.clone(),
                agent_version: "0.1.0-test".into(),
                wait_secs: Some(wait_secs),
            })
            .send()
            .await
            .unwrap()
    }

    pub async fn poll(&self, wait_secs: u64) -> Option<agent::Command> {
        let resp = self.poll_raw(wait_secs).await;
        assert_eq!(resp.status(), 200, "poll of {}", self.name);
        resp.json::<PollResponse>().await.unwrap().command
    }

    pub async fn report_raw(
        &self,
        command_id: &str,
        seq: u64,
        body: ReportBody,
    ) -> reqwest::Response {
        self.req(
            reqwest::Method::POST,
            &format!("/v1/commands/{command_id}/reports"),
        )
        .json(&Report {
            seq,
            at_ms: 1,
            body,
        })
        .send()
        .await
        .unwrap()
    }

    pub async fn report(&self, command_id: &str, seq: u64, body: ReportBody) -> ReportAck {
        let resp = self.report_raw(command_id, seq, body).await;
        assert_eq!(resp.status(), 200, "report of {}", self.name);
        resp.json().await.unwrap()
    }

    /// Runs a command the way an agent reports it: Install then ApplicationStart, which
    /// fails with exit code 3 when `succeed` is false; then Completed.
    pub async fn run(&self, cmd: &agent::Command, succeed: bool) {
        let id = &cmd.command_id;
        self.report(id, 1, started("Install")).await;
        self.report(id, 2, succeeded("Install")).await;
        self.report(id, 3, started("ApplicationStart")).await;
        let (status, code, msg) = if succeed {
            (EventStatus::Succeeded, None, None)
        } else {
            (
                EventStatus::Failed,
                Some(3),
                Some("script scripts/start.sh exited with code 3".to_owned()),
            )
        };
        self.report(
            id,
            4,
            ReportBody::EventEnded {
                event: "ApplicationStart".into(),
                status,
                error_code: (!succeed).then_some(agent::ErrorCode::ScriptFailed),
                message: msg.clone(),
                script: (!succeed).then(|| "scripts/start.sh".to_owned()),
                exit_code: code,
                log_tail: Some("starting\nport in use\n".into()),
                duration_ms: 7,
            },
        )
        .await;
        let ack = self
            .report(
                id,
                5,
                ReportBody::Completed {
                    status: if succeed {
                        CommandStatus::Succeeded
                    } else {
                        CommandStatus::Failed
                    },
                    failed_event: (!succeed).then(|| "ApplicationStart".to_owned()),
                    message: msg,
                },
            )
            .await;
        assert!(ack.recorded);
    }
}

/// Writes a bundle directory with an appspec and one script.
pub fn bundle_dir(root: &Path, marker: &str) -> PathBuf {
    let dir = root.join(format!("bundle-{marker}"));
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/app\n\
         hooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("scripts/start.sh"),
        format!("#!/bin/sh\necho {marker}\n"),
    )
    .unwrap();
    dir
}

/// Creates an application, a group and a registration token with the CLI.
pub async fn setup(server: &Server, app: &str, group: &str, group_args: &[&str]) -> String {
    server.hoist(&["app", "create", app]).await.ok();
    let mut args = vec!["group", "create", group, "--app", app];
    args.extend_from_slice(group_args);
    server.hoist(&args).await.ok();
    server.hoist(&["token", "create"]).await.ok().to_owned()
}
