//! Revisions named at `deploy create` are checked before anything is handed out.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_key_with_dot_dot_segments_is_refused_naming_the_key() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let sha = "a".repeat(64);
    for key in ["../../meta/x", "app/./x.tgz", "app//x.tgz", "app/x/.."] {
        let s3 = format!("s3://bkt/{key}");
        let out = server
            .hoist(&[
                "deploy", "create", "--app", "shop", "--group", "web", "--s3", &s3, "--sha256",
                &sha,
            ])
            .await;
        assert_eq!(out.code, 1, "{key}: {}", out.stdout);
        assert!(
            out.stderr.contains("revision.key") && out.stderr.contains(key),
            "{key}: {}",
            out.stderr
        );
    }
    assert!(host.poll(0).await.is_none(), "nothing was handed out");
    // A plain key is taken.
    server
        .hoist(&[
            "deploy",
            "create",
            "--app",
            "shop",
            "--group",
            "web",
            "--s3",
            "s3://bkt/app/v1.tgz",
            "--sha256",
            &sha,
        ])
        .await
        .ok();
}
