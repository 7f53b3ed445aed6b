//! `hoist server` on PostgreSQL (`--database`, `HOIST_DATABASE_URL`): migrations by
//! `hoist server migrate`, state that lives in the database rather than the data directory,
//! and two replicas on one database whose decisions never interleave. Each test has its
//! own database in the test binary's cluster (`hoist_tests::postgres`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{CreateDeployment, DeploymentState, RevisionSource};
use hoist_tests::postgres::{database, SharedBundles, TestDatabase};

use crate::support::*;

/// The database's URL with a password in it (the cluster trusts loopback, so any works).
/// A replica on `db` keeping bundles in `bundles` (with `extra` flags).
fn replica(dir: &Path, db: &TestDatabase, bundles: &SharedBundles, extra: &[&str]) -> Server {
    let mut flags = vec!["--database", db.url.as_str()];
    flags.extend(bundles.flags());
    flags.extend(extra);
    Server::launch(
        dir,
        Launch {
            extra: &flags,
            env: &bundles.env(),
            ..Launch::default()
        },
    )
}

fn url_with_password(db: &TestDatabase) -> String {
    db.url
        .replacen("postgres://hoist@", "postgres://hoist:pw-not-shown@", 1)
}

#[test]
#[ignore = "needs postgresql"]
fn migrate_brings_a_postgres_database_up_to_date_and_refuses_a_newer_one() {
    let db = database();
    let tmp = Scratch::new();
    let url = url_with_password(&db);
    let out = Command::new(HOIST)
        .args(["server", "migrate", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("HOIST_DATABASE_URL", &url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let version = hoist_coordinator::store::postgres::SCHEMA_VERSION;
    assert_eq!(
        stdout.trim(),
        format!("database {} is at schema version {version}", db.url)
    );
    assert!(!stderr.contains("pw-not-shown"), "{stderr}");
    assert_eq!(
        db.psql("SELECT max(version) FROM schema_version").trim(),
        version.to_string()
    );

    db.psql(&format!(
        "INSERT INTO schema_version (version) VALUES ({})",
        version + 1
    ));
    let out = Command::new(HOIST)
        .args(["server", "migrate", "--database", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "database schema version {} is newer than this coordinator's {version}",
            version + 1
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&db.url) && !stderr.contains("pw-not-shown"),
        "{stderr}"
    );

    let out = Command::new(HOIST)
        .args(["server", "migrate", "--database", "mysql://u:pw-bad@h/db"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("database: the database URL must start with postgres://")
            && !stderr.contains("pw-bad"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn state_on_postgres_outlives_the_server_and_its_data_directory() {
    let db = database();
    let tmp = Scratch::new();
    let url = url_with_password(&db);
    let server = Server::start_with(
        &tmp.path().join("a"),
        &["--database", &url, "--single-replica"],
        Some(TOKEN),
    );
    server.hoist(&["app", "create", "shop"]).await.ok();
    assert!(!server.log().contains("pw-not-shown"), "{}", server.log());
    assert!(!tmp.path().join("a/hoist.db").exists());
    drop(server);
    // Another server with another (empty) data directory finds it in the database.
    let server = Server::launch(
        &tmp.path().join("b"),
        Launch {
            extra: &["--single-replica"],
            env: &[("HOIST_DATABASE_URL", &url)],
            ..Launch::default()
        },
    );
    let apps = server.hoist(&["app", "list"]).await;
    assert!(apps.ok().contains("shop"), "{}", apps.ok());
}

/// Two replicas on one database, each asked at the same moment to start a deployment of
/// the same group: every round exactly one starts and the other is refused (409), so the
/// group never has two deployments in progress.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn two_replicas_racing_to_deploy_one_group_start_exactly_one() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    let reg = setup(&a, "shop", "web", &["--tag", "role=web"]).await;
    for n in 0..3 {
        let base = if n % 2 == 0 { &a.url } else { &b.url };
        SimHost::register(base, &reg, &format!("web-{n}"), tags(&[("role", "web")])).await;
    }
    let http = reqwest::Client::new();
    let urls = Arc::new([a.url.clone(), b.url.clone()]);
    for round in 0..15u32 {
        let req = |n: u32| CreateDeployment {
            application: "shop".into(),
            deployment_group: "web".into(),
            revision: RevisionSource::Inline(Revision::Git {
                repository: "https://git.example/shop".into(),
                commit: format!("{:040x}", round * 2 + n),
            }),
            file_exists_behavior: None,
            ignore_application_stop_failures: false,
            events: Vec::new(),
            appspec_path: None,
            variables: Default::default(),
            signature: None,
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2u32)
            .map(|n| {
                let (http, urls, barrier, body) =
                    (http.clone(), urls.clone(), barrier.clone(), req(n));
                tokio::spawn(async move {
                    let send = http
                        .post(format!("{}/v1/deployments", urls[n as usize]))
                        .bearer_auth(TOKEN)
                        .json(&body);
                    barrier.wait().await;
                    let resp = send.send().await.unwrap();
                    let status = resp.status().as_u16();
                    (status, resp.text().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for r in racers {
            answers.push(r.await.unwrap());
        }
        let created: Vec<_> = answers
            .iter()
            .filter(|(s, _)| *s == 201 || *s == 200)
            .collect();
        let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 409).collect();
        assert_eq!(
            (created.len(), refused.len()),
            (1, 1),
            "round {round}: {answers:?}"
        );
        let list = a.hoist(&["deploy", "list", "--json"]).await;
        let list: hoist_protocol::operator::DeploymentList =
            serde_json::from_str(list.ok()).unwrap();
        let active: Vec<_> = list
            .deployments
            .iter()
            .filter(|d| {
                matches!(
                    d.state,
                    DeploymentState::InProgress | DeploymentState::Pending
                )
            })
            .map(|d| d.id.clone())
            .collect();
        assert_eq!(active.len(), 1, "round {round}: {active:?}");
        a.hoist(&["deploy", "stop", &active[0]]).await.ok();
    }
}

/// A command handed out by replica A, which then dies, is expired by replica B: the lease
/// (hand-out and heartbeats) is in the database, so B fails the silent command ("no
/// report") although the host keeps polling B, where B alone would have taken the polls
/// for a sign of life.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn a_replica_expires_a_command_another_handed_out() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(
        &tmp.path().join("a"),
        &db,
        &bundles,
        &["--host-lease", "2s"],
    );
    let b = replica(
        &tmp.path().join("b"),
        &db,
        &bundles,
        &["--host-lease", "2s"],
    );
    let reg = setup(&a, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&a.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let commit = "c".repeat(40);
    let id = a
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--git",
            "https://git.example/shop",
            "--commit",
            &commit,
        ])
        .await
        .ok()
        .to_owned();
    let cmd = host.poll(0).await.expect("the command, from replica A");
    assert_eq!(cmd.deployment_id, id);
    // A writes the hand-out with its next contacts write; then it dies.
    let start = std::time::Instant::now();
    while db.psql("SELECT count(*) FROM command_leases").trim() != "1" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "replica A wrote no lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(a);
    // The host polls on through B (it fails over) but never reports on the command.
    let host = host.at(&b.url);
    let start = std::time::Instant::now();
    let d = loop {
        host.poll(0).await;
        let d = b.deployment(&id).await;
        if d.state.is_terminal() {
            break d;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "the command is still {} through replica B after 15 s",
            d.hosts[0].state
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        d.hosts[0].state,
        hoist_protocol::operator::CommandState::Failed
    );
    assert_eq!(d.hosts[0].error_code.as_deref(), Some("no_report"));
    assert!(
        host.poll(0).await.is_none(),
        "the failed command is not handed out again"
    );
}

/// A poll held by replica B answers with a command that replica A started: A tells B
/// (`NOTIFY`), B's held poll looks in the database. Without the notice the poll would end
/// empty at its deadline.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn a_poll_held_on_one_replica_gets_a_command_started_on_another() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    let reg = setup(
        &a,
        "shop",
        "web",
        &["--tag", "role=web", "--config", "AllAtOnce"],
    )
    .await;
    // Registered (and first seen) through A, whose deployment then targets both at once;
    // their polls are held by B.
    let mut hosts = Vec::new();
    for n in 0..2 {
        let host =
            SimHost::register(&a.url, &reg, &format!("web-{n}"), tags(&[("role", "web")])).await;
        hosts.push(host.at(&b.url));
    }
    let polls: Vec<_> = hosts
        .iter()
        .cloned()
        .map(|h| tokio::spawn(async move { (h.poll(20).await, std::time::Instant::now()) }))
        .collect();
    // Both polls are held by B before the deployment exists.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let commit = "d".repeat(40);
    let created = std::time::Instant::now();
    let id = a
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--git",
            "https://git.example/shop",
            "--commit",
            &commit,
        ])
        .await
        .ok()
        .to_owned();
    for p in polls {
        let (cmd, at) = p.await.unwrap();
        let cmd = cmd.expect("the held poll answered with the command");
        assert_eq!(cmd.deployment_id, id);
        eprintln!(
            "held poll on B answered {:?} after `deploy create` through A started",
            at.saturating_duration_since(created)
        );
    }
}

/// A host revoked through replica B is refused by replica A, which had its credentials
/// cached from an earlier request: B tells A, A drops its entry and reads the database.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn a_host_revoked_on_one_replica_is_refused_by_another() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    let reg = setup(&a, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&a.url, &reg, "web-1", tags(&[("role", "web")])).await;
    // A has checked (and cached) the host's credentials.
    assert_eq!(host.poll_raw(0).await.status(), 200);
    b.hoist(&["hosts", "revoke", &host.id]).await.ok();
    let start = std::time::Instant::now();
    loop {
        let status = host.poll_raw(0).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "replica A still accepts the revoked host after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!(
        "replica A refused the host {:?} after the revocation",
        start.elapsed()
    );
}

/// Each replica logs its id and keeps a row with a heartbeat; `hoist server replicas`
/// lists the live ones, and one stopped cleanly leaves the list.
#[test]
#[ignore = "needs postgresql"]
fn hoist_server_replicas_lists_the_running_replicas() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let mut b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    let id_of = |log: String| {
        let at = log
            .find("replica rp-")
            .expect("the replica's id in its log");
        log[at + "replica ".len()..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned()
    };
    let (id_a, id_b) = (id_of(a.log()), id_of(b.log()));
    assert_ne!(id_a, id_b);
    let list = || {
        let out = Command::new(HOIST)
            .args(["server", "replicas", "--json", "--database", &db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert!(r["pid"].as_u64().unwrap() > 0 && r["beat_ms"].as_u64().unwrap() > 0);
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["listen"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(),
        vec![(id_a.clone(), a.authority()), (id_b.clone(), b.authority())]
    );
    b.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(list(), vec![(id_a, a.authority())]);
    let out = Command::new(HOIST)
        .args(["server", "replicas", "--database", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ID") && text.contains("LAST BEAT"),
        "{text}"
    );
}

/// An operator watching a deployment through replica A (`--wait`'s long poll) hears of a
/// report recorded by replica B: B's change ends A's watch with a new change number.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn a_watch_held_on_one_replica_ends_on_a_change_made_on_another() {
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    let reg = setup(&a, "shop", "web", &["--tag", "role=web"]).await;
    // Registered (and first seen) through A; it works through B from then on.
    let host = SimHost::register(&a.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let host = host.at(&b.url);
    let commit = "e".repeat(40);
    let id = a
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--git",
            "https://git.example/shop",
            "--commit",
            &commit,
        ])
        .await
        .ok()
        .to_owned();
    let cmd = host.poll(0).await.expect("the command");
    let seen = a.deployment(&id).await.change_seq;
    let watch = {
        let (http, url, id) = (a.client(), a.url.clone(), id.clone());
        tokio::spawn(async move {
            http.get(format!(
                "{url}/v1/deployments/{id}?since={seen}&wait_secs=20"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json::<hoist_protocol::operator::Deployment>()
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    host.report(&cmd.command_id, 1, hoist_tests::reports::started("Install"))
        .await;
    let d = watch.await.unwrap();
    assert!(
        d.change_seq > seen,
        "A's watch ended without a change: {d:?}"
    );
    assert_eq!(
        d.hosts[0].current_event.as_deref(),
        Some("Install"),
        "{d:?}"
    );
}

/// Releases of `pipeline` as `server` lists them, newest first.
async fn releases_of(server: &Server, pipeline: &str) -> Vec<hoist_protocol::operator::Release> {
    let out = server
        .hoist(&["release", "list", "--pipeline", pipeline, "--json"])
        .await;
    serde_json::from_str::<hoist_protocol::operator::ReleaseList>(out.ok())
        .unwrap()
        .releases
}

/// Two replicas watch one pipeline's Git branch (each replica's source watcher looks every
/// second): each commit pushed becomes exactly one release, since a look is recorded under
/// the database's decision lock and the second replica to find a commit finds it released.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgresql"]
async fn two_replicas_watching_one_git_source_release_each_commit_once() {
    use hoist_tests::servers::{bare_repo, git, GitDaemon};
    let db = database();
    let tmp = Scratch::new();
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    let a = replica(&tmp.path().join("a"), &db, &bundles, &[]);
    let b = replica(&tmp.path().join("b"), &db, &bundles, &[]);
    setup(&a, "shop", "staging", &["--tag", "env=staging"]).await;
    let git_root = tmp.path().join("git");
    let first = bare_repo(&git_root, "shop.git", &[&[("README", "one\n")]]);
    let daemon = GitDaemon::start(&git_root).await;
    let file = tmp.path().join("pipeline.yml");
    std::fs::write(
        &file,
        format!(
            "pipeline: shop-release\napplication: shop\nsource:\n  git: {{ url: \"{}\", \
             branch: main, poll_secs: 1 }}\nstages:\n  - group: staging\n",
            daemon.url("shop.git")
        ),
    )
    .unwrap();
    b.hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();

    let work = git_root.join("shop.git.work");
    let bare = git_root.join("shop.git");
    let mut commits = first;
    for n in 1..=3 {
        if n > 1 {
            std::fs::write(work.join("README"), format!("{n}\n")).unwrap();
            git(&work, &["commit", "-q", "-am", &format!("commit {n}")]);
            commits.push(git(&work, &["rev-parse", "HEAD"]));
            git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
        }
        // The first: the branch's head when the pipeline was applied.
        let want = commits.last().unwrap().clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !releases_of(&a, "shop-release")
            .await
            .iter()
            .any(|r| r.source_ref.as_deref() == Some(want.as_str()))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no release of {want}\n{}\n{}",
                a.log(),
                b.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    // Both replicas look several times more after the last release.
    let last_ms = releases_of(&b, "shop-release").await[0].created_ms;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown: serde_json::Value = serde_json::from_str(
            b.hoist(&["pipeline", "show", "shop-release", "--json"])
                .await
                .ok(),
        )
        .unwrap();
        if shown["source_status"]["checked_ms"].as_u64() > Some(last_ms + 3000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut refs: Vec<String> = releases_of(&a, "shop-release")
        .await
        .into_iter()
        .map(|r| r.source_ref.unwrap_or_default())
        .collect();
    refs.sort();
    let mut want = commits.clone();
    want.sort();
    assert_eq!(refs, want, "one release per commit, none twice");
}

/// A server on PostgreSQL, which other replicas may share, with bundles in its own data
/// directory refuses to start unless told it is the only replica.
#[test]
#[ignore = "needs postgresql"]
fn a_replica_with_local_bundles_on_postgres_refuses_to_start_unless_it_is_the_only_one() {
    let db = database();
    let tmp = Scratch::new();
    let refused = hoist_tests::coordinator::Server::try_launch(
        &tmp.path().join("a"),
        Launch {
            program: Some(Path::new(HOIST)),
            extra: &["--database", &db.url],
            ..Launch::default()
        },
    )
    .err()
    .expect("refused");
    let text = format!("{refused:#}");
    assert!(
        text.contains("--single-replica") && text.contains("--bundle-store"),
        "{text}"
    );
    let single = Server::start_with(
        &tmp.path().join("a"),
        &["--database", &db.url, "--single-replica"],
        Some(TOKEN),
    );
    drop(single);
    let bundles = SharedBundles::start(&tmp.path().join("s3"));
    drop(replica(&tmp.path().join("b"), &db, &bundles, &[]));
}
