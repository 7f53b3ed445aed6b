//! The README's run command, `examples/fleet-demo.sh`, run as a new user would: as an
//! unprivileged user (made by the test), with the built binaries, on this machine. It must
//! succeed on every demo host and leave no process behind, also when interrupted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hoist_tests::{bin, need_root, repo_root, Scratch, TestUser};

/// A temporary directory inside `scratch` that `user` owns, for the demo's `TMPDIR`.
fn tmp_dir_of(user: &str, scratch: &Scratch) -> PathBuf {
    let dir = scratch.join("tmp");
    std::fs::create_dir(&dir).expect("mkdir");
    let st = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&dir)
        .status()
        .expect("chown");
    assert!(st.success(), "chown {user} {}", dir.display());
    dir
}

/// `setpriv` running what follows as `user` (its uid, gid and groups); it execs, so the
/// child's pid is the program's own.
fn as_user(user: &str) -> Command {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", id("-u")))
        .arg(format!("--regid={}", id("-g")))
        .arg("--init-groups")
        .arg("--");
    cmd
}

/// `examples/fleet-demo.sh ARGS` as `user`, with a login-like environment and
/// `HOIST_BIN_DIR` set.
fn demo_command(user: &str, bin_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = as_user(user);
    cmd.arg(repo_root().join("examples/fleet-demo.sh"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", format!("/home/{user}"))
        .env("USER", user)
        .env("LANG", "C.UTF-8")
        .env("HOIST_BIN_DIR", bin_dir)
        .stdin(Stdio::null());
    cmd
}

/// The directory of the built `hoist` and `hoist-agent`, checked to be reachable by `user`
/// (the repository must not sit under a directory only root may enter).
fn bin_dir_for(user: &str) -> PathBuf {
    let dir = bin("hoist")
        .parent()
        .expect("a binary's directory")
        .to_path_buf();
    let script = repo_root().join("examples/fleet-demo.sh");
    let reachable = as_user(user)
        .args(["test", "-x"])
        .arg(dir.join("hoist-agent"))
        .args(["-a", "-x"])
        .arg(dir.join("hoist"))
        .args(["-a", "-x"])
        .arg(&script)
        .status()
        .expect("setpriv");
    assert!(
        reachable.success(),
        "user {user} cannot run {} or the binaries in {}: the checkout must be readable by other users",
        script.display(),
        dir.display()
    );
    dir
}

/// The processes `user` runs now, as `PID ARGS` (read from /proc: no `ps` needed).
fn processes_of(user: &str) -> Vec<String> {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next());
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("zombie"));
        if real_uid == Some(uid.as_str()) && !zombie {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{name} {}", args.trim_end()));
        }
    }
    found
}

fn assert_nothing_left(user: &str) {
    // A process sent SIGTERM as the script exits may take a moment to be gone.
    let mut left = processes_of(user);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_of(user);
    }
    assert!(left.is_empty(), "the demo left processes behind: {left:#?}");
}

/// The demo directory the script announced (`data in DIR/coordinator`).
fn demo_dir(output: &str) -> PathBuf {
    let line = output
        .lines()
        .find(|l| l.contains("starting the coordinator (data in "))
        .unwrap_or_else(|| panic!("no coordinator line in:\n{output}"));
    let dir = line
        .split("(data in ")
        .nth(1)
        .and_then(|r| r.strip_suffix("/coordinator)"))
        .expect("data dir");
    PathBuf::from(dir)
}

#[test]
#[ignore = "needs root: runs the demo as an unprivileged user the test creates"]
fn the_fleet_demo_succeeds_on_every_host_as_an_unprivileged_user_and_leaves_nothing_running() {
    need_root("creating the unprivileged user that runs the demo");
    // Each test has a user of its own: the processes left behind are counted per user.
    let user = TestUser::ensure("hoist-demo-run");
    let bin_dir = bin_dir_for(&user.name);
    let scratch = Scratch::new();
    let out = demo_command(&user.name, &bin_dir, &[])
        .env("TMPDIR", tmp_dir_of(&user.name, &scratch))
        .output()
        .expect("run fleet-demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(out.status.success(), "fleet-demo.sh failed: {}", out.status);

    // `hoist deploy status` lists every demo host as succeeded.
    for host in ["web-1", "web-2", "web-3"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(host) && l.ends_with("  succeeded")),
            "{host} did not succeed in the deploy status:\n{stdout}"
        );
    }
    assert!(stdout.contains("state:        succeeded"), "{stdout}");
    // `--wait`, piped, wrote a line when each host started and one when it ended: never one
    // per lifecycle event (each host ran eleven).
    for host in ["web-1", "web-2", "web-3"] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with('[') && l.contains(&format!("] {host} ")))
            .collect();
        assert_eq!(
            lines
                .iter()
                .map(|l| l.split("] ").nth(1).unwrap_or(""))
                .collect::<Vec<_>>(),
            [format!("{host} started"), format!("{host} succeeded")],
            "{stderr}"
        );
    }
    assert!(
        stderr.lines().any(|l| l.starts_with("deployment ")
            && l.contains(" succeeded in ")
            && l.ends_with(": 3 succeeded, 0 failed, 0 stopped, 0 skipped")),
        "no summary line:\n{stderr}"
    );
    // `hoist hosts list` shows each host online with its zone; `hoist-agent status` runs.
    for (host, zone) in [("web-1", "a"), ("web-2", "b"), ("web-3", "c")] {
        assert!(
            stdout.lines().any(|l| l.starts_with(host)
                && l.contains(" online ")
                && l.contains(&format!("role=web,zone={zone}"))),
            "{host} is not listed online with zone {zone}:\n{stdout}"
        );
    }
    assert!(stdout.contains("hoist-agent: running"), "{stdout}");
    // Each host installed into its own directory, all removed on exit with the rest.
    let dir = demo_dir(&stdout);
    for host in ["web-1", "web-2", "web-3"] {
        let served = format!(
            "{}/{host}/www-root/www (<h1>Hello from Hoist</h1>)",
            dir.display()
        );
        assert!(stdout.contains(&served), "{served} missing:\n{stdout}");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert_nothing_left(&user.name);
}

/// How a run of the demo is cut short once its fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Ctrl-C (SIGINT to the script).
    Interrupt,
    /// Its output closed (`fleet-demo.sh | head`).
    CloseOutput,
}

/// Runs the demo as a new user, cuts it short as `how` says once the coordinator and the
/// three agents run, and checks that it stopped everything and removed its directory.
fn cut_short(user: &str, how: Cut) {
    need_root("creating the unprivileged user that runs the demo");
    let user = TestUser::ensure(user);
    let bin_dir = bin_dir_for(&user.name);
    let scratch = Scratch::new();
    let mut child = demo_command(&user.name, &bin_dir, &[])
        .env("TMPDIR", tmp_dir_of(&user.name, &scratch))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleet-demo.sh");
    let stderr = child.stderr.take().expect("stderr");
    let drain = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut seen = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The push comes once the coordinator and the three agents run.
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("== pushing") {
            break;
        }
    }
    assert!(
        seen.contains("== pushing"),
        "the demo never got to its push:\n{seen}"
    );
    let running = processes_of(&user.name);
    assert_eq!(
        running
            .iter()
            .filter(|p| p.contains("hoist-agent run"))
            .count(),
        3,
        "three agents should run now: {running:#?}"
    );
    match how {
        Cut::Interrupt => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            )
            .expect("SIGINT");
            for line in lines {
                seen.push_str(&line.expect("stdout line"));
                seen.push('\n');
            }
        }
        Cut::CloseOutput => drop(lines),
    }
    let status = child.wait().expect("wait");
    let stderr = drain.join().expect("stderr reader");
    eprintln!("--- stdout\n{seen}--- stderr\n{stderr}");
    let expected = match how {
        Cut::Interrupt => 130,
        Cut::CloseOutput => 141,
    };
    assert_eq!(status.code(), Some(expected), "{how:?}");
    assert!(
        stderr.contains("everything it started is stopped"),
        "{stderr}"
    );
    assert!(
        !demo_dir(&seen).exists(),
        "the demo directory was not removed"
    );
    assert_nothing_left(&user.name);
}

#[test]
#[ignore = "needs root: runs the demo as an unprivileged user the test creates"]
fn the_fleet_demo_interrupted_while_its_hosts_run_stops_everything_it_started() {
    cut_short("hoist-demo-intr", Cut::Interrupt);
}

#[test]
#[ignore = "needs root: runs the demo as an unprivileged user the test creates"]
fn the_fleet_demo_whose_output_is_closed_stops_everything_it_started() {
    cut_short("hoist-demo-pipe", Cut::CloseOutput);
}

#[test]
#[ignore = "needs root: runs the demo as an unprivileged user the test creates"]
fn the_fleet_demo_with_keep_leaves_its_fleet_running_until_its_stop_script() {
    need_root("creating the unprivileged user that runs the demo");
    let user = TestUser::ensure("hoist-demo-keep");
    let bin_dir = bin_dir_for(&user.name);
    let scratch = Scratch::new();
    let out = demo_command(&user.name, &bin_dir, &["--keep"])
        .env("TMPDIR", tmp_dir_of(&user.name, &scratch))
        .output()
        .expect("run fleet-demo.sh --keep");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fleet-demo.sh --keep failed: {}",
        out.status
    );
    let dir = demo_dir(&stdout);
    let stop = dir.join("stop.sh");
    assert!(
        stdout.contains(&format!("   {}\n", stop.display())),
        "no stop command:\n{stdout}"
    );
    assert!(
        stdout.contains("export HOIST_SERVER=http://127.0.0.1:"),
        "{stdout}"
    );
    let running = processes_of(&user.name);
    let count = |what: &str| running.iter().filter(|p| p.contains(what)).count();
    assert_eq!(count("hoist-agent run"), 3, "{running:#?}");
    assert_eq!(count("hoist server"), 1, "{running:#?}");
    let st = as_user(&user.name)
        .arg(&stop)
        .status()
        .expect("run stop.sh");
    assert!(st.success(), "stop.sh failed");
    assert!(!dir.exists(), "stop.sh did not remove {}", dir.display());
    assert_nothing_left(&user.name);
}
