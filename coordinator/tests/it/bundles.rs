//! The bundle store over HTTP: streamed upload, content addressing, Range downloads.

use sha2::Digest;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn upload_then_download_whole_and_by_range() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    let http = reqwest::Client::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let resp = http
        .put(format!("{}/v1/bundles", server.url))
        .bearer_auth(TOKEN)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let info: hoist_protocol::operator::BundleInfo = resp.json().await.unwrap();
    assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(info.size, data.len() as u64);
    let stored = server
        .data_dir
        .join("bundles")
        .join(&info.sha256[..2])
        .join(&info.sha256);
    assert_eq!(std::fs::read(&stored).unwrap(), data);

    let url = format!("{}/v1/bundles/{}", server.url, info.sha256);
    let get = |range: Option<&str>| {
        let mut r = http.get(&url).bearer_auth(TOKEN);
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.send()
    };
    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap(), data);

    let part = get(Some("bytes=1000-1999")).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(part.bytes().await.unwrap(), data[1000..2000]);

    let tail = get(Some("bytes=299990-")).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), data[299_990..]);

    let beyond = get(Some("bytes=300000-")).await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */300000");

    // Hosts read bundles with their secret; nobody else does.
    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    let host = SimHost::register(&server.url, &reg, "h", tags(&[])).await;
    let resp = host
        .req(
            reqwest::Method::GET,
            &format!("/v1/bundles/{}", info.sha256),
        )
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), data[..10]);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let missing = format!("{}/v1/bundles/{}", server.url, "0".repeat(64));
    assert_eq!(
        http.get(&missing)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let bad = format!("{}/v1/bundles/..%2F..%2Fhoist.db", server.url);
    assert_eq!(
        http.get(&bad)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn push_refuses_a_directory_without_an_appspec() {
    let tmp = Scratch::new();
    let server = Server::start(&tmp.path().join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = server
        .hoist(&["push", empty.to_str().unwrap(), "--app", "shop"])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no appspec.yml"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}
