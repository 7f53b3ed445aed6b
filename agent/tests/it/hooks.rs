//! `hoist_agent::hooks::run_hook` against real scripts, processes and users.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hoist_agent::hooks::{run_hook, HookLog, HookOutcome, HookRun, ScriptExit};
use hoist_tests::{need_root, TestUser};
use tokio_util::sync::CancellationToken;

/// A bundle directory and a log directory in one temporary directory.
struct Bundle {
    _dir: tempfile::TempDir,
    root: PathBuf,
    log_path: PathBuf,
    outside: PathBuf,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        // Temporary directories are 0700; a script run as another user must reach the bundle.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("bundle");
        std::fs::create_dir_all(root.join("scripts")).unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        Bundle {
            root,
            log_path: logs.join("hooks.log"),
            outside,
            _dir: dir,
        }
    }

    /// Writes `scripts/<name>` with `body` and mode 0755; returns its location.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.root.join("scripts").join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!("scripts/{name}")
    }

    fn run(&self, location: &str) -> HookRun {
        HookRun {
            location: location.to_string(),
            bundle_root: self.root.clone(),
            timeout: Duration::from_secs(20),
            runas: None,
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("LIFECYCLE_EVENT".into(), "AfterInstall".into()),
            ],
            kill_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            label: format!("AfterInstall {location}"),
        }
    }

    fn log(&self) -> HookLog {
        HookLog::open(&self.log_path).unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap()
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root.join(relative)).unwrap()
    }
}

async fn run(run: &HookRun, log: &HookLog) -> HookOutcome {
    run_hook(run, log, CancellationToken::new(), &|_| {}).await
}

/// Runs `body` as `scripts/<name>` with defaults; returns the outcome and the log text.
async fn run_body(bundle: &Bundle, name: &str, body: &str) -> (HookOutcome, String) {
    let location = bundle.script(name, body);
    let log = bundle.log();
    let outcome = run(&bundle.run(&location), &log).await;
    drop(log);
    (outcome, bundle.log_text())
}

/// Whether `pid` is a running process (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            state != "Z"
        }
    }
}

fn pids(text: &str) -> Vec<i32> {
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(!pids.is_empty(), "no pids recorded");
    pids
}

/// Kills a process a test left running on purpose, when the test ends however it ends.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Checks that a log line exists for `stream` with `text`, timestamped and labelled.
fn assert_line(log: &str, label: &str, stream: &str, text: &str) {
    let suffix = format!(" [{label}] {stream}| {text}");
    let line = log
        .lines()
        .find(|l| l.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no line ending {suffix:?} in:\n{log}"));
    let stamp = &line[..line.len() - suffix.len()];
    // 2026-11-22T03:04:05.123Z
    assert_eq!(stamp.len(), 24, "timestamp {stamp:?}");
    assert!(
        stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "timestamp {stamp:?}"
    );
}

#[tokio::test]
async fn success_with_stdout_and_stderr_marked_in_the_log() {
    let bundle = Bundle::new();
    let (outcome, log) = run_body(
        &bundle,
        "ok.sh",
        "#!/bin/sh\necho hello out\necho hello err >&2\nprintf 'no newline'\n",
    )
    .await;
    assert_eq!(outcome, HookOutcome::Succeeded);
    let label = "AfterInstall scripts/ok.sh";
    assert_line(&log, label, "stdout", "hello out");
    assert_line(&log, label, "stderr", "hello err");
    assert_line(&log, label, "stdout", "no newline");
    assert!(
        log.contains(&format!("[{label}] hoist| succeeded")),
        "{log}"
    );
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let bundle = Bundle::new();
    let cases = [
        ("#!/bin/sh\nexit 0\n", HookOutcome::Succeeded),
        (
            "#!/bin/sh\nexit 3\n",
            HookOutcome::Failed(ScriptExit::Code(3)),
        ),
        (
            "#!/bin/sh\nkill -KILL $$\n",
            HookOutcome::Failed(ScriptExit::Signal(9)),
        ),
        (
            "#!/bin/sh\nkill -SEGV $$\n",
            HookOutcome::Failed(ScriptExit::Signal(11)),
        ),
    ];
    for (i, (body, want)) in cases.into_iter().enumerate() {
        let (outcome, log) = run_body(&bundle, &format!("case{i}.sh"), body).await;
        assert_eq!(outcome, want, "{body}\n{log}");
    }
}

#[tokio::test]
async fn missing_script() {
    let bundle = Bundle::new();
    let log = bundle.log();
    for location in ["scripts/nope.sh", "/scripts/nope.sh", "nodir/x.sh"] {
        assert_eq!(run(&bundle.run(location), &log).await, HookOutcome::Missing);
    }
    // A path through a regular file is missing too, not an error of another kind.
    let file = bundle.script("file.sh", "#!/bin/sh\n");
    assert_eq!(
        run(&bundle.run(&format!("{file}/x")), &log).await,
        HookOutcome::Missing
    );
}

#[tokio::test]
async fn leading_slash_is_the_bundle_root() {
    let bundle = Bundle::new();
    bundle.script("abs.sh", "#!/bin/sh\nexit 0\n");
    let log = bundle.log();
    let outcome = run(&bundle.run("/scripts/abs.sh"), &log).await;
    assert_eq!(outcome, HookOutcome::Succeeded);
}

#[tokio::test]
async fn script_without_exec_bits_is_made_executable() {
    let bundle = Bundle::new();
    let location = bundle.script("plain.sh", "#!/bin/sh\necho ran\n");
    let path = bundle.root.join(&location);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = bundle.log();
    assert_eq!(
        run(&bundle.run(&location), &log).await,
        HookOutcome::Succeeded
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_line(
        &bundle.log_text(),
        "AfterInstall scripts/plain.sh",
        "stdout",
        "ran",
    );
}

#[tokio::test]
async fn script_without_shebang_runs_with_sh() {
    let bundle = Bundle::new();
    let (outcome, log) = run_body(&bundle, "bare.sh", "echo bare $((1+2))\n").await;
    assert_eq!(outcome, HookOutcome::Succeeded, "{log}");
    assert_line(&log, "AfterInstall scripts/bare.sh", "stdout", "bare 3");
    assert!(log.contains("running it with /bin/sh"), "{log}");
}

#[tokio::test]
async fn directory_is_not_executable() {
    let bundle = Bundle::new();
    std::fs::create_dir(bundle.root.join("scripts/dir.sh")).unwrap();
    let log = bundle.log();
    match run(&bundle.run("scripts/dir.sh"), &log).await {
        HookOutcome::NotExecutable { reason } => {
            assert!(reason.contains("not a regular file"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn location_escaping_the_bundle_is_refused() {
    let bundle = Bundle::new();
    let target = bundle.outside.join("evil.sh");
    std::fs::write(&target, "#!/bin/sh\ntouch \"$0.ran\"\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&target, bundle.root.join("scripts/link.sh")).unwrap();
    std::os::unix::fs::symlink(&bundle.outside, bundle.root.join("scripts/outdir")).unwrap();
    let log = bundle.log();
    for location in [
        "../outside/evil.sh",
        "/../outside/evil.sh",
        "scripts/../../outside/evil.sh",
        "scripts/link.sh",
        "scripts/outdir/evil.sh",
    ] {
        match run(&bundle.run(location), &log).await {
            HookOutcome::NotExecutable { reason } => {
                assert!(
                    reason.contains("outside the bundle"),
                    "{location}: {reason}"
                )
            }
            other => panic!("{location}: {other:?}"),
        }
    }
    assert!(!bundle.outside.join("evil.sh.ran").exists());
    // A symbolic link that stays inside the bundle is fine.
    bundle.script("real.sh", "#!/bin/sh\nexit 0\n");
    std::os::unix::fs::symlink("real.sh", bundle.root.join("scripts/inner.sh")).unwrap();
    assert_eq!(
        run(&bundle.run("scripts/inner.sh"), &log).await,
        HookOutcome::Succeeded
    );
}

#[tokio::test]
async fn environment_is_exactly_the_given_one() {
    // A variable of this process must not reach the script.
    std::env::set_var("HOIST_TEST_AGENT_ONLY", "leaked");
    let bundle = Bundle::new();
    let location = bundle.script(
        "env.sh",
        "#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ > env.out\n",
    );
    let mut run_spec = bundle.run(&location);
    run_spec
        .env
        .push(("WITH_SPACE".into(), "a b  'c' \"d\"".into()));
    let log = bundle.log();
    assert_eq!(run(&run_spec, &log).await, HookOutcome::Succeeded);
    let mut got: Vec<String> = bundle.read("env.out").lines().map(String::from).collect();
    got.sort();
    let mut want: Vec<String> = run_spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn working_directory_is_the_bundle_root_and_stdin_is_closed() {
    let bundle = Bundle::new();
    let location = bundle.script(
        "where.sh",
        "#!/bin/sh\npwd -P > pwd.out\nreadlink /proc/$$/fd/0 > stdin.out\n\
         if read line; then echo \"read: $line\"; else echo eof; fi\n",
    );
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.timeout = Duration::from_secs(5);
    let started = Instant::now();
    assert_eq!(run(&spec, &log).await, HookOutcome::Succeeded);
    assert!(started.elapsed() < Duration::from_secs(3));
    let root = std::fs::canonicalize(&bundle.root).unwrap();
    assert_eq!(bundle.read("pwd.out").trim(), root.to_str().unwrap());
    assert_eq!(bundle.read("stdin.out").trim(), "/dev/null");
    assert_line(
        &bundle.log_text(),
        "AfterInstall scripts/where.sh",
        "stdout",
        "eof",
    );
}

#[tokio::test]
async fn on_spawn_receives_the_process_group() {
    let bundle = Bundle::new();
    let location = bundle.script(
        "pgid.sh",
        "#!/bin/sh\necho $$ > pid.out\ncut -d' ' -f5 /proc/$$/stat > pgid.out\n",
    );
    let log = bundle.log();
    let seen = Mutex::new(Vec::new());
    let record = |pgid: i32| seen.lock().unwrap().push(pgid);
    let outcome = run_hook(
        &bundle.run(&location),
        &log,
        CancellationToken::new(),
        &record,
    )
    .await;
    assert_eq!(outcome, HookOutcome::Succeeded);
    let pid: i32 = bundle.read("pid.out").trim().parse().unwrap();
    let pgid: i32 = bundle.read("pgid.out").trim().parse().unwrap();
    assert_eq!(pid, pgid, "the script leads its own group");
    assert_eq!(*seen.lock().unwrap(), vec![pgid]);
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let bundle = Bundle::new();
    let location = bundle.script(
        "hang.sh",
        "#!/bin/sh\nsleep 300 &\necho $! >> pids\necho $$ >> pids\nexec sleep 300\n",
    );
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.timeout = Duration::from_millis(700);
    let started = Instant::now();
    let outcome = run(&spec, &log).await;
    let took = started.elapsed();
    let recorded = pids(&bundle.read("pids"));
    let _cleanup = KillOnDrop(recorded.clone());
    assert_eq!(
        outcome,
        HookOutcome::TimedOut {
            after: Duration::from_millis(700)
        }
    );
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(recorded.len(), 2);
    for pid in recorded {
        assert!(!alive(pid), "pid {pid} survived the timeout");
    }
    let text = bundle.log_text();
    assert!(text.contains("SIGTERM"), "{text}");
}

#[tokio::test]
async fn timeout_kills_a_grandchild_ignoring_sigterm() {
    let bundle = Bundle::new();
    let location = bundle.script(
        "stubborn.sh",
        "#!/bin/sh\nsh -c 'trap \"\" TERM; echo $$ >> pids; exec sleep 300' &\n\
         while [ ! -s pids ]; do sleep 0.05; done\nexec sleep 300\n",
    );
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    // Long enough for the grandchild to ignore SIGTERM before it comes.
    spec.timeout = Duration::from_millis(1500);
    spec.kill_grace = Duration::from_millis(700);
    let started = Instant::now();
    let outcome = run(&spec, &log).await;
    let took = started.elapsed();
    let recorded = pids(&bundle.read("pids"));
    let _cleanup = KillOnDrop(recorded.clone());
    assert!(
        matches!(outcome, HookOutcome::TimedOut { .. }),
        "{outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(2200),
        "SIGKILL came early: {took:?}"
    );
    assert!(took < Duration::from_secs(7), "{took:?}");
    for pid in recorded {
        assert!(!alive(pid), "pid {pid} survived SIGKILL");
    }
    assert!(bundle.log_text().contains("SIGKILL"));
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let bundle = Bundle::new();
    let location = bundle.script(
        "dropped.sh",
        "#!/bin/sh\nsleep 300 &\necho $! >> pids\necho $$ >> pids\nexec sleep 300\n",
    );
    let log = bundle.log();
    let spec = bundle.run(&location);
    let abandoned = tokio::time::timeout(Duration::from_millis(700), run(&spec, &log)).await;
    assert!(
        abandoned.is_err(),
        "the script ended on its own: {abandoned:?}"
    );
    let recorded = pids(&bundle.read("pids"));
    let _cleanup = KillOnDrop(recorded.clone());
    assert_eq!(recorded.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(2);
    while recorded.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in recorded {
        assert!(!alive(pid), "pid {pid} outlived its dropped run");
    }
}

#[tokio::test]
async fn backgrounded_daemon_holding_output_neither_hangs_nor_dies() {
    let bundle = Bundle::new();
    // The daemon keeps stdout and stderr, writes after the script ended and after the log
    // is closed; with pipes it would either hang the run or die of SIGPIPE.
    let location = bundle.script(
        "daemon.sh",
        "#!/bin/sh\nsh -c 'echo $$ > daemon.pid; sleep 1; echo late line; echo late err >&2; \
         exec sleep 30' &\necho started\nexit 0\n",
    );
    let log = bundle.log();
    // The run ends with its script, not with the daemon 30 s later.
    let outcome = tokio::time::timeout(Duration::from_secs(20), run(&bundle.run(&location), &log))
        .await
        .expect("the run waited for the background daemon");
    assert_eq!(outcome, HookOutcome::Succeeded);
    let output_dir = log.output_dir();
    drop(log);
    // Give the background process time to write its pid.
    let deadline = Instant::now() + Duration::from_secs(2);
    let pid_file = bundle.root.join("daemon.pid");
    while !std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let daemon = pids(&bundle.read("daemon.pid"))[0];
    let _cleanup = KillOnDrop(vec![daemon]);
    assert!(alive(daemon), "the daemon died with its script");
    let outputs: Vec<PathBuf> = std::fs::read_dir(&output_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let stdout = outputs
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".stdout"))
        .unwrap();
    let stderr = outputs
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".stderr"))
        .unwrap();
    // Past its late writes (after `exec sleep 30`): still alive, its output in its files.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(stderr).is_ok_and(|t| t.ends_with('\n'))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(daemon), "the daemon died after the log was dropped");
    assert_eq!(
        std::fs::read_to_string(stdout).unwrap(),
        "started\nlate line\n"
    );
    assert_eq!(std::fs::read_to_string(stderr).unwrap(), "late err\n");
    let text = bundle.log_text();
    assert_line(&text, "AfterInstall scripts/daemon.sh", "stdout", "started");
    assert!(
        !text.contains("late line"),
        "read after the script ended:\n{text}"
    );
}

#[tokio::test]
async fn tail_keeps_the_last_lines() {
    let bundle = Bundle::new();
    let location = bundle.script("many.sh", "#!/bin/sh\nseq 1 2000\n");
    let log = bundle.log();
    log.note("AfterInstall started");
    assert_eq!(
        run(&bundle.run(&location), &log).await,
        HookOutcome::Succeeded
    );
    let tail = log.take_tail();
    assert!(tail.len() <= 4096, "{}", tail.len());
    assert!(tail.len() > 2048, "{}", tail.len());
    let outputs: Vec<&str> = tail.lines().filter(|l| l.contains("stdout| ")).collect();
    let last = outputs.last().unwrap();
    assert!(last.ends_with("stdout| 2000"), "{last}");
    // Consecutive, whole lines up to the last.
    let numbers: Vec<u32> = outputs
        .iter()
        .map(|l| l.rsplit("| ").next().unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(!tail.contains("AfterInstall started"));
    assert!(tail.ends_with("hoist| succeeded\n"), "{tail}");
    assert_eq!(log.take_tail(), "");
    // The file has every line.
    assert_eq!(
        bundle
            .log_text()
            .lines()
            .filter(|l| l.contains("stdout| "))
            .count(),
        2000
    );
}

#[tokio::test]
async fn stop_interrupts_after_the_grace_period() {
    let bundle = Bundle::new();
    let location = bundle.script("long.sh", "#!/bin/sh\necho $$ > pids\nexec sleep 30\n");
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.stop_grace = Duration::from_millis(600);
    spec.kill_grace = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        })
    };
    let started = Instant::now();
    let outcome = run_hook(&spec, &log, stop, &|_| {}).await;
    let took = started.elapsed();
    canceller.await.unwrap();
    let recorded = pids(&bundle.read("pids"));
    let _cleanup = KillOnDrop(recorded.clone());
    assert_eq!(outcome, HookOutcome::Interrupted);
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!alive(recorded[0]));
}

#[tokio::test]
async fn stop_lets_a_script_finishing_in_time_report_its_outcome() {
    let bundle = Bundle::new();
    let location = bundle.script("short.sh", "#!/bin/sh\nsleep 0.5\nexit 4\n");
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.stop_grace = Duration::from_secs(5);
    let stop = CancellationToken::new();
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        })
    };
    let outcome = run_hook(&spec, &log, stop, &|_| {}).await;
    canceller.await.unwrap();
    assert_eq!(outcome, HookOutcome::Failed(ScriptExit::Code(4)));
}

#[tokio::test]
async fn stop_already_cancelled_starts_nothing() {
    let bundle = Bundle::new();
    let location = bundle.script("never.sh", "#!/bin/sh\ntouch ran\n");
    let log = bundle.log();
    let stop = CancellationToken::new();
    stop.cancel();
    let outcome = run_hook(&bundle.run(&location), &log, stop, &|_| {}).await;
    assert_eq!(outcome, HookOutcome::Interrupted);
    assert!(!bundle.root.join("ran").exists());
}

#[tokio::test]
async fn unknown_runas_user_fails() {
    let bundle = Bundle::new();
    let location = bundle.script("x.sh", "#!/bin/sh\ntouch ran\n");
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.runas = Some("hoist-no-such-user".into());
    assert_eq!(
        run(&spec, &log).await,
        HookOutcome::RunAsFailed {
            reason: "user \"hoist-no-such-user\" does not exist".into()
        }
    );
    assert!(!bundle.root.join("ran").exists());
}

#[tokio::test]
#[ignore = "needs root: a real user for runas"]
async fn runas_switches_user_groups_and_login_variables() {
    need_root("a real user for runas");
    let test_user = TestUser::with_group("hoist-t-runas", "hoist-t-runasg");
    let passwd = nix::unistd::User::from_name(&test_user.name)
        .unwrap()
        .unwrap();
    let group = nix::unistd::Group::from_name(test_user.group.as_deref().unwrap())
        .unwrap()
        .unwrap();
    let bundle = Bundle::new();
    let location = bundle.script(
        "who.sh",
        "#!/bin/sh\necho \"uid=$(id -u)\"\necho \"gid=$(id -g)\"\necho \"groups=$(id -G)\"\n\
         echo \"home=$HOME\"\necho \"user=$USER\"\necho \"logname=$LOGNAME\"\necho \"shell=$SHELL\"\n",
    );
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.runas = Some(test_user.name.clone());
    // Whatever the caller passes for these, runas sets them from the password database.
    spec.env.push(("HOME".into(), "/root".into()));
    spec.env.push(("USER".into(), "root".into()));
    let outcome = run(&spec, &log).await;
    let text = bundle.log_text();
    assert_eq!(outcome, HookOutcome::Succeeded, "{text}");
    let label = "AfterInstall scripts/who.sh";
    assert_line(&text, label, "stdout", &format!("uid={}", passwd.uid));
    assert_line(&text, label, "stdout", &format!("gid={}", passwd.gid));
    assert_line(
        &text,
        label,
        "stdout",
        &format!("home={}", passwd.dir.display()),
    );
    assert_line(&text, label, "stdout", &format!("user={}", test_user.name));
    assert_line(
        &text,
        label,
        "stdout",
        &format!("logname={}", test_user.name),
    );
    assert_line(&text, label, "stdout", "shell=/bin/sh");
    let groups_line = text
        .lines()
        .find_map(|l| l.split("stdout| groups=").nth(1))
        .unwrap();
    let groups: Vec<u32> = groups_line
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(groups.contains(&group.gid.as_raw()), "{groups:?}");
    assert!(groups.contains(&passwd.gid.as_raw()), "{groups:?}");
    assert!(!groups.contains(&0), "root's group kept: {groups:?}");
}

#[tokio::test]
#[ignore = "needs root: a real user for runas"]
async fn runas_user_who_cannot_read_the_script_fails_clearly() {
    need_root("a real user for runas");
    let test_user = TestUser::ensure("hoist-t-noread");
    let bundle = Bundle::new();
    let location = bundle.script("secret.sh", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(
        bundle.root.join("scripts"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.runas = Some(test_user.name.clone());
    match run(&spec, &log).await {
        HookOutcome::RunAsFailed { reason } => {
            assert!(reason.contains(&test_user.name), "{reason}");
            assert!(reason.contains("ermission denied"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn runas_self_needs_no_switch() {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let bundle = Bundle::new();
    let location = bundle.script("me.sh", "#!/bin/sh\necho \"$(id -u) $USER $HOME\"\n");
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.runas = Some(me.name.clone());
    assert_eq!(run(&spec, &log).await, HookOutcome::Succeeded);
    assert_line(
        &bundle.log_text(),
        "AfterInstall scripts/me.sh",
        "stdout",
        &format!("{} {} {}", me.uid, me.name, me.dir.display()),
    );
}

#[test]
fn hook_log_appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("hooks.log");
    std::fs::write(path, "earlier\n").unwrap();
    let log = HookLog::open(path).unwrap();
    assert_eq!(log.path(), path);
    log.note("AfterInstall started");
    drop(log);
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "earlier");
    assert!(
        lines[1].ends_with("Z hoist| AfterInstall started"),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn huge_durations_do_not_overflow() {
    let bundle = Bundle::new();
    let location = bundle.script("quick.sh", "#!/bin/sh\nexit 0\n");
    let log = bundle.log();
    let mut spec = bundle.run(&location);
    spec.timeout = Duration::MAX;
    spec.kill_grace = Duration::MAX;
    spec.stop_grace = Duration::MAX;
    assert_eq!(run(&spec, &log).await, HookOutcome::Succeeded);
}
