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
