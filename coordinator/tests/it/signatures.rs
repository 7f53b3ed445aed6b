//! Signed revisions through the real CLI and server: `hoist key generate`, `push
//! --sign-key`, `hoist sign` and `deploy create --signature`. The coordinator keeps the
//! signed manifest with the revision and hands it out with every command, and refuses one
//! that names another application or bundle; it verifies no signature (hosts do).

use hoist_protocol::signature::{Manifest, SignedManifest};

use crate::support::*;

/// `hoist key generate --out DIR`: the key id (its stdout).
async fn generate(server: &Server, dir: &std::path::Path) -> String {
    server
        .hoist(&["key", "generate", "--out", dir.to_str().unwrap()])
        .await
        .ok()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn key_generate_writes_a_private_secret_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let keys = tmp.path().join("keys");
    let id = generate(&server, &keys).await;
    assert_eq!(id.len(), 16, "{id}");
    let mode = |name: &str| {
        std::fs::metadata(keys.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("hoist.key"), 0o600);
    assert_eq!(mode("hoist.pub"), 0o644);
    let public = std::fs::read_to_string(keys.join("hoist.pub")).unwrap();
    assert!(
        public.starts_with("untrusted comment: minisign public key"),
        "{public}"
    );
    assert!(public.contains(&id));
    let before = std::fs::read(keys.join("hoist.key")).unwrap();
    let again = server
        .hoist(&["key", "generate", "--out", keys.to_str().unwrap()])
        .await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(keys.join("hoist.key")).unwrap(), before);

    // With a passphrase, signing needs it.
    let locked = tmp.path().join("locked");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    server
        .hoist(&[
            "key",
            "generate",
            "--out",
            locked.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
        .await
        .ok();
    let key = locked.join("hoist.key");
    let out_file = tmp.path().join("sig.json");
    let sign = |extra: Vec<String>| {
        let mut args: Vec<String> = [
            "sign",
            "--app",
            "shop",
            "--sha256",
            &"ab".repeat(32),
            "--key",
            key.to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        args
    };
    let args = sign(Vec::new());
    let refused = server
        .hoist(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--passphrase-file"),
        "{}",
        refused.stderr
    );
    let args = sign(vec![
        "--passphrase-file".into(),
        pass.to_str().unwrap().into(),
    ]);
    server
        .hoist(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .ok();
    let signed =
        SignedManifest::from_file_text(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let public = std::fs::read_to_string(locked.join("hoist.pub")).unwrap();
    assert_eq!(
        signed.key_id(),
        hoist_protocol::signature::public_key_id(&public)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_registers_the_manifest_and_commands_carry_it() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let keys = tmp.path().join("keys");
    let id = generate(&server, &keys).await;
    let dir = bundle_dir(tmp.path(), "v1");
    let key = keys.join("hoist.key");
    let out = server
        .hoist(&[
            "push",
            dir.to_str().unwrap(),
            "--app",
            "shop",
            "--sign-key",
            key.to_str().unwrap(),
            "--expires",
            "30d",
            "--json",
        ])
        .await;
    out.ok();
    assert!(
        out.stderr.contains(&format!("signed by key {id}")),
        "{}",
        out.stderr
    );
    let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let signed: SignedManifest = serde_json::from_value(info["signature"].clone()).unwrap();
    let manifest = Manifest::parse(&signed.manifest).unwrap();
    assert_eq!(manifest.application, "shop");
    assert_eq!(
        manifest.sha256.as_deref(),
        info["revision"]["sha256"].as_str()
    );
    assert!(manifest.expires_at.unwrap() > manifest.signed_at + 29 * 86_400);
    assert_eq!(signed.key_id().as_deref(), Some(id.as_str()));

    let revision = info["id"].as_str().unwrap();
    let d = server.deploy("shop", "web", revision).await;
    let status = server.hoist(&["deploy", "status", &d]).await;
    assert!(
        status.ok().contains(&format!("signature:    by key {id}")),
        "{}",
        status.stdout
    );
    let command = host.poll(5).await.expect("a command");
    assert_eq!(command.signature.as_ref(), Some(&signed));
    host.run(&command, true).await;

    // An unsigned push stays unsigned on the wire (the field is left out).
    let plain = server
        .push(bundle_dir(tmp.path(), "v2").to_str().unwrap(), "shop")
        .await;
    let d = server.deploy("shop", "web", &plain).await;
    server.wait_state(&d, "in_progress").await;
    let raw = host.poll_raw(5).await.text().await.unwrap();
    assert!(
        raw.contains("command_id") && !raw.contains("signature"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_create_with_a_signature_checks_it_names_the_revision_and_application() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    server.hoist(&["app", "create", "billing"]).await.ok();
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let keys = tmp.path().join("keys");
    generate(&server, &keys).await;
    let key = keys.join("hoist.key");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let sign = |app: &str, what: &[&str], name: &str| {
        let out = tmp.path().join(name);
        let mut args = vec!["sign", "--app", app, "--key", key.to_str().unwrap()];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        (owned, out)
    };
    let run = |args: Vec<String>| {
        let server = &server;
        async move {
            server
                .hoist(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .await
        }
    };
    let (args, good) = sign(
        "shop",
        &[
            "--commit",
            commit,
            "--repository",
            "https://git.example/shop",
        ],
        "good.json",
    );
    run(args).await.ok();
    let (args, other_app) = sign("billing", &["--commit", commit], "other-app.json");
    run(args).await.ok();
    let other = "f".repeat(40);
    let (args, other_commit) = sign("shop", &["--commit", &other], "other-commit.json");
    run(args).await.ok();
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "not json").unwrap();

    let create = |signature: &std::path::Path| {
        vec![
            "deploy".to_string(),
            "create".into(),
            "--app".into(),
            "shop".into(),
            "--group".into(),
            "web".into(),
            "--git".into(),
            "https://git.example/shop".into(),
            "--commit".into(),
            commit.into(),
            "--signature".into(),
            signature.to_str().unwrap().into(),
        ]
    };
    let refused = run(create(&other_app)).await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("application \"billing\"") && refused.stderr.contains("signature"),
        "{}",
        refused.stderr
    );
    let refused = run(create(&other_commit)).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(&format!("commit {other}")) && refused.stderr.contains(commit),
        "{}",
        refused.stderr
    );
    let refused = run(create(&junk)).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("junk.json") && refused.stderr.contains("not a signature file")
    );
    assert!(host.poll(0).await.is_none(), "nothing was handed out");

    run(create(&good)).await.ok();
    let command = host.poll(5).await.expect("a command");
    let expected =
        SignedManifest::from_file_text(&std::fs::read_to_string(&good).unwrap()).unwrap();
    assert_eq!(command.signature, Some(expected));

    // A signature over another bundle is refused for a registered revision too.
    host.run(&command, true).await;
    let revision = server
        .push(bundle_dir(tmp.path(), "v1").to_str().unwrap(), "shop")
        .await;
    let (args, wrong) = sign("shop", &["--sha256", &"0".repeat(64)], "wrong.json");
    run(args).await.ok();
    let refused = server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--revision",
            &revision,
            "--signature",
            wrong.to_str().unwrap(),
        ])
        .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("the manifest names bundle sha256 0000"),
        "{}",
        refused.stderr
    );
}

/// `hoist push DIR --app shop --sign-key KEY --json`: the revision id and its signature.
async fn push_signed(
    server: &Server,
    dir: &std::path::Path,
    key: &std::path::Path,
) -> (String, SignedManifest) {
    let out = server
        .hoist(&[
            "push",
            dir.to_str().unwrap(),
            "--app",
            "shop",
            "--sign-key",
            key.to_str().unwrap(),
            "--json",
        ])
        .await;
    let info: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    (
        info["id"].as_str().unwrap().to_owned(),
        serde_json::from_value(info["signature"].clone()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rollbacks_and_pipeline_stages_carry_the_revisions_signature() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(
        &server,
        "shop",
        "web",
        &["--tag", "role=web", "--auto-rollback"],
    )
    .await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let keys = tmp.path().join("keys");
    generate(&server, &keys).await;
    let key = keys.join("hoist.key");
    let (good, good_sig) = push_signed(&server, &bundle_dir(tmp.path(), "v1"), &key).await;
    server.deploy("shop", "web", &good).await;
    let cmd = host.poll(5).await.expect("a command");
    host.run(&cmd, true).await;

    // A failing deployment of another signed revision rolls back to the first, signed.
    let (bad, bad_sig) = push_signed(&server, &bundle_dir(tmp.path(), "v2"), &key).await;
    server.deploy("shop", "web", &bad).await;
    let cmd = host.poll(5).await.expect("a command");
    assert_eq!(cmd.signature.as_ref(), Some(&bad_sig));
    host.run(&cmd, false).await;
    let rollback = host.poll(5).await.expect("the rollback's command");
    assert_ne!(rollback.deployment_id, cmd.deployment_id);
    assert_eq!(rollback.signature.as_ref(), Some(&good_sig));
    host.run(&rollback, true).await;

    // A release through a pipeline: its stage's deployment carries the signature.
    let file = tmp.path().join("pipeline.yml");
    std::fs::write(
        &file,
        "pipeline: shop-release\napplication: shop\nstages:\n  - group: web\n",
    )
    .unwrap();
    server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();
    server
        .hoist(&[
            "release",
            "create",
            "--pipeline",
            "shop-release",
            "--revision",
            &bad,
        ])
        .await
        .ok();
    let stage = host.poll(5).await.expect("the stage's command");
    assert_eq!(stage.signature.as_ref(), Some(&bad_sig));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_to_s3_signs_the_sha256_of_the_uploaded_object() {
    use sha2::Digest;
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(s3_root.join("bundles")).unwrap();
    let endpoint = format!(
        "http://{}",
        hoist_tests::servers::start_s3s(&s3_root, false).await
    );
    let keys = tmp.path().join("keys");
    let id = generate(&server, &keys).await;
    let dir = bundle_dir(tmp.path(), "s3");
    let env = [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".to_owned()),
        (
            "AWS_ACCESS_KEY_ID",
            hoist_tests::servers::S3_ACCESS_KEY.to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            hoist_tests::servers::S3_SECRET_KEY.to_owned(),
        ),
    ];
    let key = keys.join("hoist.key");
    let out = hoist_env(
        &server.url,
        &[
            "push",
            dir.to_str().unwrap(),
            "--app",
            "shop",
            "--s3",
            "s3://bundles/shop/v1.tgz",
            "--sign-key",
            key.to_str().unwrap(),
            "--json",
        ],
        &env,
    )
    .await;
    let info: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert!(
        out.stderr.contains(&format!("signed by key {id}")),
        "{}",
        out.stderr
    );
    assert_eq!(info["revision"]["kind"], "s3");
    let signed: SignedManifest = serde_json::from_value(info["signature"].clone()).unwrap();
    let manifest = Manifest::parse(&signed.manifest).unwrap();
    let stored = std::fs::read(s3_root.join("bundles/shop/v1.tgz")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&stored));
    assert_eq!(manifest.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(info["revision"]["sha256"], sha.as_str());
}
