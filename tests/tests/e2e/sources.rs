//! Deployments from every kind of revision source through the whole system: the real
//! `hoist server`, two real `hoist-agent run` daemons tagged `role=web` and real storage
//! servers (s3s-fs checking SigV4 headers and presigned URLs, moto_server for object
//! versions, `git http-backend` behind Basic auth). Each agent runs in its own mount
//! namespace, so the appspec's destination is a separate tree per host, as on separate hosts.
//! Also: a wrong sha256 and hostile archives are refused and nothing is installed.
//!
//! Not here: the fetchers' retry, resume and error details (the agent's own tests) or rollout
//! rules (fleet.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hoist_tests::archive::write_tar;
use hoist_tests::coordinator::Launch;
use hoist_tests::fleet::{Agent, AgentOptions, Coordinator, OPERATOR_TOKEN};
use hoist_tests::servers::{
    bare_repo, need_moto, presigned_get, sha256_hex, start_git_http, start_s3s, GitDaemon, Moto,
    GIT_HTTP_PASSWORD, GIT_HTTP_USER, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY,
};
use hoist_tests::{need_root, wait_for, walk, Scratch};

const HOSTS: [&str; 2] = ["web-1", "web-2"];

/// A runtime for the in-process servers: its worker thread keeps serving while the test
/// thread blocks on the CLI.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where every host installs the bundle's `site/` (each host sees its own `DIR/private`).
fn dest(s: &Scratch) -> PathBuf {
    s.join("dest")
}

/// A coordinator with application `shop`, group `web` (tag role=web, AllAtOnce) and two
/// agents whose configs end with `extra_yaml`, both online.
fn fleet(s: &Scratch, extra_yaml: &str) -> (Coordinator, Vec<Agent>) {
    fleet_of(s, Coordinator::start(&s.join("coordinator")), extra_yaml)
}

/// [`fleet`] around a coordinator already started.
fn fleet_of(s: &Scratch, coordinator: Coordinator, extra_yaml: &str) -> (Coordinator, Vec<Agent>) {
    let token = coordinator.shop_web(&["--config", "AllAtOnce"]);
    let dest = dest(s);
    let options = AgentOptions {
        extra_yaml,
        private_dir: Some(&dest),
        ..AgentOptions::default()
    };
    let agents = HOSTS
        .iter()
        .map(|name| Agent::start_with(s, name, &coordinator, &token, "role: web", options))
        .collect();
    wait_for("both hosts online", Duration::from_secs(30), || {
        let out = coordinator.hoist(&["hosts", "list", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        HOSTS.iter().all(|h| text.contains(h))
    });
    (coordinator, agents)
}

/// A bundle installing `site/` (whose index.html holds `text`) into [`dest`], with an
/// AfterInstall hook that copies the installed index.html to `$OUT/seen`.
fn bundle_files(s: &Scratch, text: &str) -> Vec<(String, String)> {
    let dest = dest(s).display().to_string();
    vec![
        (
            "appspec.yml".into(),
            format!(
                "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {dest}\nhooks:\n  AfterInstall:\n    - location: scripts/seen.sh\n"
            ),
        ),
        ("site/index.html".into(), format!("{text}\n")),
        ("site/conf/app.conf".into(), "port = 8080\n".into()),
        (
            "scripts/seen.sh".into(),
            format!("#!/bin/sh\ncp {dest}/index.html \"$OUT/seen\"\n"),
        ),
    ]
}

fn write_files(dir: &Path, files: &[(String, String)]) {
    for (path, text) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write");
        let mode = if path.ends_with(".sh") { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

/// A bundle directory at `s/name`.
fn bundle_dir(s: &Scratch, name: &str, text: &str) -> PathBuf {
    let dir = s.join(name);
    write_files(&dir, &bundle_files(s, text));
    dir
}

/// `hoist deploy create --wait` of `source` to group web; returns the output and the id.
fn deploy(c: &Coordinator, source: &[&str]) -> (Output, String) {
    let mut args = vec!["deploy", "create", "--app", "shop", "--group", "web"];
    args.extend_from_slice(source);
    args.push("--wait");
    let out = c.hoist(&args);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "deploy create printed no id");
    (out, id)
}

fn status_text(c: &Coordinator, id: &str) -> String {
    let out = c.hoist(&["deploy", "status", id]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every host installed the bundle whose index.html holds `text` into its own tree, and its
/// hook saw it.
fn assert_installed(hosts: &[Agent], text: &str) {
    for h in hosts {
        let shared = h.dir.parent().expect("scratch").join("dest");
        assert!(
            walk(&shared).is_empty(),
            "installed outside the host's own tree"
        );
        let own = h.dir.join("private");
        assert_eq!(
            fs::read_to_string(own.join("index.html")).ok().as_deref(),
            Some(format!("{text}\n").as_str()),
            "index.html on {}",
            h.dir.display()
        );
        assert_eq!(
            fs::read_to_string(own.join("conf/app.conf")).expect("app.conf"),
            "port = 8080\n"
        );
        assert_eq!(
            fs::read_to_string(h.dir.join("out/seen")).expect("the hook ran"),
            format!("{text}\n")
        );
    }
}

/// No host installed anything nor ran a hook.
fn assert_nothing_installed(s: &Scratch, hosts: &[Agent]) {
    for h in hosts {
        let installed = walk(&h.dir.join("private"));
        assert!(installed.is_empty(), "installed: {installed:?}");
        assert!(!h.dir.join("out/seen").exists(), "a hook ran");
    }
    assert!(
        walk(&dest(s)).is_empty(),
        "the shared mount point stays empty"
    );
}

fn aws_env(endpoint: &str, key: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ENDPOINT_URL_S3", String::new()),
        ("AWS_REGION", S3_REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", key.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_SESSION_TOKEN", String::new()),
    ]
}

/// `hoist push DIR --app shop --s3 URL --json` against the S3 endpoint in `env`.
fn push_s3(
    c: &Coordinator,
    dir: &Path,
    s3_url: &str,
    env: &[(&'static str, String)],
) -> serde_json::Value {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = c.hoist_env(
        &[
            "push",
            dir.to_str().expect("utf-8"),
            "--app",
            "shop",
            "--s3",
            s3_url,
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "hoist push --s3 failed");
    serde_json::from_slice(&out.stdout).expect("push --json")
}

fn s3_yaml(endpoint: &str, key: &str, secret: &str) -> String {
    format!(
        "s3:\n  endpoint: {endpoint}\n  region: {S3_REGION}\n  path_style: true\n  access_key_id: {key}\n  secret_access_key: {secret}\n"
    )
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn s3_revision_signed_with_sigv4_reaches_every_tagged_host() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let s3_root = s.join("s3");
    fs::create_dir_all(s3_root.join("bundles")).expect("bucket");
    let endpoint = format!("http://{}", rt.block_on(start_s3s(&s3_root, false)));
    let (c, hosts) = fleet(&s, &s3_yaml(&endpoint, S3_ACCESS_KEY, S3_SECRET_KEY));

    let dir = bundle_dir(&s, "bundle", "from s3");
    let env = aws_env(&endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
    let pushed = push_s3(&c, &dir, "s3://bundles/releases/app.tgz", &env);
    assert_eq!(pushed["revision"]["kind"], "s3", "{pushed}");
    let stored = fs::read(s3_root.join("bundles/releases/app.tgz")).expect("object in s3s-fs");
    assert_eq!(pushed["revision"]["sha256"], sha256_hex(&stored).as_str());
    let revision = pushed["id"].as_str().expect("revision id");

    let (out, id) = deploy(&c, &["--revision", revision]);
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "from s3");
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_bundle_pushed_to_a_coordinator_storing_bundles_in_s3_reaches_every_tagged_host() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let s3_root = s.join("s3");
    fs::create_dir_all(s3_root.join("bundles")).expect("bucket");
    let endpoint = format!("http://{}", rt.block_on(start_s3s(&s3_root, false)));
    let env = aws_env(&endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let coordinator = Coordinator::launch(
        &s.join("coordinator"),
        Launch {
            extra: &["--bundle-store", "s3://bundles/store"],
            env: &env,
            ..Launch::default()
        },
    );
    // The agents have no S3 settings: the coordinator streams the bundle through.
    let (c, hosts) = fleet_of(&s, coordinator, "");

    let dir = bundle_dir(&s, "bundle", "through the coordinator from s3");
    let out = c.hoist(&[
        "push",
        dir.to_str().expect("utf-8"),
        "--app",
        "shop",
        "--json",
    ]);
    assert!(out.status.success(), "hoist push failed");
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("push --json");
    assert_eq!(pushed["revision"]["kind"], "coordinator", "{pushed}");
    let sha = pushed["revision"]["sha256"].as_str().expect("sha256");
    let stored = fs::read(s3_root.join(format!("bundles/store/{}/{sha}", &sha[..2])))
        .expect("the bundle is an object in s3s-fs");
    assert_eq!(sha256_hex(&stored), sha);
    assert!(
        walk(&c.data_dir)
            .iter()
            .all(|p| !p.to_string_lossy().contains(sha)),
        "nothing named after the bundle in the data directory"
    );

    let (out, id) = deploy(&c, &["--revision", pushed["id"].as_str().expect("id")]);
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "through the coordinator from s3");
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn presigned_url_revision_reaches_every_tagged_host() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let s3_root = s.join("s3");
    fs::create_dir_all(s3_root.join("bundles")).expect("bucket");
    let endpoint = format!("http://{}", rt.block_on(start_s3s(&s3_root, false)));
    // No S3 credentials on the hosts: the URL's signature is the only authorization.
    let (c, hosts) = fleet(&s, "");

    let object = s3_root.join("bundles/app.tar.gz");
    write_tar(&bundle_dir(&s, "bundle", "from a url"), &object, true).expect("tar.gz");
    let sha = sha256_hex(&fs::read(&object).expect("read"));
    let url = presigned_get(&endpoint, "bundles", "app.tar.gz", Duration::from_secs(600));
    assert!(url.contains("X-Amz-Signature="), "{url}");

    let (out, id) = deploy(&c, &["--url", &url, "--sha256", &sha]);
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "from a url");
}

#[test]
#[ignore = "needs root (a mount namespace per agent) and moto_server (HOIST_TEST_MOTO)"]
fn s3_object_version_from_moto_installs_the_older_version() {
    need_root("each agent runs in its own mount namespace");
    let moto_server = need_moto();
    let s = Scratch::new();
    let rt = runtime();
    let moto = rt.block_on(Moto::start(&moto_server));
    rt.block_on(moto.versioned_bucket("vers"));
    let (c, hosts) = fleet(&s, &s3_yaml(&moto.endpoint, "testing", "testing"));

    let env = aws_env(&moto.endpoint, "testing", "testing");
    let pushed: Vec<serde_json::Value> = ["version 1", "version 2"]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let dir = bundle_dir(&s, &format!("bundle-{i}"), text);
            push_s3(&c, &dir, "s3://vers/app.tgz", &env)
        })
        .collect();
    let field = |i: usize, name: &str| {
        pushed[i]["revision"][name]
            .as_str()
            .unwrap_or_else(|| panic!("push {i} has no {name}: {}", pushed[i]))
            .to_string()
    };
    let (v1, v2) = (field(0, "version_id"), field(1, "version_id"));
    assert_ne!(v1, v2);

    // The older version, by id and ETag, while a newer one is the object's latest.
    let (out, id) = deploy(
        &c,
        &[
            "--s3",
            "s3://vers/app.tgz",
            "--version-id",
            &v1,
            "--etag",
            &field(0, "etag"),
            "--sha256",
            &field(0, "sha256"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "version 1");
}

fn as_strs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect()
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn git_commits_over_smart_http_and_git_daemon_reach_every_tagged_host() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let git_root = s.join("git");
    fs::create_dir_all(&git_root).expect("mkdir");
    let first = bundle_files(&s, "git commit 1");
    let second = bundle_files(&s, "git commit 2");
    let (first, second) = (as_strs(&first), as_strs(&second));
    let commits = bare_repo(&git_root, "app.git", &[&first, &second]);
    let server = rt.block_on(start_git_http(&git_root, true));
    let (c, hosts) = fleet(
        &s,
        &format!(
            "git:\n  username: {GIT_HTTP_USER}\n  password: {GIT_HTTP_PASSWORD}\n  hosts: [127.0.0.1]\n"
        ),
    );

    // The first commit, though the branch has moved on.
    let (out, id) = deploy(
        &c,
        &["--git", &server.url("/app.git"), "--commit", &commits[0]],
    );
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "git commit 1");
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.header("authorization").is_some()),
        "the hosts fetched over smart HTTP with credentials"
    );

    // The next commit over git://: it replaces the first on every host.
    let daemon = rt.block_on(GitDaemon::start(&git_root));
    let (out, id) = deploy(
        &c,
        &["--git", &daemon.url("app.git"), "--commit", &commits[1]],
    );
    assert_eq!(out.status.code(), Some(0), "{}", status_text(&c, &id));
    assert_installed(&hosts, "git commit 2");
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn a_wrong_sha256_fails_the_deployment_and_installs_nothing() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let s3_root = s.join("s3");
    fs::create_dir_all(s3_root.join("bundles")).expect("bucket");
    let endpoint = format!("http://{}", rt.block_on(start_s3s(&s3_root, false)));
    let (c, hosts) = fleet(&s, "");

    let object = s3_root.join("bundles/app.tar.gz");
    write_tar(&bundle_dir(&s, "bundle", "never installed"), &object, true).expect("tar.gz");
    let actual = sha256_hex(&fs::read(&object).expect("read"));
    let wrong = sha256_hex(b"some other bundle");
    let url = presigned_get(&endpoint, "bundles", "app.tar.gz", Duration::from_secs(600));

    let (out, id) = deploy(&c, &["--url", &url, "--sha256", &wrong]);
    assert_eq!(out.status.code(), Some(1), "a failed deployment exits 1");
    let text = status_text(&c, &id);
    let expected = format!("bundle checksum mismatch: expected {wrong}, got {actual}");
    for host in HOSTS {
        assert!(
            text.lines()
                .any(|l| l.contains(host) && l.contains("failed")),
            "{host} is not failed:\n{text}"
        );
    }
    assert_eq!(
        text.matches(&expected).count(),
        HOSTS.len(),
        "each host names both sums:\n{text}"
    );
    assert!(text.contains("DownloadBundle"), "{text}");
    assert_nothing_installed(&s, &hosts);
    // The presigned URL's signature is a credential: it is in no report, log tail or status.
    let signature = url.split("X-Amz-Signature=").nth(1).expect("signed");
    assert!(!text.contains(signature), "{text}");
    for h in &hosts {
        let status = h.status().to_string();
        assert!(!status.contains(signature), "{status}");
        assert!(status.contains("bundle checksum mismatch"), "{status}");
    }
}

/// One raw tar entry: a name (and link target) written byte for byte, unchecked, as a hostile
/// archive would carry them.
enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn raw_tar_gz(entries: &[Raw<'_>]) -> Vec<u8> {
    use std::io::Write;
    let mut tar = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_old();
        let (name, data): (&str, &[u8]) = match entry {
            Raw::File(name, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                (name, data)
            }
            Raw::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                (name, b"")
            }
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Stores `bytes` in the coordinator's bundle store and registers them as a revision of
/// application shop; returns the revision id.
fn register_raw_bundle(rt: &tokio::runtime::Runtime, c: &Coordinator, bytes: Vec<u8>) -> String {
    let sha = sha256_hex(&bytes);
    let size = bytes.len();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let stored: serde_json::Value = http
            .put(format!("{}/v1/bundles", c.url))
            .bearer_auth(OPERATOR_TOKEN)
            .body(bytes)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("upload the bundle")
            .json()
            .await
            .expect("bundle info");
        assert_eq!(stored["sha256"], sha.as_str());
        let info: serde_json::Value = http
            .post(format!("{}/v1/applications/shop/revisions", c.url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&serde_json::json!({
                "revision": {"kind": "coordinator", "sha256": sha, "size": size}
            }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("register the revision")
            .json()
            .await
            .expect("revision info");
        info["id"].as_str().expect("revision id").to_string()
    })
}

#[test]
#[ignore = "needs root: each agent runs in its own mount namespace"]
fn hostile_bundles_from_the_coordinator_are_refused_naming_the_entry() {
    need_root("each agent runs in its own mount namespace");
    let s = Scratch::new();
    let rt = runtime();
    let (c, hosts) = fleet(&s, "");
    let files = bundle_files(&s, "never installed");
    let file = |path: &str| -> Vec<u8> {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.as_bytes().to_vec())
            .expect("bundle file")
    };
    let (appspec, index) = (file("appspec.yml"), file("site/index.html"));
    // Enough `..` to reach / from any depth, then a name no one else uses.
    let marker = format!("hoist-escaped-{}.txt", std::process::id());
    let climb = format!("{}tmp/{marker}", "../".repeat(16));
    let outside = s.join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    let outside_target = outside.display().to_string();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "path traversal",
            raw_tar_gz(&[
                Raw::File("appspec.yml", &appspec),
                Raw::File("site/index.html", &index),
                Raw::File(&climb, b"escaped\n"),
            ]),
            &climb,
        ),
        (
            "symlink escape",
            raw_tar_gz(&[
                Raw::File("appspec.yml", &appspec),
                Raw::Symlink("site", &outside_target),
                Raw::File("site/index.html", &index),
            ]),
            // The link itself is a leaf; the entry written through it is refused.
            "site/index.html",
        ),
    ];
    for (what, bytes, entry) in &cases {
        let revision = register_raw_bundle(&rt, &c, bytes.clone());
        let (out, id) = deploy(&c, &["--revision", &revision]);
        assert_eq!(out.status.code(), Some(1), "{what}: a refused bundle fails");
        let text = status_text(&c, &id);
        let named = format!("refusing archive entry {entry:?}");
        assert_eq!(
            text.matches(&named).count(),
            HOSTS.len(),
            "{what}: each host names the entry:\n{text}"
        );
        assert_nothing_installed(&s, &hosts);
        assert!(walk(&outside).is_empty(), "{what}: wrote through the link");
        let escaped: Vec<_> = walk(s.path())
            .into_iter()
            .filter(|p| p.ends_with(&marker))
            .collect();
        assert!(escaped.is_empty(), "{what}: {escaped:?}");
        assert!(!Path::new("/tmp").join(&marker).exists(), "{what}");
    }
}
