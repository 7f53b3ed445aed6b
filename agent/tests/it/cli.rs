//! The `hoist-agent` binary's behaviour on its standard streams: a reader that goes away, and
//! logs written to a pipe.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

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
    // Read until two failed registrations were logged, then stop the daemon and read the rest.
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    while stderr.matches("registration failed").count() < 2 {
        if reader.read_line(&mut stderr).unwrap() == 0 {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    reader.read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(stderr.contains("registration failed"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// Runs `hoist-agent ARGS` and returns its exit code and stderr.
fn run_agent(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("HOIST_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_2_and_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "colour: blue\n").unwrap();
    let good = dir.path().join("agent.yaml");
    std::fs::write(
        &good,
        format!("state_dir: {}\n", dir.path().join("state").display()),
    )
    .unwrap();
    let missing = dir.path().join("missing");
    let (bad, good, missing) = (bad.as_os_str(), good.as_os_str(), missing.as_os_str());
    let bundle = dir.path().as_os_str();
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (vec!["run".as_ref(), "--config".as_ref(), bad], "colour"),
        (vec!["status".as_ref(), "--config".as_ref(), bad], "colour"),
        (
            vec![
                "deploy".as_ref(),
                "--config".as_ref(),
                bad,
                "--bundle".as_ref(),
                bundle,
            ],
            "colour",
        ),
        (
            vec![
                "deploy".as_ref(),
                "--config".as_ref(),
                good,
                "--bundle".as_ref(),
                bundle,
                "--events".as_ref(),
                "Nope".as_ref(),
            ],
            "--events: ",
        ),
        (
            vec![
                "deploy".as_ref(),
                "--config".as_ref(),
                good,
                "--bundle".as_ref(),
                bundle,
                "--file-exists-behavior".as_ref(),
                "SOMETIMES".as_ref(),
            ],
            "--file-exists-behavior ",
        ),
        (
            vec![
                "deploy".as_ref(),
                "--config".as_ref(),
                good,
                "--bundle".as_ref(),
                "https://example.invalid/b.zip".as_ref(),
            ],
            "a URL needs --sha256",
        ),
        (
            vec![
                "deploy".as_ref(),
                "--config".as_ref(),
                good,
                "--bundle".as_ref(),
                missing,
            ],
            "no such file or directory",
        ),
        (vec!["validate".as_ref(), missing], "cannot validate "),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_agent(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("hoist-agent: ") && lines[0].contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn validate_exits_0_for_a_valid_appspec_and_1_for_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("appspec.yml");
    std::fs::write(&valid, "version: 0.0\nos: linux\n").unwrap();
    let invalid = dir.path().join("invalid.yml");
    std::fs::write(&invalid, "version: 7\nos: linux\n").unwrap();
    let (code, stderr) = run_agent(&["validate".as_ref(), valid.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run_agent(&["validate".as_ref(), invalid.as_os_str()]);
    assert_eq!(code, Some(1), "{stderr}");
}

#[test]
fn validate_checks_the_hoist_releases_section_and_says_what_each_key_does() {
    let dir = tempfile::tempdir().unwrap();
    let files =
        "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/shop/current\n";
    let valid = dir.path().join("valid.yml");
    std::fs::write(
        &valid,
        format!("{files}hoist:\n  releases:\n    current: /srv/shop/current\n    keep: 3\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&valid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("info:    hoist.releases.current = \"/srv/shop/current\": files bound for this destination are installed into releases/<deployment id>/"),
        "{stdout}"
    );
    assert!(
        stdout.contains("info:    hoist.releases.keep = 3: how many releases stay on the host"),
        "{stdout}"
    );
    assert!(
        stdout.contains("info:    releases are kept in \"/srv/shop/releases\""),
        "{stdout}"
    );

    let invalid = dir.path().join("invalid.yml");
    std::fs::write(
        &invalid,
        format!("{files}hoist:\n  releases:\n    current: /srv/elsewhere\n    keep: 0\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&invalid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "error:   hoist.releases.current: \"/srv/elsewhere\" must be the destination"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("error:   hoist.releases.keep: must be a whole number from 2 to 50"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid (2 errors, 0 warnings)"),
        "{stdout}"
    );
}

#[test]
fn command_line_usage_errors_are_sentences_about_the_subcommand_and_exit_2() {
    for (args, first, usage) in [
        (
            &["deploy"][..],
            "hoist-agent: `hoist-agent deploy` needs --bundle <PATH_OR_URL>",
            "Usage: hoist-agent deploy [OPTIONS] --bundle <PATH_OR_URL>",
        ),
        (
            &["status", "--jsn"][..],
            "hoist-agent: `hoist-agent status` has no option '--jsn'; did you mean '--json'?",
            "Usage: hoist-agent status [OPTIONS]",
        ),
        (
            &["stauts"][..],
            "hoist-agent: `hoist-agent` has no subcommand 'stauts'; did you mean 'status'?",
            "Usage: hoist-agent <COMMAND>",
        ),
        (
            &["validate"][..],
            "hoist-agent: `hoist-agent validate` needs <PATH>",
            "Usage: hoist-agent validate <PATH>",
        ),
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (code, stderr) = run_agent(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.first(), Some(&first), "{args:?}: {stderr}");
        assert_eq!(lines.get(2), Some(&usage), "{args:?}: {stderr}");
        let path = usage
            .trim_start_matches("Usage: ")
            .split(' ')
            .take_while(|w| !w.starts_with(['-', '<', '[']))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            lines.last().copied(),
            Some(format!("For more information, try '{path} --help'.").as_str()),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn hoist_agent_generates_completions_and_man_pages_and_hides_the_command() {
    let out = Command::new(BIN)
        .args(["generate", "completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(bash.starts_with("_hoist__agent()"), "{bash}");
    for word in ["deploy", "validate", "--bundle", "--events"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    // The script completes a subcommand's options (clap_complete's own script for a name
    // with a `-` does not).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hoist-agent.bash");
    std::fs::write(&script, bash.as_bytes()).unwrap();
    let completed = Command::new("bash")
        .arg("-c")
        .arg("source \"$0\" && COMP_WORDS=(hoist-agent deploy --bu) && COMP_CWORD=2 && _hoist__agent hoist-agent --bu deploy && echo \"${COMPREPLY[*]}\"")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&completed.stdout).trim(),
        "--bundle"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "hoist-agent.1",
        "hoist-agent-deploy.1",
        "hoist-agent-status.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH hoist-agent"), "{page}: {text}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
}

#[test]
fn rollback_goes_to_the_release_before_current_or_the_one_named_and_says_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let state = dir.path().join("state");
    let bundle = |v: &str| {
        let b = dir.path().join(v);
        std::fs::create_dir_all(b.join("site")).unwrap();
        std::fs::write(b.join("site/index.html"), v).unwrap();
        std::fs::write(
            b.join("appspec.yml"),
            format!(
                "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {c}\nhoist:\n  releases:\n    current: {c}\n",
                c = srv.join("current").display()
            ),
        )
        .unwrap();
        b
    };
    let agent = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    for v in ["v1", "v2"] {
        let b = bundle(v);
        let (code, text) = agent(&[
            "deploy".as_ref(),
            "--app".as_ref(),
            "shop".as_ref(),
            "--group".as_ref(),
            "web".as_ref(),
            "--bundle".as_ref(),
            b.as_os_str(),
        ]);
        assert_eq!(code, Some(0), "{text}");
    }
    let kept = || -> (String, Vec<String>) {
        let (_, text) = agent(&["status".as_ref(), "--json".as_ref()]);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let r = &json["groups"][0]["releases"];
        let ids = r["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["deployment_id"].as_str().unwrap().to_string())
            .collect();
        (r["current"].as_str().unwrap().to_string(), ids)
    };
    let (current, ids) = kept();
    assert_eq!(current, ids[1]);
    let index = || std::fs::read_to_string(srv.join("current/index.html")).unwrap();
    assert_eq!(index(), "v2");
    let rollback = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = ["rollback", "--app", "shop", "--group", "web"]
            .iter()
            .map(|a| a.as_ref())
            .collect();
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        agent(&args)
    };
    let (code, text) = rollback(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(index(), "v1");
    assert!(text.contains(&format!("to release {}", ids[0])), "{text}");
    let (code, text) = rollback(&[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("no release older than the current one"),
        "{text}"
    );
    let (code, text) = rollback(&["--to", &ids[0]]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("that release is the current one"), "{text}");
    let (code, text) = rollback(&["--to", &ids[1]]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(index(), "v2");
    let (code, text) = agent(&[
        "rollback".as_ref(),
        "--app".as_ref(),
        "shop".as_ref(),
        "--group".as_ref(),
        "api".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("keeps no releases of that group"), "{text}");
}
