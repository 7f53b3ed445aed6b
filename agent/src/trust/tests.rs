use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist_protocol::signature::{Manifest, SignedManifest, Subject, MANIFEST_FORMAT};

use super::*;
use crate::config::TrustConfig;

/// A key pair whose public key is written to a file of the test's directory.
struct Key {
    pair: minisign::KeyPair,
    path: PathBuf,
    id: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let text = pair.pk.to_box().unwrap().into_string();
    let path = dir.join(format!("{name}.pub"));
    std::fs::write(&path, &text).unwrap();
    let id = hoist_protocol::signature::public_key_id(&text).unwrap();
    Key { pair, path, id }
}

fn trust(keys: &[&Key], require_signature: bool) -> Trust {
    Trust::load(Some(&TrustConfig {
        keys: keys.iter().map(|k| k.path.clone()).collect(),
        require_signature,
    }))
    .unwrap()
}

const SHA: &str = "5f2b8e0c3a1d4e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
const NOW: u64 = 1_800_000_000;

fn manifest(app: &str, sha256: &str, expires_at: Option<u64>) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.into(),
        application: app.into(),
        sha256: Some(sha256.into()),
        commit: None,
        repository: None,
        signed_at: NOW - 60,
        expires_at,
    }
}

fn sign(key: &Key, manifest: &Manifest) -> SignedManifest {
    let text = manifest.to_text();
    let sig = minisign::sign(
        Some(&key.pair.pk),
        &key.pair.sk,
        std::io::Cursor::new(text.as_bytes()),
        Some("hoist manifest"),
        None,
    )
    .unwrap();
    SignedManifest {
        manifest: text,
        signature: sig.into_string(),
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn bundle(sha256: &str) -> Subject<'_> {
    Subject::Bundle { sha256 }
}

fn refusal(r: Result<Verdict, TrustError>) -> Refusal {
    r.expect_err("refused").problem
}

#[test]
fn a_signature_by_a_trusted_key_over_a_matching_manifest_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "release");
    let signed = sign(&k, &manifest("shop", SHA, Some(NOW + 3600)));
    let verdict = check(
        &trust(&[&k], true),
        "shop",
        bundle(SHA),
        Some(&signed),
        now(),
    )
    .unwrap();
    assert!(matches!(verdict, Verdict::Signed { ref key_id, .. } if *key_id == k.id));
}

#[test]
fn every_refusal_names_its_problem_and_the_trusted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (k, other) = (key(dir.path(), "release"), key(dir.path(), "other"));
    let t = trust(&[&k], true);
    let good = sign(&k, &manifest("shop", SHA, None));
    let check_with = |signed: Option<&SignedManifest>, app: &str, subject: Subject<'_>| {
        check(&t, app, subject, signed, now())
    };

    let err = check_with(None, "shop", bundle(SHA)).unwrap_err();
    assert_eq!(err.problem, Refusal::NoSignature);
    let text = err.to_string();
    assert!(
        text.contains("no signature") && text.contains(&k.id),
        "{text}"
    );

    let by_other = sign(&other, &manifest("shop", SHA, None));
    assert_eq!(
        refusal(check_with(Some(&by_other), "shop", bundle(SHA))),
        Refusal::UnknownKey {
            key_id: other.id.clone()
        }
    );

    // The manifest changed after it was signed (another sha256 put in its place).
    let mut tampered = good.clone();
    tampered.manifest = manifest("shop", &"0".repeat(64), None).to_text();
    assert_eq!(
        refusal(check_with(Some(&tampered), "shop", bundle(&"0".repeat(64)))),
        Refusal::BadSignature {
            key_id: k.id.clone()
        }
    );

    let wrong_app = refusal(check_with(Some(&good), "billing", bundle(SHA)));
    assert!(matches!(wrong_app, Refusal::WrongApplication { .. }));
    assert!(wrong_app.to_string().contains("wrong application"));

    let wrong_bundle = refusal(check_with(Some(&good), "shop", bundle(&"1".repeat(64))));
    assert!(
        wrong_bundle.to_string().starts_with("wrong bundle")
            && wrong_bundle.to_string().contains(SHA),
        "{wrong_bundle}"
    );
    let commit = "a".repeat(40);
    assert!(matches!(
        refusal(check_with(
            Some(&good),
            "shop",
            Subject::Commit { commit: &commit }
        )),
        Refusal::WrongBundle { .. }
    ));

    let expired = sign(&k, &manifest("shop", SHA, Some(NOW - 1)));
    let e = refusal(check_with(Some(&expired), "shop", bundle(SHA)));
    assert!(matches!(e, Refusal::Expired { .. }));
    assert!(e.to_string().contains("expired"), "{e}");

    let garbage = SignedManifest {
        manifest: good.manifest.clone(),
        signature: "untrusted comment: x\nnot a signature\n".into(),
    };
    assert!(matches!(
        refusal(check_with(Some(&garbage), "shop", bundle(SHA))),
        Refusal::Malformed(_)
    ));

    let huge = SignedManifest {
        manifest: "x".repeat(5000),
        signature: good.signature.clone(),
    };
    assert!(matches!(
        refusal(check_with(Some(&huge), "shop", bundle(SHA))),
        Refusal::Malformed(_)
    ));

    // A trusted key's signature over something that is not a manifest.
    let mut not_manifest = sign(&k, &manifest("shop", SHA, None));
    not_manifest.manifest = "hello".into();
    let sig = minisign::sign(
        Some(&k.pair.pk),
        &k.pair.sk,
        std::io::Cursor::new(b"hello".as_slice()),
        None,
        None,
    )
    .unwrap();
    not_manifest.signature = sig.into_string();
    assert!(matches!(
        refusal(check_with(Some(&not_manifest), "shop", bundle(SHA))),
        Refusal::BadManifest(_)
    ));
}

#[test]
fn a_missing_signature_is_let_through_when_not_required_but_a_bad_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (k, other) = (key(dir.path(), "release"), key(dir.path(), "other"));
    let t = trust(&[&k], false);
    assert_eq!(
        check(&t, "shop", bundle(SHA), None, now()).unwrap(),
        Verdict::Unsigned
    );
    let by_other = sign(&other, &manifest("shop", SHA, None));
    assert!(matches!(
        refusal(check(&t, "shop", bundle(SHA), Some(&by_other), now())),
        Refusal::UnknownKey { .. }
    ));
}

#[test]
fn several_keys_are_trusted_at_once_for_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (key(dir.path(), "old"), key(dir.path(), "new"));
    let t = trust(&[&old, &new], true);
    for k in [&old, &new] {
        let signed = sign(k, &manifest("shop", SHA, None));
        let verdict = check(&t, "shop", bundle(SHA), Some(&signed), now()).unwrap();
        assert!(matches!(verdict, Verdict::Signed { ref key_id, .. } if *key_id == k.id));
    }
    assert_eq!(t.key_ids(), [old.id.clone(), new.id.clone()]);
}

#[test]
fn git_commits_are_matched_by_commit_id() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "release");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let m = Manifest {
        sha256: None,
        commit: Some(commit.into()),
        repository: Some("https://git.example/shop".into()),
        ..manifest("shop", SHA, None)
    };
    let signed = sign(&k, &m);
    let t = trust(&[&k], true);
    assert!(matches!(
        check(&t, "shop", Subject::Commit { commit }, Some(&signed), now()),
        Ok(Verdict::Signed { .. })
    ));
    let other = "f".repeat(40);
    assert!(matches!(
        refusal(check(
            &t,
            "shop",
            Subject::Commit { commit: &other },
            Some(&signed),
            now()
        )),
        Refusal::WrongBundle { .. }
    ));
}

#[test]
fn without_trusted_keys_signatures_are_not_looked_at() {
    let garbage = SignedManifest {
        manifest: "x".into(),
        signature: "y".into(),
    };
    let t = Trust::load(None).unwrap();
    assert_eq!(
        check(&t, "shop", bundle(SHA), Some(&garbage), now()).unwrap(),
        Verdict::NotConfigured
    );
    assert!(!t.is_configured());
}

#[test]
fn key_files_that_do_not_load_are_named_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "release");
    let load = |keys: Vec<PathBuf>| {
        Trust::load(Some(&TrustConfig {
            keys,
            require_signature: true,
        }))
        .unwrap_err()
        .to_string()
    };
    let missing = dir.path().join("missing.pub");
    let e = load(vec![missing.clone()]);
    assert!(
        e.contains("trust.keys[0]")
            && e.contains(&missing.display().to_string())
            && e.contains("cannot be read"),
        "{e}"
    );
    let junk = dir.path().join("junk.pub");
    std::fs::write(&junk, "untrusted comment: hi\nnot base64\n").unwrap();
    let e = load(vec![k.path.clone(), junk.clone()]);
    assert!(
        e.contains("trust.keys[1]")
            && e.contains("junk.pub")
            && e.contains("not a minisign public key"),
        "{e}"
    );
    // The secret key file is not a public key.
    let secret = dir.path().join("release.key");
    std::fs::write(&secret, k.pair.sk.to_box(None).unwrap().into_string()).unwrap();
    assert!(load(vec![secret]).contains("not a minisign public key"));
    let e = load(vec![k.path.clone(), k.path.clone()]);
    assert!(e.contains("already listed"), "{e}");
}
