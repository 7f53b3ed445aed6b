//! The server process itself: generated operator token, config file, TLS, version, log.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_first_start_writes_one_and_later_starts_reuse_it() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let mut server = Server::start_with(&data, &[], None);
    let path = data.join("operator-token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(!token.is_empty());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(server.log().contains("operator-token"), "{}", server.log());
    hoist_with(&server.url, Some(&token), &["app", "create", "shop"])
        .await
        .ok();
    server.stop().await;
    drop(server);
    let server = Server::start_with(&data, &[], None);
    let out = hoist_with(&server.url, Some(&token), &["app", "list"]).await;
    assert!(
        out.ok().contains("shop"),
        "data and token survive a restart"
    );
}

/// Regression: the server's log was ANSI-coloured even into a pipe or a file.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_plain_text_when_stderr_is_not_a_terminal() {
    let tmp = Scratch::new();
    let server = Server::start_with(&tmp.path().join("data"), &[], None);
    let log = server.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_naming_it() {
    let tmp = Scratch::new();
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(&cfg, "listen: 127.0.0.1:0\ndata_dri: /tmp/x\n").unwrap();
    let out = Command::new(HOIST)
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad config is exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data_dri"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_sets_the_data_dir_and_token() {
    let tmp = Scratch::new();
    let data = tmp.path().join("from-config");
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\noperator_token: from-file\n",
            data.display()
        ),
    )
    .unwrap();
    // --data-dir on the command line wins; the helper passes one, so point it at the same.
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()], None);
    hoist_with(&server.url, Some("from-file"), &["app", "create", "x"])
        .await
        .ok();
    assert!(data.join("hoist.db").is_file());
    assert!(!data.join("operator-token").exists());
}

#[test]
fn version_is_printed() {
    let out = Command::new(HOIST).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hoist "));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the openssl command"]
async fn tls_serves_https_with_the_given_certificate() {
    let tmp = Scratch::new();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let ca = make_certificate(tmp.path(), &cert, &key)
        .unwrap_or_else(|e| panic!("openssl makes a test certificate: {e}"));
    let server = Server::start_with(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Some(TOKEN),
    );
    assert!(server.url.starts_with("https://"));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/v1/applications", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP to the TLS port gets no API answer.
    let plain = server.url.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/v1/applications"))
            .await
            .is_err()
            || !reqwest::get(format!("{plain}/v1/applications"))
                .await
                .unwrap()
                .status()
                .is_success()
    );
}

/// A test CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI;
/// the error says which openssl step failed and how.
fn make_certificate(
    dir: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let (ca, ca_key, csr, ext) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("leaf.csr"),
        dir.join("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<std::ffi::OsString>> = vec![
        ["req", "-x509", "-days", "2", "-subj", "/CN=hoist-test-ca"]
            .iter()
            .chain(ec.iter())
            .map(Into::into)
            .chain([
                "-keyout".into(),
                ca_key.clone().into(),
                "-out".into(),
                ca.clone().into(),
            ])
            .collect(),
        ["req", "-subj", "/CN=localhost"]
            .iter()
            .chain(ec.iter())
            .map(Into::into)
            .chain([
                "-keyout".into(),
                key.to_owned().into(),
                "-out".into(),
                csr.clone().into(),
            ])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial"]
            .iter()
            .map(Into::into)
            .chain([
                "-in".into(),
                csr.into(),
                "-CA".into(),
                ca.clone().into(),
                "-CAkey".into(),
                ca_key.into(),
                "-extfile".into(),
                ext.into(),
                "-out".into(),
                cert.to_owned().into(),
            ])
            .collect(),
    ];
    for args in steps {
        match Command::new("openssl").args(&args).output() {
            Ok(o) if o.status.success() => {}
            other => return Err(format!("openssl {args:?}: {other:?}")),
        }
    }
    Ok(ca)
}

#[test]
fn migrate_brings_a_new_database_up_to_date_and_refuses_a_newer_one() {
    let tmp = Scratch::new();
    let data = tmp.path().join("data");
    let out = Command::new(HOIST)
        .args(["server", "migrate", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = data.join("hoist.db");
    let version = hoist_coordinator::store::sqlite::SCHEMA_VERSION;
    assert_eq!(
        stdout.trim(),
        format!("database {} is at schema version {version}", db.display())
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, version);

    // A database a newer coordinator migrated is refused and left as it was.
    conn.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [version + 1],
    )
    .unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    let out = Command::new(HOIST)
        .args(["server", "migrate", "--data-dir"])
        .arg(&data)
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
    assert_eq!(std::fs::read(&db).unwrap(), before);
}
