//! `hoist deploy create --wait` as an operator sees it, against the real server and simulated
//! hosts: piped (a few lines per host, never one per event), as JSON lines, and on a
//! terminal (tmux) with 50 hosts, where the live view must fit one screen.

use std::process::Command;
use std::time::{Duration, Instant};

use hoist_tests::reports::started;

use crate::support::{bundle_dir, hoist_with, setup, tags, Scratch, Server, SimHost, HOIST, TOKEN};

/// A server with `n` registered hosts `web-00`... in group shop/web (AllAtOnce) and a
/// pushed revision.
async fn fleet(tmp: &Scratch, n: usize) -> (Server, Vec<SimHost>, String) {
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    let mut hosts = Vec::new();
    for i in 0..n {
        let name = format!("web-{i:02}");
        hosts.push(SimHost::register(&server.url, &reg, &name, tags(&[("role", "web")])).await);
    }
    let dir = bundle_dir(tmp.path(), "v1");
    let rev = server.push(dir.to_str().unwrap(), "shop").await;
    (server, hosts, rev)
}

fn create_args(rev: &str) -> Vec<&str> {
    vec![
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--revision",
        rev,
        "--wait",
    ]
}

/// Each host polls until it holds its command, then runs it (`web-03` fails).
async fn run_all(hosts: &[SimHost]) {
    for h in hosts {
        let t0 = Instant::now();
        let cmd = loop {
            if let Some(c) = h.poll(1).await {
                break c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{} got no command",
                h.name
            );
        };
        h.run(&cmd, h.name != "web-03").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_wait_prints_a_few_lines_per_host_and_each_failure_once_with_its_details() {
    let tmp = Scratch::new();
    let (server, hosts, rev) = fleet(&tmp, 8).await;
    let wait = {
        let url = server.url.clone();
        let args: Vec<String> = create_args(&rev).iter().map(|s| s.to_string()).collect();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hoist_with(&url, Some(TOKEN), &args).await
        })
    };
    run_all(&hosts).await;
    let out = wait.await.unwrap();
    eprintln!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    // AllAtOnce needs no healthy host: the deployment succeeds with one host failed.
    assert_eq!(out.code, 0, "the deployment succeeds");
    assert!(
        out.stdout.trim().starts_with("d-"),
        "the id alone on stdout"
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    for h in &hosts {
        let about: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains(&format!("{} ", h.name)) && !l.starts_with("deployment "))
            .collect();
        // Started, then succeeded or failed: never a line per lifecycle event.
        assert_eq!(about.len(), 2, "{}: {about:#?}", h.name);
        assert!(
            about[0].ends_with(&format!("{} started", h.name)),
            "{about:?}"
        );
    }
    let failures: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("web-03 failed"))
        .collect();
    assert_eq!(failures.len(), 1, "the failure is printed once");
    assert!(
        failures[0].contains(
            "web-03 failed in ApplicationStart: script scripts/start.sh exited with code 3"
        ),
        "{}",
        failures[0]
    );
    assert!(
        out.stderr.contains("| port in use"),
        "the log tail is shown"
    );
    assert!(
        !out.stderr.contains("Install"),
        "no line per event:\n{}",
        out.stderr
    );
    let summary = lines
        .iter()
        .find(|l| l.starts_with("deployment "))
        .expect("a summary");
    assert!(
        summary.contains(" succeeded in ")
            && summary.ends_with("7 succeeded, 1 failed, 0 stopped, 0 skipped; failed on web-03"),
        "{summary}"
    );
    // Eight hosts: two lines each, the failure's log tail, the summary and its reason.
    assert!(lines.len() <= 8 * 2 + 4 + 2, "{} lines", lines.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_wait_prints_one_object_per_change_and_a_summary() {
    let tmp = Scratch::new();
    let (server, hosts, rev) = fleet(&tmp, 4).await;
    let wait = {
        let url = server.url.clone();
        let mut args: Vec<String> = create_args(&rev).iter().map(|s| s.to_string()).collect();
        args.push("--json".into());
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hoist_with(&url, Some(TOKEN), &args).await
        })
    };
    run_all(&hosts).await;
    let out = wait.await.unwrap();
    eprintln!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, 0);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds = |host: &str| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o["host"] == host)
            .map(|o| o["change"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds("web-00").first().map(String::as_str), Some("started"));
    assert_eq!(kinds("web-00").last().map(String::as_str), Some("finished"));
    // Events are changes too, for scripts. The CLI diffs the views it is woken with, so a
    // host whose events all fall between two of its looks (the first host may run its whole
    // command before the first look) shows only started and finished; some host's events
    // must show.
    let hosts = ["web-00", "web-01", "web-02", "web-03"];
    assert!(
        hosts.iter().any(|h| kinds(h).contains(&"event".to_owned())),
        "{:?}",
        hosts.map(kinds)
    );
    assert_eq!(kinds("web-03").last().map(String::as_str), Some("failed"));
    let failed: Vec<&serde_json::Value> =
        objects.iter().filter(|o| o["change"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["event"], "ApplicationStart");
    assert_eq!(failed[0]["script"], "scripts/start.sh");
    assert_eq!(failed[0]["exit_code"], 3);
    let last = objects.last().expect("a summary line");
    assert_eq!(last["change"], "summary");
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["failed_hosts"], serde_json::json!(["web-03"]));
    assert!(last["seconds"].as_f64().is_some());
    assert!(objects
        .iter()
        .all(|o| o["deployment_id"] == last["deployment_id"]));
}

/// A tmux server of its own (its socket named for this test), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "progress"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

const ROWS: usize = 40;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs tmux: drives the live view on a terminal"]
async fn on_a_terminal_the_live_view_of_50_hosts_fits_one_screen() {
    hoist_tests::need_tool("tmux", "a terminal for the live view");
    let tmp = Scratch::new();
    let (server, hosts, rev) = fleet(&tmp, 50).await;
    let code_file = tmp.path().join("exit-code");
    let script = format!(
        "HOIST_SERVER={} HOIST_TOKEN={TOKEN} {HOIST} {}; echo $? > {}; exec sleep 600",
        server.url,
        create_args(&rev).join(" "),
        code_file.display()
    );
    let tmux = Tmux {
        socket: format!("hoist-progress-{}", std::process::id()),
    };
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "progress",
        "-x",
        "120",
        "-y",
        &ROWS.to_string(),
        "sh",
        "-c",
        &script,
    ]);

    // Every host takes its command and starts Install: the view lists ten and counts the rest.
    for h in &hosts {
        let t0 = Instant::now();
        let cmd = loop {
            if let Some(c) = h.poll(1).await {
                break c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{} got no command",
                h.name
            );
        };
        h.report(&cmd.command_id, 1, started("Install")).await;
    }
    let mut frame = String::new();
    let t0 = Instant::now();
    while !frame.contains("50 in progress") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no live view of 50 running hosts:\n{frame}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        frame = tmux.screen();
    }
    eprintln!("mid-deployment frame:\n{frame}");
    let used: Vec<&str> = frame.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        used.len() < ROWS,
        "the view fills {} of {ROWS} rows",
        used.len()
    );
    assert!(
        frame.contains("0/50 hosts  0 succeeded, 50 in progress, 0 failed, 0 pending, 0 skipped"),
        "{frame}"
    );
    assert!(frame.contains("... and 40 more running"), "{frame}");
    assert_eq!(
        frame.matches(" Install").count(),
        10,
        "ten running hosts listed:\n{frame}"
    );

    // They finish (web-03 fails): its failure is printed once, then the summary.
    let t0 = Instant::now();
    for h in &hosts {
        let cmd = loop {
            if let Some(c) = h.poll(0).await {
                break c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{} lost its command",
                h.name
            );
        };
        h.run(&cmd, h.name != "web-03").await;
    }
    let t0 = Instant::now();
    while !code_file.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "hoist did not end:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The whole output, scrollback included, still fits the screen.
    let history: usize = tmux
        .run(&["display-message", "-p", "-t", "progress", "#{history_size}"])
        .trim()
        .parse()
        .expect("history size");
    let all = tmux.run(&["capture-pane", "-p", "-S", "-", "-t", "progress"]);
    eprintln!("final screen (history {history}):\n{all}");
    assert_eq!(history, 0, "the output scrolled past one screen");
    assert_eq!(std::fs::read_to_string(&code_file).unwrap().trim(), "0");
    assert_eq!(
        all.matches("web-03 failed in ApplicationStart").count(),
        1,
        "{all}"
    );
    assert!(all.contains("| port in use"), "{all}");
    assert!(
        all.contains("49 succeeded, 1 failed, 0 stopped, 0 skipped; failed on web-03"),
        "{all}"
    );
    assert!(
        !all.contains("in progress"),
        "the live view is cleared at the end:\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_without_wait_prints_the_created_deployment() {
    let tmp = Scratch::new();
    let (server, _hosts, rev) = fleet(&tmp, 1).await;
    let mut args = create_args(&rev);
    args.retain(|a| *a != "--wait");
    args.push("--json");
    let out = server.hoist(&args).await;
    let d: hoist_protocol::operator::Deployment =
        serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert!(d.id.starts_with("d-"), "{}", d.id);
    assert_eq!(d.application, "shop");
    assert_eq!(d.revision_id.as_deref(), Some(rev.as_str()));
}
