//! `hoist push --s3` against the tests' in-process S3-compatible server
//! (`hoist_tests::servers::start_s3s`, s3s-fs) that checks SigV4 signatures for real.

use std::time::Duration;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::RevisionInfo;
use sha2::Digest;

use crate::support::*;

use hoist_tests::servers::{start_s3s, S3_ACCESS_KEY as AK, S3_SECRET_KEY as SK};

/// The tests' one in-process S3 server over `root`; returns the endpoint URL.
async fn start_s3(root: &std::path::Path) -> String {
    format!("http://{}", start_s3s(root, false).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn push_to_s3_uploads_signed_and_registers_an_s3_revision() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(s3_root.join("bundles")).unwrap();
    let endpoint = start_s3(&s3_root).await;
    let dir = bundle_dir(tmp.path(), "s3");
    let env = |secret: &'static str| {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", AK.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
        ]
    };
    let args = [
        "push",
        dir.to_str().unwrap(),
        "--app",
        "shop",
        "--s3",
        "s3://bundles/shop/v1.tgz",
    ];
    let out = hoist_env(&server.url, &args, &env(SK)).await;
    let id = out.ok().to_owned();
    assert!(id.starts_with("r-"), "{id}");

    let info: RevisionInfo = server
        .client()
        .get(format!("{}/v1/revisions/{id}", server.url))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let Revision::S3 {
        bucket,
        key,
        sha256,
        etag,
        ..
    } = info.revision
    else {
        panic!("{:?}", info.revision)
    };
    assert_eq!((bucket.as_str(), key.as_str()), ("bundles", "shop/v1.tgz"));
    assert!(etag.is_some());
    let stored = std::fs::read(s3_root.join("bundles/shop/v1.tgz")).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&stored)), sha256);

    // A wrong secret is refused by the S3 server, and nothing is registered.
    let args = [
        "push",
        dir.to_str().unwrap(),
        "--app",
        "shop",
        "--s3",
        "s3://bundles/shop/v2.tgz",
    ];
    let out = hoist_env(&server.url, &args, &env("wrong-secret")).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("S3 refused the upload"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// The AWS_* variables a server with `--bundle-store` reads, for s3s-fs at `endpoint`.
fn store_env<'a>(endpoint: &'a str, secret: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", AK),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ]
}

const OTHER_AWS: &[&str] = &["AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"];

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_store_in_s3_takes_pushes_and_serves_them_by_range() {
    let tmp = Scratch::new();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(s3_root.join("shared")).unwrap();
    let endpoint = start_s3(&s3_root).await;
    let server = Server::launch(
        &tmp.path().join("data"),
        Launch {
            extra: &["--bundle-store", "s3://shared/hoist/bundles"],
            env: &store_env(&endpoint, SK),
            env_remove: OTHER_AWS,
            ..Launch::default()
        },
    );
    assert!(
        server.log().contains("s3://shared/hoist/bundles"),
        "{}",
        server.log()
    );
    server.hoist(&["app", "create", "shop"]).await.ok();
    let dir = bundle_dir(tmp.path(), "in-s3");
    let out = server
        .hoist(&["push", dir.to_str().unwrap(), "--app", "shop", "--json"])
        .await;
    let info: RevisionInfo = serde_json::from_str(out.ok()).unwrap();
    let Revision::Coordinator { sha256, size } = info.revision else {
        panic!("{:?}", info.revision)
    };
    let object = s3_root.join(format!("shared/hoist/bundles/{}/{sha256}", &sha256[..2]));
    let stored = std::fs::read(&object).unwrap();
    assert_eq!(stored.len() as u64, size);
    assert_eq!(hex::encode(sha2::Sha256::digest(&stored)), sha256);
    assert!(
        !tmp.path()
            .join(format!("data/bundles/{}/{sha256}", &sha256[..2]))
            .exists(),
        "not kept in the data directory too"
    );

    // Streamed through from S3, whole and by range, to a host's or operator's GET.
    let get = |range: Option<&'static str>| {
        let mut req = server
            .client()
            .get(format!("{}/v1/bundles/{sha256}", server.url))
            .bearer_auth(TOKEN);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
    };
    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap(), stored);
    let part = get(Some("bytes=10-19")).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{size}").as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), stored[10..20]);
    let outside = get(Some("bytes=999999-")).await.unwrap();
    assert_eq!(outside.status(), 416);

    // Gone from the storage: no revision can name it any more, and it is not served.
    std::fs::remove_file(&object).unwrap();
    let create =
        format!(r#"{{"revision":{{"kind":"coordinator","sha256":"{sha256}","size":{size}}}}}"#);
    let resp = server
        .client()
        .post(format!("{}/v1/applications/shop/revisions", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(create)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("upload it first"));
    assert_eq!(get(None).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_store_that_refuses_the_credentials_stops_the_server_from_starting() {
    let tmp = Scratch::new();
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(s3_root.join("shared")).unwrap();
    let endpoint = start_s3(&s3_root).await;
    let start = |secret: &str, store: &str, env_remove: &[&str]| {
        let env = store_env(&endpoint, secret);
        let extra = ["--bundle-store", store];
        hoist_tests::coordinator::Server::try_launch(
            &tmp.path().join("data"),
            Launch {
                program: Some(std::path::Path::new(HOIST)),
                extra: &extra,
                env: &env,
                env_remove,
                ..Launch::default()
            },
        )
        .err()
        .map(|e| format!("{e:#}"))
    };
    let log = start("wrong-secret", "s3://shared/p", OTHER_AWS).expect("refused");
    assert!(
        log.contains("bundle store") && log.contains("s3://shared/p") && log.contains("403"),
        "{log}"
    );
    assert!(!log.contains("wrong-secret"), "{log}");
    let mut no_keys = OTHER_AWS.to_vec();
    no_keys.extend(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    let env_empty = start("", "s3://shared/p", &no_keys).expect("refused");
    assert!(
        env_empty.contains("--bundle-store needs AWS_ACCESS_KEY_ID"),
        "{env_empty}"
    );
    let bad = start(SK, "s3://shared/../x", OTHER_AWS).expect("refused");
    assert!(
        bad.contains("bundle_store") && bad.contains("s3://shared/../x"),
        "{bad}"
    );
    // The right secret starts.
    assert!(start(SK, "s3://shared/p", OTHER_AWS).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_unreachable_s3_names_it_without_the_presigned_url() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    let closed = hoist_tests::servers::free_port();
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}")),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", AK.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SK.to_owned()),
    ];
    let dir = bundle_dir(tmp.path(), "unreachable");
    let args = [
        "push",
        dir.to_str().unwrap(),
        "--app",
        "shop",
        "--s3",
        "s3://bundles/shop/v1.tgz",
    ];
    let out = hoist_env(&server.url, &args, &env).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("uploading to s3://bundles/shop/v1.tgz"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("X-Amz-Signature"), "{}", out.stderr);
}
