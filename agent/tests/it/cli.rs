//! The `hoist-agent` binary's behaviour on its standard streams: a reader that goes away, and
//! logs written to a pipe.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hoist-agent");

#[test]
fn status_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!("state_dir: {}\n", dir.path().join("state").display()),
    )
    .unwrap();
    for json in [false, true] {
        // `hoist-agent status | head` once head has exited: every write fails with EPIPE.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let mut command = Command::new(BIN);
        command.arg("status").arg("--config").arg(&config);
        if json {
            command.arg("--json");
        }
        let out = command
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "json={json}: {stderr}");
        assert!(stderr.is_empty(), "json={json}: {stderr}");
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    // Nothing listens on port 1: registration fails and is logged, again and again.
    std::fs::write(
        &config,
        format!(
            "coordinator:\n  url: http://127.0.0.1:1\n  registration_token: t\n\
             state_dir: {}\npoll:\n  initial_backoff_ms: 50\n  max_backoff_secs: 1\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HOIST_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(stderr.contains("registration failed"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
