//! `hoist-agent deploy` and `validate` end to end: lifecycle order, previous-revision hooks,
//! cleanup of old files, hook timeouts and background processes, runas, locks and hostile
//! bundles.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hoist_tests::{alive, bin, copy_dir, example_bundle, need_root, run, Scratch, TestUser};

/// Writes an agent config with everything inside the scratch directory.
fn agent_config(s: &Scratch) -> PathBuf {
    let env = s.join("hook.env");
    fs::write(
        &env,
        format!("HOIST_DEMO_DIR={}\n", s.join("root").display()),
    )
    .expect("env");
    let path = s.join("agent.yaml");
    fs::write(
        &path,
        format!(
            "state_dir: {}\nhooks:\n  environment_file: {}\n  kill_grace_secs: 2\n  stop_grace_secs: 1\n",
            s.join("state").display(),
            env.display()
        ),
    )
    .expect("config");
    path
}

fn deploy(config: &Path, bundle: &Path, extra: &[&str]) -> Output {
    run(Command::new(bin("hoist-agent"))
        .arg("deploy")
        .arg("--bundle")
        .arg(bundle)
        .arg("--config")
        .arg(config)
        .args(["--app", "app", "--group", "g1"])
        .args(extra))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bundle with `appspec` and executable scripts.
fn write_bundle(dir: &Path, appspec: &str, scripts: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join("appspec.yml"), appspec).expect("appspec");
    for (name, body) in scripts {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn web_app_twice_runs_the_previous_revisions_stop_and_removes_its_files() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let root = s.join("root");
    let v1 = s.join("v1");
    example_bundle("web-app", &v1, &root);
    fs::write(v1.join("site/old.html"), "only in v1\n").expect("write");
    // Each revision's stop script says which revision it belongs to.
    let mark = |dir: &Path, rev: &str| {
        let stop = dir.join("scripts/stop.sh");
        let text = fs::read_to_string(&stop).expect("read");
        let text = text.replace(
            "set -eu\n",
            &format!("set -eu\necho {rev} >> \"${{HOIST_DEMO_DIR}}/stopped-by\"\n"),
        );
        fs::write(&stop, text).expect("write");
    };
    mark(&v1, "v1");

    let first = deploy(&config, &v1, &[]);
    assert!(first.status.success(), "first deployment failed");
    assert!(stdout(&first).contains("succeeded"));
    assert_eq!(
        fs::read_to_string(root.join("www/old.html")).expect("old.html"),
        "only in v1\n"
    );
    let mode = |p: &str| fs::metadata(root.join(p)).expect(p).permissions().mode() & 0o7777;
    assert_eq!(mode("www/index.html"), 0o644);
    assert_eq!(mode("etc/app.conf"), 0o600);
    let server1: i32 = fs::read_to_string(root.join("server.pid"))
        .expect("server.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        alive(server1),
        "the server started by ApplicationStart must survive"
    );

    let v2 = s.join("v2");
    example_bundle("web-app", &v2, &root);
    mark(&v2, "v2");
    let second = deploy(&config, &v2, &[]);
    assert!(second.status.success(), "second deployment failed");

    let events: Vec<String> = fs::read_to_string(root.join("events.log"))
        .expect("events.log")
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    let first_run = [
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    ];
    let second_run = [
        "BeforeBlockTraffic",
        "AfterBlockTraffic",
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    ];
    let expected: Vec<&str> = first_run.iter().chain(second_run.iter()).copied().collect();
    assert_eq!(events, expected);
    assert_eq!(
        fs::read_to_string(root.join("stopped-by")).expect("stopped-by"),
        "v1\n",
        "ApplicationStop must run the previous revision's script"
    );
    assert!(
        !root.join("www/old.html").exists(),
        "v1's file must be removed"
    );
    assert!(root.join("www/index.html").exists());
    assert!(!alive(server1), "v1's ApplicationStop stops v1's server");
    kill_pids(&read_pids(&root.join("server.pid")));
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_grandchildren() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let pids = s.join("pids");
    let bundle = s.join("b");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: slow.sh\n      timeout: 2\n",
        &[(
            "slow.sh",
            &format!(
                "#!/bin/sh\necho $$ >> {p}\nsleep 300 &\necho $! >> {p}\nsleep 300\n",
                p = pids.display()
            ),
        )],
    );
    let t0 = Instant::now();
    let out = deploy(&config, &bundle, &[]);
    let elapsed = t0.elapsed();
    eprintln!("timed-out deployment returned after {elapsed:?} (timeout 2 s + grace 2 s)");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("timed out after 2 s"), "{text}");
    assert!(text.contains("ApplicationStart"), "{text}");
    assert!(elapsed < Duration::from_secs(60), "the deployment hung");
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "script and grandchild pids");
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} survived the timeout");
    }
}

#[test]
fn a_backgrounded_daemon_holding_stdout_neither_hangs_nor_dies() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let pid_file = s.join("daemon.pid");
    let bundle = s.join("b");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: start.sh\n",
        &[(
            "start.sh",
            &format!(
                "#!/bin/sh\n( while true; do echo tick; sleep 1; done ) &\necho $! > {}\necho started\n",
                pid_file.display()
            ),
        )],
    );
    let t0 = Instant::now();
    let out = deploy(&config, &bundle, &[]);
    eprintln!(
        "deployment with a background daemon took {:?}",
        t0.elapsed()
    );
    assert!(out.status.success());
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "the deployment waited for the daemon"
    );
    let pids = read_pids(&pid_file);
    assert_eq!(pids.len(), 1);
    // The daemon keeps writing to its inherited stdout after the agent has exited.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(pids[0]), "the daemon was killed (SIGPIPE?)");
    kill_pids(&pids);
}

#[test]
fn failing_hook_summary_names_event_script_exit_code_and_log_tail() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let bundle = s.join("b");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/ok.sh\n    - location: scripts/fail.sh\n  ApplicationStart:\n    - location: scripts/never.sh\n",
        &[
            ("scripts/ok.sh", "#!/bin/sh\necho fine\n"),
            ("scripts/fail.sh", "#!/bin/sh\necho about to fail\necho broken config >&2\nexit 3\n"),
            ("scripts/never.sh", "#!/bin/sh\ntouch \"$HOIST_DEMO_DIR/never-ran\"\n"),
        ],
    );
    let out = deploy(&config, &bundle, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for needle in [
        "failed event: AfterInstall",
        "script:       scripts/fail.sh",
        "exit code:    3",
        "about to fail",
        "broken config",
        "full log:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !s.join("root/never-ran").exists(),
        "events after a failure must not run"
    );
}

#[test]
fn escape_sequences_a_hook_prints_are_shown_escaped_by_deploy_and_status() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let bundle = s.join("b");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/fail.sh\n",
        &[(
            "scripts/fail.sh",
            "#!/bin/sh\nprintf 'title \\033]0;owned\\007 red \\033[31mX\\n'\nexit 3\n",
        )],
    );
    let out = deploy(&config, &bundle, &[]);
    assert_eq!(out.status.code(), Some(1));
    let status = run(Command::new(bin("hoist-agent"))
        .arg("status")
        .arg("--config")
        .arg(&config));
    for (what, text) in [("deploy", stdout(&out)), ("status", stdout(&status))] {
        assert!(
            text.contains("red \\x1b[31mX"),
            "{what} shows the sequence escaped:\n{text}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{what} printed a raw control character:\n{text:?}"
        );
    }
}

#[test]
fn disallow_names_the_existing_file_and_overwrite_replaces_it() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let dest = s.join("dest");
    fs::create_dir_all(&dest).expect("mkdir");
    fs::write(dest.join("app.txt"), "hand-made\n").expect("write");
    let bundle = s.join("b");
    write_bundle(
        &bundle,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app.txt\n    destination: {}\n",
            dest.display()
        ),
        &[],
    );
    fs::write(bundle.join("app.txt"), "from the bundle\n").expect("write");

    let out = deploy(&config, &bundle, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&dest.join("app.txt").display().to_string()),
        "{text}"
    );
    assert!(text.contains("DISALLOW"), "{text}");
    assert_eq!(
        fs::read_to_string(dest.join("app.txt")).expect("read"),
        "hand-made\n"
    );

    let out = deploy(&config, &bundle, &["--file-exists-behavior", "OVERWRITE"]);
    assert!(out.status.success());
    assert_eq!(
        fs::read_to_string(dest.join("app.txt")).expect("read"),
        "from the bundle\n"
    );
}

#[test]
#[ignore = "needs root: a real user for runas"]
fn runas_switches_to_a_real_user_and_permissions_apply() {
    need_root("a real user for runas");
    let user = TestUser::ensure("hoistapp");
    let s = Scratch::new();
    let config = agent_config(&s);
    let root = s.join("root");
    let bundle = s.join("b");
    example_bundle("runas-app", &bundle, &root);
    let out = deploy(&config, &bundle, &[]);
    assert!(out.status.success());
    let log = fs::read_to_string(root.join("runas-app/whoami.log")).expect("whoami.log");
    let pw = nix::unistd::User::from_name(&user.name)
        .expect("getpwnam")
        .expect("user exists");
    assert!(log.contains("AfterInstall user=hoistapp"), "{log}");
    assert!(log.contains(&format!("uid={}", pw.uid)), "{log}");
    assert!(log.contains(&format!("home={}", pw.dir.display())), "{log}");
    use std::os::unix::fs::MetadataExt;
    let data = fs::metadata(root.join("runas-app/data.txt")).expect("data.txt");
    assert_eq!(data.uid(), pw.uid.as_raw());
    assert_eq!(data.mode() & 0o777, 0o640);
    let dir = fs::metadata(root.join("runas-app")).expect("dir");
    assert_eq!(dir.uid(), pw.uid.as_raw());
    assert_eq!(dir.mode() & 0o777, 0o750);
}

#[test]
fn runas_an_unknown_user_fails_the_hook_and_never_runs_as_root() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let bundle = s.join("b");
    let marker = s.join("ran");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a.sh\n      runas: no-such-user-hoist\n",
        &[("a.sh", &format!("#!/bin/sh\ntouch {}\n", marker.display()))],
    );
    let out = deploy(&config, &bundle, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("no-such-user-hoist"), "{text}");
    assert!(
        !marker.exists(),
        "the script ran although its user does not exist"
    );
}

#[test]
fn a_second_deployment_on_the_host_names_the_lock_holder_and_sigterm_stops_the_first() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let bundle = s.join("b");
    let started = s.join("started");
    write_bundle(
        &bundle,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: long.sh\n",
        &[(
            "long.sh",
            &format!("#!/bin/sh\ntouch {}\nsleep 120\n", started.display()),
        )],
    );
    let first = Command::new(bin("hoist-agent"))
        .arg("deploy")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while !started.exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.exists(), "the long hook never started");
    let second = deploy(&config, &bundle, &[]);
    assert_ne!(second.status.code(), Some(0));
    let err = stderr(&second);
    assert!(
        err.contains(&format!("pid {} (hoist-agent deploy)", first.id())),
        "{err}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = first.wait_with_output().expect("wait");
    let text = stdout(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("stopped"), "{text}");
}

#[test]
fn validate_lists_every_problem_of_the_broken_example() {
    let out = run(Command::new(bin("hoist-agent"))
        .arg("validate")
        .arg(hoist_tests::repo_root().join("examples/broken-appspec")));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for key in [
        "version",
        "os",
        "files[0].destination",
        "file_exists_behavior",
        "permissions[0].object",
        "permissions[0].mode",
        "permissions[0].type",
        "hooks.Install",
        "hooks.AfterInstall[0].timeout",
        "hooks.AfterInstall[1].location",
        "hooks.AfterInstal",
        "colour",
    ] {
        assert!(
            text.contains(key),
            "validate did not mention {key}:\n{text}"
        );
    }
    for good in ["web-app", "runas-app"] {
        let out = run(Command::new(bin("hoist-agent"))
            .arg("validate")
            .arg(hoist_tests::repo_root().join("examples").join(good)));
        assert_eq!(out.status.code(), Some(0), "{good} must be valid");
    }
}

#[test]
fn a_bundle_with_an_escaping_entry_is_refused_and_writes_nothing_outside() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let archive = s.join("evil.tar");
    // A tar whose entry climbs out with `..`; written by hand because tar writers refuse it.
    let mut header = tar::Header::new_old();
    let name = b"../../../../escaped.txt";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(b"evil");
    bytes.resize(bytes.len() + 508 + 1024, 0);
    fs::write(&archive, bytes).expect("write tar");
    let out = deploy(&config, &archive, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("escaped.txt"), "{text}");
    let found = hoist_tests::walk(s.path())
        .into_iter()
        .filter(|p| p.ends_with("escaped.txt"))
        .collect::<Vec<_>>();
    assert!(found.is_empty(), "{found:?}");
    assert!(!Path::new("/escaped.txt").exists());
}

#[test]
fn zip_tar_and_tgz_of_one_bundle_install_identical_trees() {
    let s = Scratch::new();
    let src = s.join("src");
    write_bundle(
        &src,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n",
            s.join("dest").display()
        ),
        &[("app/bin/run.sh", "#!/bin/sh\necho run\n")],
    );
    fs::create_dir_all(src.join("app/data/nested")).expect("mkdir");
    fs::write(src.join("app/data/nested/a.txt"), "alpha\n").expect("write");
    fs::write(src.join("app/data/b.cfg"), "beta\n").expect("write");
    fs::set_permissions(
        src.join("app/data/b.cfg"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("data/nested/a.txt", src.join("app/current")).expect("symlink");

    let mut trees = Vec::new();
    for (kind, name) in [("zip", "b.zip"), ("tar", "b.tar"), ("tgz", "b.tgz")] {
        let archive = s.join(name);
        match kind {
            "zip" => hoist_tests::archive::write_zip(&src, &archive).expect("zip"),
            "tar" => hoist_tests::archive::write_tar(&src, &archive, false).expect("tar"),
            _ => hoist_tests::archive::write_tar(&src, &archive, true).expect("tgz"),
        }
        // A fresh state dir and destination for each format, so each is a first install.
        let _ = fs::remove_dir_all(s.join("dest"));
        let _ = fs::remove_dir_all(s.join("state"));
        let config = agent_config(&s);
        let out = deploy(&config, &archive, &[]);
        assert!(out.status.success(), "{kind} deployment failed");
        trees.push((kind, describe_tree(&s.join("dest"))));
    }
    assert!(trees[0].1.len() >= 6, "{:?}", trees[0].1);
    for (kind, tree) in &trees[1..] {
        assert_eq!(tree, &trees[0].1, "{kind} differs from zip");
    }
}

/// (relative path, kind, mode, content or link target) of every entry below `root`.
fn describe_tree(root: &Path) -> Vec<(String, String, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("meta");
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("link").display().to_string();
                out.push((rel, "link".into(), 0, target));
            } else if meta.is_dir() {
                out.push((rel, "dir".into(), mode, String::new()));
                stack.push(path);
            } else {
                let content = fs::read_to_string(&path).expect("read");
                out.push((rel, "file".into(), mode, content));
            }
        }
    }
    out.sort();
    out
}

/// Packs `src` as `kind` (zip, tar or tgz) at `archive`.
fn pack(kind: &str, src: &Path, archive: &Path) {
    match kind {
        "zip" => hoist_tests::archive::write_zip(src, archive).expect("zip"),
        "tar" => hoist_tests::archive::write_tar(src, archive, false).expect("tar"),
        _ => hoist_tests::archive::write_tar(src, archive, true).expect("tgz"),
    }
}

/// A bundle whose entries all sit under one folder holding the appspec installs the same tree,
/// and its hooks run in the same working directory, as the same bundle without the folder.
#[test]
fn a_leading_folder_in_zip_tar_and_tgz_changes_neither_the_tree_nor_the_hooks_directory() {
    let s = Scratch::new();
    let plain = s.join("plain");
    write_bundle(
        &plain,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n  AfterInstall:\n    - location: scripts/where.sh\n",
            s.join("dest").display()
        ),
        &[
            ("app/bin/run.sh", "#!/bin/sh\necho run\n"),
            (
                "scripts/where.sh",
                "#!/bin/sh\nset -eu\nls -A > \"$HOIST_DEMO_DIR/cwd-listing\"\ncat scripts/where.sh > \"$HOIST_DEMO_DIR/cwd-script\"\n",
            ),
        ],
    );
    fs::write(plain.join("app/config.txt"), "config\n").expect("write");
    let wrapped = s.join("wrapped");
    copy_dir(&plain, &wrapped.join("owner-repo-0123abc"));

    let mut outcomes = Vec::new();
    for kind in ["zip", "tar", "tgz"] {
        for (layout, src) in [("plain", &plain), ("wrapped", &wrapped)] {
            let archive = s.join(format!("{layout}.{kind}"));
            pack(kind, src, &archive);
            let _ = fs::remove_dir_all(s.join("dest"));
            let _ = fs::remove_dir_all(s.join("state"));
            let _ = fs::remove_dir_all(s.join("root"));
            fs::create_dir_all(s.join("root")).expect("mkdir");
            let config = agent_config(&s);
            let out = deploy(&config, &archive, &[]);
            assert!(out.status.success(), "{layout} {kind} deployment failed");
            let listing = fs::read_to_string(s.join("root/cwd-listing")).expect("listing");
            let script = fs::read_to_string(s.join("root/cwd-script")).expect("script");
            outcomes.push((
                format!("{layout} {kind}"),
                describe_tree(&s.join("dest")),
                listing,
                script,
            ));
        }
    }
    let (_, tree, listing, script) = &outcomes[0];
    assert!(tree.len() >= 3, "{tree:?}");
    assert_eq!(listing, "app\nappspec.yml\nscripts\n");
    assert!(script.contains("cwd-listing"), "{script}");
    for (what, other_tree, other_listing, other_script) in &outcomes[1..] {
        assert_eq!(other_tree, tree, "{what}: installed tree differs");
        assert_eq!(
            other_listing, listing,
            "{what}: hook working directory differs"
        );
        assert_eq!(other_script, script, "{what}");
    }
}

/// Regression: `logs -> <absolute path>` was refused in a tar.gz ("symlink to absolute path")
/// but installed from a directory. Both install it as a link, and no permissions step reaches
/// through it; `validate` names it.
#[test]
fn an_absolute_symlink_installs_as_a_link_from_a_tgz_and_from_a_directory() {
    let s = Scratch::new();
    let elsewhere = s.join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    fs::write(elsewhere.join("keep.log"), "untouched\n").expect("write");
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(
        elsewhere.join("keep.log"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let dest = s.join("dest");
    let src = s.join("src");
    write_bundle(
        &src,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}\npermissions:\n  - object: {dest}\n    mode: 700\n",
            dest = dest.display()
        ),
        &[("app/run.sh", "#!/bin/sh\n")],
    );
    std::os::unix::fs::symlink(&elsewhere, src.join("app/logs")).expect("symlink");
    let archive = s.join("b.tgz");
    pack("tgz", &src, &archive);

    let validated = run(Command::new(bin("hoist-agent"))
        .arg("validate")
        .arg(&archive));
    assert_eq!(validated.status.code(), Some(0), "{}", stdout(&validated));
    let text = stdout(&validated);
    assert!(
        text.contains("\"app/logs\"") && text.contains("pointing out of the bundle"),
        "{text}"
    );

    for bundle in [&src, &archive] {
        let _ = fs::remove_dir_all(&dest);
        let _ = fs::remove_dir_all(s.join("state"));
        let config = agent_config(&s);
        let out = deploy(&config, bundle, &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            bundle.display(),
            stdout(&out)
        );
        assert_eq!(
            fs::read_link(dest.join("logs")).expect("a symlink"),
            elsewhere,
            "{}",
            bundle.display()
        );
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dest.join("run.sh")), 0o700, "permissions applied");
        assert_eq!(mode(&elsewhere), 0o755, "nothing chmods through the link");
        assert_eq!(mode(&elsewhere.join("keep.log")), 0o644);
        assert_eq!(
            fs::read_to_string(elsewhere.join("keep.log")).expect("read"),
            "untouched\n"
        );
    }
}

/// Regression: a script shipped 0777 stayed 0777 in the deployment directory, so another user
/// could rewrite the ApplicationStop script the agent later runs as root.
#[test]
#[ignore = "needs root: a real unprivileged user"]
fn an_unprivileged_user_cannot_change_a_script_the_agent_will_run() {
    need_root("a real unprivileged user");
    let user = TestUser::ensure("hoistnopriv");
    let s = Scratch::new();
    let src = s.join("src");
    write_bundle(
        &src,
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n",
        &[("scripts/stop.sh", "#!/bin/sh\necho stopping\n")],
    );
    fs::set_permissions(src.join("scripts"), fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::set_permissions(
        src.join("scripts/stop.sh"),
        fs::Permissions::from_mode(0o777),
    )
    .expect("chmod");
    let archive = s.join("b.tgz");
    pack("tgz", &src, &archive);
    for bundle in [&src, &archive] {
        let _ = fs::remove_dir_all(s.join("state"));
        let config = agent_config(&s);
        let out = deploy(&config, bundle, &[]);
        assert!(out.status.success(), "{}", bundle.display());
        let copies: Vec<PathBuf> = hoist_tests::walk(&s.join("state"))
            .into_iter()
            .filter(|p| p.ends_with("scripts/stop.sh"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let script = &copies[0];
        let as_user = |shell: &str| {
            run(Command::new("runuser").args(["-u", &user.name, "--", "sh", "-c", shell]))
        };
        let quoted = format!("'{}'", script.display());
        let append = as_user(&format!("echo pwned >> {quoted}"));
        assert!(!append.status.success(), "{} could append", user.name);
        let replace = as_user(&format!(
            "cp /bin/true {quoted}.new && mv -f {quoted}.new {quoted}"
        ));
        assert!(!replace.status.success(), "{} could replace", user.name);
        assert_eq!(
            fs::read_to_string(script).expect("read"),
            "#!/bin/sh\necho stopping\n",
            "{}",
            bundle.display()
        );
        let mode = fs::metadata(script).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "mode {mode:o}");
        // The deployment's copy of the revision: the `archive` directory above the script.
        let archive_dir = script
            .ancestors()
            .find(|p| p.file_name() == Some(std::ffi::OsStr::new("archive")))
            .expect("archive directory");
        let dir_mode = fs::metadata(archive_dir)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o750, "{}", archive_dir.display());
        let listed = as_user(&format!("ls '{}'", archive_dir.display()));
        assert!(!listed.status.success(), "{} could list it", user.name);
    }
}

/// Regression: a permissions rule that cannot apply (here a pattern on a file object) failed
/// Install only after the files were copied, leaving a file meant to be 0600 at 0644.
#[test]
fn a_permissions_rule_that_cannot_apply_installs_nothing() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let dest = s.join("dest");
    let src = s.join("src");
    write_bundle(
        &src,
        &format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}\npermissions:\n  - object: {dest}/secret.txt\n    pattern: \"*.txt\"\n    mode: 600\n",
            dest = dest.display()
        ),
        &[],
    );
    fs::create_dir_all(src.join("app")).expect("mkdir");
    fs::write(src.join("app/secret.txt"), "s3cret\n").expect("write");
    fs::set_permissions(
        src.join("app/secret.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = deploy(&config, &src, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("cannot apply to a file object"), "{text}");
    assert!(
        !dest.exists(),
        "Install wrote {:?}",
        hoist_tests::walk(&dest)
    );
}

/// Regression: a 10 GiB zip of zeros (about 10 MB, 1000:1) was refused only after 8 GiB were
/// written. `hoist-agent deploy` now refuses it from its headers, writing nothing.
#[test]
fn a_10_gib_zip_bomb_is_refused_before_anything_is_written() {
    let s = Scratch::new();
    let config = agent_config(&s);
    let bomb = s.join("bomb.zip");
    hoist_tests::archive::write_zero_zip_bomb(&bomb, "zeros", 10 * 1024).expect("bomb");
    let out = deploy(&config, &bomb, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("total unpacked bytes"), "{text}");
    assert!(
        text.contains("10737418240"),
        "the declared size is named: {text}"
    );
    let written: Vec<PathBuf> = hoist_tests::walk(&s.join("state"))
        .into_iter()
        .filter(|p| p.ends_with("zeros"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
