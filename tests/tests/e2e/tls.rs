//! The agent's trust in the coordinator over TLS, with the real `hoist server` serving a
//! self-signed certificate made here by `openssl` and the real `hoist-agent run`: pinned by
//! its fingerprint (`coordinator.pin_sha256`), the agent registers; pinned to another
//! fingerprint, it refuses the connection and says why.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hoist_tests::fleet::Coordinator;
use hoist_tests::{bin, run, wait_for, Scratch};

/// A self-signed certificate for 127.0.0.1 (and localhost) and its key; returns the
/// fingerprint as `openssl x509 -fingerprint -sha256` prints it (`AB:CD:...`).
fn self_signed(dir: &Path) -> String {
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=hoist-coordinator"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
    assert!(out.status.success(), "openssl req failed");
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.join("cert.pem")));
    assert!(out.status.success(), "openssl x509 failed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .expect("a fingerprint")
        .to_string()
}

/// `hoist-agent run` with `pin` for the coordinator at `url`, its log in `DIR/agent.log`.
fn agent(dir: &Path, url: &str, token: &str, pin: &str) -> Child {
    fs::create_dir_all(dir).expect("mkdir");
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "coordinator:\n  url: {url}\n  registration_token: {token}\n  pin_sha256: \"{pin}\"\n\
             host:\n  name: {}\nstate_dir: {}\npoll:\n  initial_backoff_ms: 100\n  max_backoff_secs: 1\n",
            dir.file_name().and_then(|n| n.to_str()).expect("name"),
            dir.join("state").display()
        ),
    )
    .expect("config");
    let log = fs::File::create(dir.join("agent.log")).expect("log");
    Command::new(bin("hoist-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("HOIST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start hoist-agent")
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

#[test]
fn agent_pinned_to_the_coordinator_certificate_registers_and_a_wrong_pin_is_refused() {
    let s = Scratch::new();
    let tls = s.join("tls");
    fs::create_dir_all(&tls).expect("mkdir");
    let fingerprint = self_signed(&tls);
    let cert = tls.join("cert.pem");
    let coordinator = Coordinator::start_with(
        &s.join("coordinator"),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            tls.join("key.pem").to_str().expect("utf-8"),
        ],
    );
    // A server given a certificate is reached over https.
    assert!(
        coordinator.url.starts_with("https://"),
        "{}",
        coordinator.url
    );
    // The operator CLI trusts the certificate through the system-roots override.
    let cli = [("SSL_CERT_FILE", cert.to_str().expect("utf-8"))];
    let out = coordinator.hoist_env(&["token", "create"], &cli);
    assert!(out.status.success(), "hoist token create over TLS failed");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // The right pin, written with colons as openssl prints it.
    let good = agent(&s.join("pinned"), &coordinator.url, &token, &fingerprint);
    let host_json = s.join("pinned/state/host.json");
    wait_for(
        "the pinned agent registers",
        Duration::from_secs(30),
        || host_json.exists(),
    );
    stop(good);

    // Another certificate's fingerprint: refused at the handshake, never registered.
    let wrong = "00".repeat(32);
    let bad = agent(&s.join("mispinned"), &coordinator.url, &token, &wrong);
    let log_path = s.join("mispinned/agent.log");
    wait_for("the refusal is logged", Duration::from_secs(30), || {
        fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("registration failed")
    });
    stop(bad);
    let log = fs::read_to_string(&log_path).expect("log");
    let got = fingerprint.replace(':', "").to_ascii_lowercase();
    assert!(
        log.contains("coordinator.pin_sha256") && log.contains(&got),
        "the error names the key and the certificate's fingerprint: {log}"
    );
    assert!(!s.join("mispinned/state/host.json").exists());
    let hosts = coordinator.hoist_env(&["hosts", "list", "--json"], &cli);
    let hosts = String::from_utf8_lossy(&hosts.stdout);
    assert!(
        hosts.contains("pinned") && !hosts.contains("mispinned"),
        "{hosts}"
    );
}
