use super::*;
use crate::store::DeliveryRow;

fn settings() -> Settings {
    Settings {
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(60),
        give_up_after: Duration::from_secs(300),
        public_url: "https://hoist.example:8443/".into(),
    }
}

fn claimed(attempts: u32, at_ms: u64) -> Claimed {
    let w = WebhookRow {
        id: "wh-1".into(),
        application: "shop".into(),
        url: "http://127.0.0.1:9/".into(),
        events: vec![EventKind::Deployment],
        secret: hoist_protocol::secret::Secret::new("k"),
        created_ms: 0,
    };
    let mut event = test_event(&w);
    event.at_ms = at_ms;
    Claimed {
        delivery: DeliveryRow {
            seq: 7,
            webhook_id: w.id.clone(),
            event_id: event.id.clone(),
            subject: event.subject.clone(),
            status: DeliveryStatus::Pending,
            attempts,
            last_status: None,
            last_error: None,
            next_attempt_ms: 0,
            lease_until_ms: 0,
            created_ms: at_ms,
            ended_ms: None,
        },
        event,
        webhook: w,
    }
}

#[test]
fn the_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231, test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn the_backoff_doubles_from_the_initial_wait_up_to_the_cap() {
    let s = settings();
    let waits: Vec<u64> = (1..=5).map(|n| backoff(&s, n).as_secs()).collect();
    assert_eq!(waits, vec![10, 20, 40, 60, 60]);
}

#[test]
fn a_failed_try_is_retried_until_the_retry_would_pass_the_give_up_time() {
    let s = settings();
    let failed = Attempt {
        status: Some(503),
        error: Some("answered 503".into()),
    };
    let o = outcome(&s, &claimed(0, 1_000), &failed, 2_000);
    assert_eq!(o.status, DeliveryStatus::Pending);
    assert_eq!((o.attempts, o.next_attempt_ms), (1, 12_000));
    assert_eq!(o.last_error.as_deref(), Some("answered 503"));
    // The next wait (60 s) would end after 300 s from the event: given up now.
    let o = outcome(&s, &claimed(5, 1_000), &failed, 250_000);
    assert_eq!(o.status, DeliveryStatus::GivenUp);
    assert_eq!(o.ended_ms, Some(250_000));
    let ok = Attempt {
        status: Some(204),
        error: None,
    };
    let o = outcome(&s, &claimed(5, 1_000), &ok, 250_000);
    assert_eq!((o.status, o.attempts), (DeliveryStatus::Delivered, 6));
}

#[test]
fn the_body_links_the_subject_under_the_public_url() {
    let c = claimed(0, 1_700_000_000_123);
    let b = body(&c.event, &settings().public_url);
    assert_eq!(b.link, "https://hoist.example:8443/webhooks");
    assert_eq!(b.time, "2023-11-14T22:13:20.123Z");
    assert_eq!(b.kind, EventKind::Test);
}

#[test]
fn links_use_the_public_url_else_the_scheme_and_the_listen_address() {
    use crate::config::{FileConfig, Overrides, ServerConfig};
    let mut config = ServerConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
    let local: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
    assert_eq!(
        Settings::new(&config, local, false, "h").public_url,
        "http://127.0.0.1:8443"
    );
    assert_eq!(
        Settings::new(&config, any, true, "coord-1").public_url,
        "https://coord-1:8443"
    );
    config.public_url = Some("https://hoist.example.com".into());
    let s = Settings::new(&config, any, true, "coord-1");
    assert_eq!(s.public_url, "https://hoist.example.com");
    assert_eq!(s.initial_backoff, DEFAULT_INITIAL_BACKOFF);
}
